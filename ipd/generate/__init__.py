"""D4RL-protocol dataset generation: ``make_dataset("hopper-medium")`` writes ``hopper-medium.hdf5``.

Separate from the loaders in :mod:`ipd.data`, which never import it: :mod:`ipd.generate.fallback`
wires "generate when no dataset is found" above them (``data.generate``). Modules:

- :mod:`~ipd.generate.make`: :func:`make_dataset`, the levels and the file's attributes;
- :mod:`~ipd.generate.collect`: the collection protocol over batched envs;
- :mod:`~ipd.generate.locomotion`: many MuJoCo envs stepped together, exact against gymnasium's;
- :mod:`~ipd.generate.behaviour`: behaviour policies (shipped weights, random init, ipd checkpoints);
- :mod:`~ipd.generate.exact`: the CPU-independent arithmetic of the shipped policies;
- :mod:`~ipd.generate.assets`: the shipped weights and (packed) replay buffers, see assets/NOTICE.md.
"""

from ipd.generate.make import (
    D4RL_SIZE,
    GENERATOR_VERSION,
    GenerateError,
    generated_name,
    make_dataset,
)

__all__ = [
    "D4RL_SIZE",
    "GENERATOR_VERSION",
    "GenerateError",
    "generated_name",
    "make_dataset",
]
