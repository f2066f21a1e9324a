"""Cutting per-step arrays into episodes: the one place converters learn where episodes start."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import numpy as np


def episode_slices(arrays: Mapping[str, np.ndarray]) -> Iterator[slice]:
    """The row range of each episode, in order; rows of one episode are contiguous in an export."""
    ids = np.asarray(arrays["episode_id"])
    if ids.size == 0:
        return
    starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    bounds = [0, *starts.tolist(), ids.size]
    for start, stop in itertools.pairwise(bounds):
        yield slice(start, stop)
