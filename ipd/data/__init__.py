"""Data layer: D4RL-layout loading and writing, transitions/trajectories, return-based episode
filtering, DT sequence sampling."""

from ipd.data.filtering import top_episode_rows, top_episodes
from ipd.data.hdf5 import read_hdf5, write_hdf5
from ipd.data.sequence import SequenceBatch, SequenceSampler
from ipd.data.sources import default_data_dir, download, find_dataset, load_dataset
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
    "read_hdf5",
    "returns_to_go",
    "top_episode_rows",
    "top_episodes",
    "write_hdf5",
]
