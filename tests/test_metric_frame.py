"""The frozen frame: how a benchmark's tuples become features that compare across its datasets."""

from __future__ import annotations

import numpy as np
import pytest

from tuplehub.storage.errors import InvalidRequest
from tuplehub.workers.metrics.frame import (
    MAX_ENTROPY_DIMS,
    MAX_GRID_DIMS,
    coverage_cells,
    entropy_points,
    features,
    freeze_frame,
    split_columns,
)


def test_columns_split_into_continuous_and_discrete() -> None:
    observation = np.arange(12, dtype=np.float32).reshape(4, 3)
    action = np.array([0, 1, 1, 0])
    continuous, discrete = split_columns(observation, action)
    assert continuous.shape == (4, 3)
    assert discrete.tolist() == [[0], [1], [1], [0]]


def test_finite_space_bounds_win_and_unbounded_dimensions_use_reference_quantiles() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, 2))
    frame = freeze_frame(x, source="ref@1", low=np.array([-3.0, -np.inf]), high=np.array([3.0, np.inf]))
    assert frame.components is None
    assert frame.coverage_dims == 2
    mean, scale = np.array(frame.mean), np.array(frame.scale)
    assert frame.coverage_low[0] == pytest.approx((-3 - mean[0]) / scale[0])
    assert frame.coverage_low[1] == pytest.approx(np.percentile((x[:, 1] - mean[1]) / scale[1], 0.1))


def test_many_dimensions_are_projected_and_the_frame_is_a_pure_function_of_the_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5_000, 4)) @ rng.normal(size=(4, 40))
    frame = freeze_frame(x, source="ref@1")
    assert frame.coverage_dims == MAX_GRID_DIMS
    assert frame.entropy_dims == MAX_ENTROPY_DIMS
    assert freeze_frame(x, source="elsewhere").frame_id == frame.frame_id  # the source is not part of the id
    z = features(frame, x)
    assert z.shape == (5_000, MAX_ENTROPY_DIMS)
    assert z[:, :4].var(axis=0).sum() == pytest.approx(40, rel=0.05)  # 4 factors hold all the variance
    cells, clipped = coverage_cells(frame, x, np.zeros((5_000, 0), dtype=np.int64), bins=10)
    assert cells.shape == (5_000, MAX_GRID_DIMS)
    assert 0 < clipped <= 6 * 0.002 + 0.001
    assert entropy_points(frame, x).shape == (5_000, MAX_ENTROPY_DIMS)
    with pytest.raises(InvalidRequest, match="40 continuous dimensions"):
        features(frame, x[:, :39])


def test_discrete_only_data_has_coverage_but_no_entropy() -> None:
    frame = freeze_frame(np.zeros((10, 0)), source="ref@1")
    cells, _ = coverage_cells(frame, np.zeros((3, 0)), np.array([[0, 1], [2, 1], [0, 1]]), bins=5)
    assert cells.tolist() == [[0, 1], [2, 1], [0, 1]]
    with pytest.raises(InvalidRequest, match="continuous"):
        entropy_points(frame, np.zeros((3, 0)))
