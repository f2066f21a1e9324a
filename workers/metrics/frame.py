"""The frozen frame: one way to turn a benchmark's tuples into features, so its datasets compare.

Binning each dataset on its own range, or standardising it by its own spread, removes exactly
the differences coverage and entropy should show (``shared/reference/metrics.md``). So a frame is
frozen once per benchmark, from the first version that needs it (or set by hand), and every later
dataset of the benchmark is binned and scaled alike.

Continuous columns are standardised; above :data:`MAX_GRID_DIMS` dimensions a grid has so many
cells that every row is its own, so they are projected on the principal axes of the reference
sample first. Integer columns (discrete observations, action ids) are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tuplehub.storage.errors import MetricUndefined
from tuplehub.storage.metrics import FRAME_LIMIT, MetricFrame
from tuplehub.workers.metrics.coverage import quantise

MAX_GRID_DIMS = 6
MAX_ENTROPY_DIMS = 16
# Coverage bounds from a reference sample: the 0.1 % and 99.9 % quantiles of each feature.
QUANTILES = (0.1, 99.9)
CHUNK_VALUES = 4_000_000
MAX_FROZEN_DIMS = 4_096  # the d x d covariance of wider data would not fit comfortably (128 MB here)
MAX_SPAN = 1_000.0  # standard deviations: wider space bounds are treated as none


def split_columns(observation: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(continuous (n, d), discrete int64 (n, q)) from the observation and action arrays.

    Continuous columns keep their float width (float32 stays float32: half the memory of a copy
    in float64); :func:`features` computes in float64 a chunk at a time.
    """
    n = len(observation)
    continuous: list[np.ndarray] = []
    discrete: list[np.ndarray] = []
    for values in (observation, action):
        flat = np.asarray(values).reshape(n, -1)
        (discrete if flat.dtype.kind in "iub" else continuous).append(flat)
    wide = np.result_type(np.float32, *continuous)
    return (np.concatenate(continuous, axis=1, dtype=wide) if continuous else np.zeros((n, 0), dtype=wide),
            np.concatenate(discrete, axis=1, dtype=np.int64) if discrete else np.zeros((n, 0), dtype=np.int64))


def freeze_frame(continuous: np.ndarray, *, source: str, low: np.ndarray | None = None,
                 high: np.ndarray | None = None) -> MetricFrame:
    """A frame fitted on a reference sample of continuous features (``low``/``high``: space bounds, may be inf)."""
    x = np.asarray(continuous)
    n, d = x.shape
    if d and n < 2:
        raise MetricUndefined("freezing the metric frame needs at least two rows", field="version")
    if d > MAX_FROZEN_DIMS:
        raise MetricUndefined(f"{d} continuous dimensions are more than a frame is fitted to ({MAX_FROZEN_DIMS}): "
                             "coverage and entropies need a smaller representation", field="version")
    # Moments a chunk at a time, in float64: a full float64 copy of a 200,000 x 113 sample is 180 MB.
    total, lowest, highest = np.zeros(d), np.full(d, np.inf), np.full(d, -np.inf)
    for chunk in _chunks(x):
        if not np.isfinite(chunk).all():
            raise MetricUndefined("observations or actions hold NaN or infinity: no frame can be fitted to them",
                                 field="version")
        total += chunk.sum(axis=0)
        lowest, highest = np.minimum(lowest, chunk.min(axis=0)), np.maximum(highest, chunk.max(axis=0))
    if d and max(np.abs(lowest).max(), np.abs(highest).max()) > FRAME_LIMIT:
        raise MetricUndefined(f"values beyond ±{FRAME_LIMIT:g} (placeholders for 'unknown', timestamps?) leave no "
                             "usable scale for a metric frame", field="version")
    mean = total / max(n, 1)
    covariance = np.zeros((d, d))  # of the centred data, a second pass: no cancellation
    for chunk in _chunks(x):
        centred = chunk - mean
        covariance += centred.T @ centred
    covariance /= max(n, 1)
    scale = np.sqrt(np.diag(covariance)).copy()
    scale[(lowest == highest) | (scale == 0)] = 1.0  # constant columns
    components = None
    if d > MAX_GRID_DIMS:
        correlation = covariance / np.outer(scale, scale)
        eigenvalues, eigenvectors = np.linalg.eigh(correlation)
        order = np.argsort(eigenvalues)[::-1][:MAX_ENTROPY_DIMS]
        axes = eigenvectors[:, order].T
        # An eigenvector's sign is arbitrary: fix it (largest entry positive) so refits agree.
        components = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    provisional = MetricFrame(source=source, mean=mean.tolist(), scale=scale.tolist(),
                              components=components.tolist() if components is not None else None,
                              coverage_dims=0, coverage_low=[], coverage_high=[], entropy_dims=0)
    z = features(provisional, x)
    coverage_dims = min(z.shape[1], MAX_GRID_DIMS)
    grid = z[:, :coverage_dims]
    lows, highs = (np.percentile(grid, QUANTILES, axis=0) if coverage_dims else (np.zeros(0), np.zeros(0)))
    if components is None and low is not None and high is not None:  # finite space bounds win where they exist
        space_low, space_high = (np.asarray(low, dtype=np.float64) - mean) / scale, \
            (np.asarray(high, dtype=np.float64) - mean) / scale
        # Bounds like float32's largest number are "unbounded" written finitely: binning on them
        # would put every row in one bin.
        finite = np.isfinite(space_low) & np.isfinite(space_high) & (space_high - space_low <= MAX_SPAN)
        lows, highs = np.where(finite, space_low, lows), np.where(finite, space_high, highs)
    highs = np.where(highs > lows, highs, lows + 1.0)
    return MetricFrame(source=source, mean=mean.tolist(), scale=scale.tolist(),
                       components=components.tolist() if components is not None else None,
                       coverage_dims=coverage_dims, coverage_low=lows.tolist(), coverage_high=highs.tolist(),
                       entropy_dims=min(z.shape[1], MAX_ENTROPY_DIMS))


