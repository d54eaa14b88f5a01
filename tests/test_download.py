"""The D4RL download path, against a local HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from ipd.data import DatasetError, download, load_dataset, write_hdf5

FILE = "hopper_medium-v2.hdf5"  # what the D4RL URL of hopper-medium ends with


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /ok/<file> (full body), /short/ (Content-Length > body, then close),
    /chunked-cut/ (chunked body cut mid-chunk), /html/ (200 with an HTML page), else 404."""

    body: bytes = b""
    requests: list[str] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.requests.append(self.path)
        route, _, name = self.path.strip("/").partition("/")
        if name != FILE:
            self.send_error(404, "File not found")
            return
        body = self.body
        if route == "ok":
            self._send(200, body, len(body))
        elif route == "short":
            self._send(200, body[: len(body) // 2], len(body))
        elif route == "html":
            page = b"<html><body>Service temporarily unavailable</body></html>"
            self._send(200, page, len(page))
        elif route == "chunked-cut":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(body):x}\r\n".encode() + half)  # announces more than it sends
            self.wfile.flush()
        else:
            self.send_error(404, "File not found")
            return
        self.close_connection = True

    def _send(self, code: int, payload: bytes, length: int) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server on an ephemeral port serving a small real hopper dataset."""
    from conftest import rollout_transitions

    t = rollout_transitions("Hopper-v4", 400, max_episode_steps=50, seed=3)
    path = write_hdf5(tmp_path_factory.mktemp("served") / FILE, t)
    handler = type("Handler", (_Handler,), {"body": path.read_bytes(), "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler, t
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """An empty data dir, and D4RL/IPD caches pointed at empty folders."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("IPD_DATA_DIR", str(tmp_path / "ipd"))
    return tmp_path / "data"


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_download_then_load(server, dirs):
    base, handler, expected = server
    handler.requests.clear()
    t = load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/ok")
    np.testing.assert_array_equal(t.observations, expected.observations)
    np.testing.assert_array_equal(t.terminals, expected.terminals)
    assert _listing(dirs) == ["hopper-medium.hdf5"]  # stored under the task name, no temp file
    assert handler.requests == [f"/ok/{FILE}"]
    # The second load is local: no new request.
    t2 = load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/ok")
    np.testing.assert_array_equal(t2.rewards, expected.rewards)
    assert len(handler.requests) == 1


@pytest.mark.parametrize("route", ["short", "chunked-cut"])
def test_interrupted_download_leaves_no_file(server, dirs, route):
    base, _, _ = server
    with pytest.raises(DatasetError) as info:
        load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/{route}")
    msg = str(info.value)
    assert "incomplete" in msg or "interrupted" in msg
    assert f"{base}/{route}/{FILE}" in msg
    assert str(dirs / "hopper-medium.hdf5") in msg  # where it looked
    assert _listing(dirs) == []  # neither the partial file nor a temp file


def test_download_of_a_non_hdf5_page_leaves_no_file(server, dirs):
    base, _, _ = server
    with pytest.raises(DatasetError, match="not a valid D4RL-layout file"):
        load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/html")
    assert _listing(dirs) == []
    # ... so a later call with a working source still downloads instead of tripping on a bad file.
    assert len(load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/ok")) == 400


def test_404_lists_where_it_looked(server, dirs):
    base, _, _ = server
    with pytest.raises(DatasetError) as info:
        load_dataset("hopper-medium", data_dir=dirs, url_base=f"{base}/missing")
    msg = str(info.value)
    assert "404" in msg
    assert str(dirs / "hopper-medium.hdf5") in msg
    assert str(dirs.parent / "d4rl" / FILE) in msg
    assert "Provide it" in msg
    assert _listing(dirs) == []


def test_unreachable_server_and_unwritable_dir_give_dataset_errors(server, dirs, tmp_path):
    base, _, _ = server
    # A port nobody listens on: the loopback connection is refused at once.
    with pytest.raises(DatasetError, match="failed"):
        download("http://127.0.0.1:9/x.hdf5", tmp_path / "x.hdf5", timeout=5, progress=False)
    with pytest.raises(DatasetError, match="failed"):
        download("not-a-url", tmp_path / "y.hdf5", timeout=5, progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DatasetError, match="Cannot write"):
        download(f"{base}/ok/{FILE}", blocker / "sub" / "z.hdf5", timeout=5, progress=False)
    assert not (tmp_path / "x.hdf5").exists() and not (tmp_path / "y.hdf5").exists()


def test_download_check_failure_removes_the_file(server, tmp_path):
    base, _, _ = server

    def reject(tmp: str) -> None:
        assert Path(tmp).stat().st_size > 0  # the check sees the complete body
        raise DatasetError("rejected by check")

    with pytest.raises(DatasetError, match="rejected by check"):
        download(f"{base}/ok/{FILE}", tmp_path / "dl" / "f.hdf5", timeout=5, progress=False, check=reject)
    assert _listing(tmp_path / "dl") == []
    path = download(f"{base}/ok/{FILE}", tmp_path / "dl" / "f.hdf5", timeout=5, progress=False)
    assert path.stat().st_size == len(server[1].body)
