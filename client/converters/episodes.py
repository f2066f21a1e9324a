"""Cutting per-step arrays into episodes: the one place converters learn where episodes start."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import numpy as np


def episode_slices(arrays: Mapping[str, np.ndarray]) -> Iterator[slice]:
    """The row range of each run of consecutive steps of one episode, in order.

    A whole-episode export gives one run per episode; a filtered or sampled one can leave gaps,
    and steps on either side of a gap are no transition of each other, so they become two runs.
    """
    ids = np.asarray(arrays["episode_id"])
    if ids.size == 0:
        return
    breaks = ids[1:] != ids[:-1]
    if "step" in arrays:
        steps = np.asarray(arrays["step"])
        breaks |= steps[1:] != steps[:-1] + 1
    starts = np.flatnonzero(breaks) + 1
    bounds = [0, *starts.tolist(), ids.size]
    for start, stop in itertools.pairwise(bounds):
        yield slice(start, stop)
