"""Data layer: D4RL-layout and Minari loading, hdf5 writing, transitions/trajectories, return-based
episode filtering, DT sequence sampling."""

from ipd.data.filtering import top_episode_rows, top_episodes
from ipd.data.hdf5 import DatasetWarning, read_hdf5, write_hdf5
from ipd.data.sequence import SequenceBatch, SequenceSampler
from ipd.data.sources import (
    LoadedDataset,
    default_data_dir,
    download,
    find_dataset,
    load_dataset,
    load_minari,
    open_dataset,
    resolve_task,
)
from ipd.data.transitions import (
    DatasetError,
    Normalizer,
    Trajectories,
    Transitions,
    episode_bounds,
    returns_to_go,
)

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "LoadedDataset",
    "Normalizer",
    "SequenceBatch",
    "SequenceSampler",
    "Trajectories",
    "Transitions",
    "default_data_dir",
    "download",
    "episode_bounds",
    "find_dataset",
    "load_dataset",
    "load_minari",
    "open_dataset",
    "read_hdf5",
    "resolve_task",
    "returns_to_go",
    "top_episode_rows",
    "top_episodes",
    "write_hdf5",
]
