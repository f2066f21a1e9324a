"""Content hashes: the same values give the same hash however they are cut, nulls included."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from tuplehub.storage.content import ContentHasher


def digest(parts: list[dict[str, pa.Array]]) -> str:
    hasher = ContentHasher()
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest({"0": {"policy": "random"}})


COLUMNS = {
    "info.x": pa.array([1.0, None, 3.0, None, 5.0, 6.0, np.nan]),
    "info.n": pa.array([1, None, 3, 4, None, 6, 7], pa.int64()),
    "flag": pa.array([True, None, False, True, True, None, False]),
    "name": pa.array(["x", "y", None, "zz", "w", "v", ""], pa.large_string()),
    "next_observation": pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(14, dtype=np.float32)), 2, mask=pa.array([False, True, False, False, True, False, False])),
}


@pytest.mark.parametrize("cuts", [[3], [1, 5], [1, 2, 3, 4, 5, 6]])
def test_cuts_do_not_change_the_hash(cuts: list[int]) -> None:
    bounds = [0, *cuts, 7]
    parts = [{k: v.slice(a, b - a) for k, v in COLUMNS.items()} for a, b in itertools.pairwise(bounds)]
    assert digest(parts) == digest([COLUMNS])


def test_values_nulls_and_metadata_all_count() -> None:
    base = digest([COLUMNS])
    changed = {**COLUMNS, "info.n": pa.array([1, None, 3, 4, 0, 6, 7], pa.int64())}  # a null became 0
    assert digest([changed]) != base
    hasher = ContentHasher()
    hasher.update(COLUMNS)
    assert hasher.hexdigest({}) != base
