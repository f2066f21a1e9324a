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

import numpy as np

from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.metrics import MetricFrame
from tuplehub.workers.metrics.coverage import quantise

MAX_GRID_DIMS = 6
MAX_ENTROPY_DIMS = 16
# Coverage bounds from a reference sample: the 0.1 % and 99.9 % quantiles of each feature.
QUANTILES = (0.1, 99.9)
MAX_SPAN = 1_000.0  # standard deviations: wider space bounds are treated as none


def split_columns(observation: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(continuous float64 (n, d), discrete int64 (n, q)) from the observation and action arrays."""
    n = len(observation)
    continuous, discrete = [], []
    for values in (observation, action):
        flat = np.asarray(values).reshape(n, -1)
        (discrete if flat.dtype.kind in "iub" else continuous).append(flat)
    as_matrix = [np.concatenate(parts, axis=1) if parts else np.zeros((n, 0)) for parts in (continuous, discrete)]
    return as_matrix[0].astype(np.float64, copy=False), as_matrix[1].astype(np.int64, copy=False)


def freeze_frame(continuous: np.ndarray, *, source: str, low: np.ndarray | None = None,
                 high: np.ndarray | None = None) -> MetricFrame:
    """A frame fitted on a reference sample of continuous features (``low``/``high``: space bounds, may be inf)."""
    x = np.asarray(continuous, dtype=np.float64)
    n, d = x.shape
    if d and n < 2:
        raise InvalidRequest("freezing the metric frame needs at least two rows", field="version")
    if not np.isfinite(x).all():
        raise InvalidRequest("observations or actions hold NaN or infinity: no frame can be fitted to them",
                             field="version")
    mean = x.mean(axis=0) if d else np.zeros(0)
    scale = x.std(axis=0) if d else np.zeros(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    components = None
    if d > MAX_GRID_DIMS:
        eigenvalues, eigenvectors = np.linalg.eigh(z.T @ z / n)
        order = np.argsort(eigenvalues)[::-1][:MAX_ENTROPY_DIMS]
        axes = eigenvectors[:, order].T
        # An eigenvector's sign is arbitrary: fix it (largest entry positive) so refits agree.
        components = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
        z = z @ components.T
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


def features(frame: MetricFrame, continuous: np.ndarray) -> np.ndarray:
    """Standardised (and projected) continuous features under ``frame``."""
    x = np.asarray(continuous, dtype=np.float64)
    if x.shape[1] != len(frame.mean):
        raise InvalidRequest(f"the benchmark's metric frame has {len(frame.mean)} continuous dimensions, the data "
                             f"{x.shape[1]}: the dataset does not match its benchmark", field="frame")
    z = (x - np.asarray(frame.mean)) / np.asarray(frame.scale)
    return z @ np.asarray(frame.components).T if frame.components is not None else z


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
        raise InvalidRequest("kNN entropies need continuous observations or actions; this data has none",
                             field="metric")
    return features(frame, continuous)[:, :frame.entropy_dims]
