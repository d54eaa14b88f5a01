"""notebooks/quickstart.ipynb executes top to bottom at tiny size (IPD_NOTEBOOK_TINY=1), so it never rots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip(
    "ipykernel", reason="executing the notebook needs a Jupyter kernel: pip install ipykernel"
)

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    # The kernel inherits this environment: tiny budgets, outputs under tmp_path, no wandb.
    monkeypatch.setenv("IPD_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("IPD_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "tiny budgets" in text and "evaluated in Hopper-v4" in text
    assert "normalised" in text and "d4rl scores" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the augmentation statistics and the learning curves
    assert (tmp_path / "work" / "data" / "hopper-medium.hdf5").is_file()
