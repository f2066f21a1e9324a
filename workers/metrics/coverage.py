"""State-action coverage (SACo, Schweighofer et al. 2022): how many distinct (state, action) cells.

Continuous columns are binned on bounds fixed per benchmark (never the dataset's own range, or
two datasets would be binned differently); discrete ones are used as they are. Each quantised row
is mixed into a 64-bit key and counted exactly with ``np.unique``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuplehub.storage.errors import MetricUndefined
from tuplehub.storage.metrics import MetricResult
from tuplehub.storage.sampling import mix64, smallest

VERSION = "1"


def quantise(values: np.ndarray, low: Sequence[float], high: Sequence[float], bins: int) -> tuple[np.ndarray, float]:
    """Bin ids per column, min(floor(bins * (x - low) / (high - low)), bins - 1); and the share clipped."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    lows, highs = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if lows.shape != (x.shape[1],) or highs.shape != lows.shape or not np.all(np.isfinite(lows)) \
            or not np.all(np.isfinite(highs)) or np.any(highs <= lows):
        raise MetricUndefined("coverage needs finite bounds with high > low for every continuous dimension",
                             field="bounds")
    scaled = np.floor(bins * (x - lows) / (highs - lows))
    clipped = float(np.mean(np.any((x < lows) | (x > highs), axis=1))) if len(x) else 0.0
    return np.clip(scaled, 0, bins - 1).astype(np.int64), clipped


def cell_keys(columns: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of integer cells (collisions ~ n^2 / 2^65)."""
    keys = np.zeros(len(columns), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in np.asarray(columns, dtype=np.int64).reshape(len(columns), -1).T:
            keys = mix64(keys ^ mix64(column.view(np.uint64)))
    return keys


def state_action_coverage(cells: np.ndarray, *, reference_cells: np.ndarray | None = None,
                          params: dict[str, Any] | None = None, clipped: float = 0.0) -> MetricResult:
    """u(D) / u(D_ref) over already-quantised (state, action) cells; u(D) / |D| without a reference.

    The reference must be binned alike and have the same number of rows (u grows with size).
    """
    reference = cell_keys(reference_cells) if reference_cells is not None else None
    return coverage_of_keys(cell_keys(cells), reference_keys=reference, params=params, clipped=clipped)


def coverage_of_keys(keys: np.ndarray, *, reference_keys: np.ndarray | None = None,
                     params: dict[str, Any] | None = None, clipped: float = 0.0, episodes: int = 0) -> MetricResult:
    """:func:`state_action_coverage` on cells already mixed into keys (8 bytes a row, what jobs keep)."""
    n = len(keys)
    count = int(np.unique(keys).size) if n else 0
    warnings = [f"{clipped:.1%} of rows fell outside the bounds and were put in the edge bins"] if clipped else []
    details = {"distinct": count, "distinct_per_row": count / n if n else None, "clipped_share": clipped}
    if reference_keys is not None:
        if len(reference_keys) != n:
            raise MetricUndefined(f"the reference has {len(reference_keys)} rows, the data {n}: coverage compares "
                                 "equal sizes (subsample the reference)", field="reference")
        reference = int(np.unique(reference_keys).size)
        if reference == 0:
            raise MetricUndefined("the reference has no rows", field="reference")
        value = count / reference
        details["reference_distinct"] = reference
    else:
        value = float(count)
        warnings.append("no reference: the value is the raw count of distinct cells")
    return MetricResult(metric="state_action_coverage", value=value, n_rows_used=n, n_episodes_used=episodes,
                        params=params or {}, warnings=warnings, details=details, algo_version=VERSION)


def coverage_against_reference(cells: np.ndarray, rows: np.ndarray, reference_cells: np.ndarray,
                               reference_rows: np.ndarray, *, subsamples: int = 5, params: dict[str, Any] | None = None,
                               clipped: float = 0.0, seed: int = 0) -> MetricResult:
    """SACo against a reference of any size: both sides cut to the smaller size by seeded row keys.

    ``cells`` and ``reference_cells`` are cell keys (:func:`cell_keys`), ``rows`` and ``reference_rows``
    the rows' seeded sample keys.

    u grows with the number of rows, so the larger side is subsampled to the smaller one's size,
    ``subsamples`` times with different seeds; the value is the mean ratio, the interval its range.
    """
    size = min(len(cells), len(reference_cells))
    if size == 0:
        raise MetricUndefined("coverage against a reference needs rows on both sides", field="reference")
    ratios, distincts = [], []
    for salt in range(subsamples):
        with np.errstate(over="ignore"):
            own = smallest(mix64(rows ^ np.uint64(salt)), size)
            theirs = smallest(mix64(reference_rows ^ np.uint64(salt)), size)
        result = coverage_of_keys(cells[own], reference_keys=reference_cells[theirs], params=params,
                                  clipped=clipped)
        ratios.append(result.value)
        distincts.append((result.details["distinct"], result.details["reference_distinct"]))
    values = np.asarray(ratios, dtype=np.float64)
    resampled = size < max(len(cells), len(reference_cells))
    return result.model_copy(update={
        "value": float(values.mean()), "ci_low": float(values.min()) if resampled else None,
        "ci_high": float(values.max()) if resampled else None,
        "ci_method": f"range over {subsamples} seeded subsamples to {size} rows" if resampled else None,
        "seed": seed, "n_rows_used": size,
        "details": {**result.details, "compared_rows": size, "subsample_values": ratios,
                    "distinct_pairs": distincts, "rows": len(cells), "reference_rows": len(reference_cells)}})
