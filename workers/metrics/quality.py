"""Trajectory quality (TQ, Schweighofer et al. 2022) and estimated relative return improvement
(ERI, Swazinna et al. 2021): where the data's returns sit, and how much better its best episode is."""

from __future__ import annotations

import numpy as np

from tuplehub.storage.errors import MetricUndefined
from tuplehub.storage.metrics import MetricResult
from tuplehub.workers.metrics.episodes import bootstrap_mean

TQ_VERSION = "1"
ERI_VERSION = "2"  # 2: a lower bound one rounding above the smallest return is accepted (1: refused)
# Relative slack of "lower bound <= smallest return": the same rewards summed in another order differ by an ulp.
BOUND_TOLERANCE = 1e-6


def trajectory_quality(returns: np.ndarray, *, random_return: float | None, expert_return: float | None,
                       seed: int = 0, n_rows: int = 0) -> MetricResult:
    """TQ = (mean return - random) / (expert - random): 0 at the random reference, 1 at the expert.

    References come from the benchmark (or the request); never from the data itself. Values
    outside [0, 1] are meaningful (worse than random, better than the expert) and are not clipped.
    """
    if random_return is None or expert_return is None:
        raise MetricUndefined("trajectory quality needs random and expert reference returns: store them on the "
                             "benchmark (set_references) or give them in the request", field="references")
    if expert_return <= random_return:
        raise MetricUndefined(f"the expert return ({expert_return}) must exceed the random return ({random_return})",
                             field="references")
    returns = np.asarray(returns, dtype=np.float64)
    span = expert_return - random_return
    normalised = (returns - random_return) / span
    interval = bootstrap_mean(normalised, seed=seed)
    return MetricResult(
        metric="trajectory_quality", value=float(normalised.mean()) if len(returns) else None,
        ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None,
        ci_method="episode bootstrap, 95% percentile, 2000 resamples" if interval else None,
        n_rows_used=n_rows, n_episodes_used=len(returns),
        params={"random_return": random_return, "expert_return": expert_return}, seed=seed,
        warnings=[] if len(returns) > 1 else ["fewer than two episodes: no interval"], algo_version=TQ_VERSION)


def _eri(shifted: np.ndarray) -> float:
    mean = shifted.mean()
    return 0.0 if mean == 0 else float((shifted.max() - mean) / mean)


def estimated_return_improvement(returns: np.ndarray, *, lower_bound: float | None = None,
                                 n_rows: int = 0) -> MetricResult:
    """ERI = (max G' - mean G') / mean G' with G' = G - c, c a lower bound of the returns.

    c defaults to the data's own minimum; a given c may exceed it by a relative 1e-6 (a rounding), and
    is then taken as the minimum. c is always stored, since ERI is not shift-invariant
    and datasets compare only under one c (use a benchmark-level bound for that). A maximum is
    not bootstrap-friendly, so the leave-best-out value is reported as the spread instead.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if not len(returns):
        return MetricResult(metric="return_improvement", value=None, n_rows_used=n_rows, n_episodes_used=0,
                            warnings=["no episodes"], algo_version=ERI_VERSION)
    smallest = float(returns.min())
    c = smallest if lower_bound is None else float(lower_bound)
    if c > smallest + BOUND_TOLERANCE * max(abs(c), abs(smallest)):
        raise MetricUndefined(f"the lower bound {c} exceeds the smallest return {smallest}", field="lower_bound")
    c = min(c, smallest)  # a bound summed in another order may sit a rounding above: it is the minimum
    shifted = returns - c
    warnings = ["every shifted return is 0: ERI is 0 by convention"] if shifted.mean() == 0 else []
    without_best = np.delete(shifted, int(np.argmax(shifted)))
    return MetricResult(
        metric="return_improvement", value=_eri(shifted), n_rows_used=n_rows, n_episodes_used=len(returns),
        params={"lower_bound": c, "lower_bound_given": lower_bound is not None}, warnings=warnings,
        details={"leave_best_out": _eri(without_best) if len(without_best) else None, "lower_bound": c},
        algo_version=ERI_VERSION)