def _chunk_rows(width: int) -> int:
    """Rows per chunk: about 32 MB of float64 whatever the width."""
    return max(1, CHUNK_VALUES // max(width, 1))


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    rows = _chunk_rows(x.shape[1])
    for start in range(0, len(x), rows):
        yield x[start:start + rows].astype(np.float64)


def features(frame: MetricFrame, continuous: np.ndarray) -> np.ndarray:
    """Standardised (and projected) continuous features under ``frame``, float64, computed a chunk of
    rows at a time so no full-width float64 copy of the data is made."""
    x = np.asarray(continuous)
    if x.shape[1] != len(frame.mean):
        raise MetricUndefined(f"the benchmark's metric frame has {len(frame.mean)} continuous dimensions, the data "
                             f"{x.shape[1]}: the dataset does not match its benchmark", field="frame")
    mean, scale = np.asarray(frame.mean), np.asarray(frame.scale)
    axes = np.asarray(frame.components).T if frame.components is not None else None
    out = np.empty((len(x), axes.shape[1] if axes is not None else x.shape[1]))
    rows = _chunk_rows(x.shape[1])
    for start in range(0, len(x), rows):
        z = (x[start:start + rows].astype(np.float64) - mean) / scale
        out[start:start + rows] = z @ axes if axes is not None else z
    return out


def coverage_cells(frame: MetricFrame, continuous: np.ndarray, discrete: np.ndarray,
                   bins: int) -> tuple[np.ndarray, float]:
    """Integer cells per row (binned continuous features, then the discrete columns) and the share clipped."""
    grid = features(frame, continuous)[:, :frame.coverage_dims]
    if frame.coverage_dims:
        cells, clipped = quantise(grid, frame.coverage_low, frame.coverage_high, bins)
    else:
        cells, clipped = np.zeros((len(discrete), 0), dtype=np.int64), 0.0
    return np.concatenate([cells, discrete], axis=1), clipped


def entropy_points(frame: MetricFrame, continuous: np.ndarray) -> np.ndarray:
    if frame.entropy_dims == 0:
        raise MetricUndefined("kNN entropies need continuous observations or actions; this data has none",
                             field="metric")
    return features(frame, continuous)[:, :frame.entropy_dims]
