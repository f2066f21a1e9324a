"""Entropy of the state(-action) distribution from k-nearest-neighbour distances.

- Kozachenko-Leonenko Shannon estimate, in nats:
  H = psi(N) - psi(k) + ln V_d + (d/m) sum_i ln rho_i over m (seeded) query points, every point a
  candidate neighbour.
- Behavioral entropy (Suttle et al. 2025) with Prelec weighting w(p) = exp(-beta (-ln p)^alpha):
  the practical kNN estimator PyTupli follows (distances normalised by their mean, terms
  r E e^-E with E = beta ln(1 + r)^alpha), and the plug-in form on the kNN density f in ``details``:
  the mean of phi(f) = beta (-ln f)^alpha e^(-beta (-ln f)^alpha) / f, with -ln f signed as the formula
  has it. Where some density exceeds 1, -ln f < 0 and a non-integer power of it is undefined: the
  plug-in is then null, with a warning, rather than a number of another formula.

Exact duplicate rows would give rho = 0 and ln 0: they are dropped first (repeats add nothing, as
coverage says) and their share is reported; constant columns are dropped too. Compare datasets
only under one scaler: multiplying the features by c shifts H by d ln c.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from tuplehub.storage.errors import InvalidRequest, MetricUndefined
from tuplehub.storage.metrics import MetricResult

SHANNON_VERSION = "1"
BEHAVIORAL_VERSION = "2"  # 2: the plug-in uses the signed -ln f (1: |ln f|, a different number where f > 1)
DUPLICATE_WARNING = 0.05


def _prepare(points: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, float], list[str]]:
    x = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    unique = np.unique(x, axis=0)
    varying = unique.std(axis=0) > 0 if len(unique) else np.zeros(x.shape[1], dtype=bool)
    unique = unique[:, varying]
    facts = {"duplicate_share": 1 - len(unique) / len(x) if len(x) else 0.0,
             "dimensions": int(varying.sum()), "constant_dimensions": int((~varying).sum())}
    warnings = []
    if facts["duplicate_share"] > DUPLICATE_WARNING:
        warnings.append(f"{facts['duplicate_share']:.0%} of rows repeat another exactly; they were dropped and the "
                        "estimate is unreliable above 5%")
    if len(unique) <= k:
        raise MetricUndefined(f"k = {k} needs more than {k} distinct points, the data has {len(unique)}", field="k")
    if unique.shape[1] == 0:
        raise MetricUndefined("every dimension is constant: the distribution has no spread", field="points")
    return unique, facts, warnings


def knn_distances(points: np.ndarray, k: int, *, queries: int, seed: int) -> tuple[np.ndarray, int]:
    """Distance from ``queries`` seeded points to their k-th nearest *other* point, and how many queried."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(points), size=min(queries, len(points)), replace=False))
    distances, _ = cKDTree(points).query(points[chosen], k=k + 1)  # the first neighbour is the point itself
    return cast("np.ndarray", distances)[:, k], len(chosen)  # k + 1 neighbours each: an array


def _log_unit_ball(d: int) -> float:
    return d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)


def shannon_entropy(points: np.ndarray, *, k: int = 5, queries: int = 20_000, seed: int = 0) -> MetricResult:
    x, facts, warnings = _prepare(points, k)
    n, d = x.shape
    rho, m = knn_distances(x, k, queries=queries, seed=seed)
    local = digamma(n) - digamma(k) + _log_unit_ball(d) + d * np.log(rho)
    value = float(local.mean())
    se = float(local.std(ddof=1) / math.sqrt(m)) if m > 1 else None
    return MetricResult(
        metric="shannon_entropy", value=value, ci_low=value - 1.96 * se if se is not None else None,
        ci_high=value + 1.96 * se if se is not None else None,
        ci_method=f"normal, standard error over {m} query points" if se is not None else None,
        n_rows_used=len(points), n_episodes_used=0, params={"k": k, "queries": queries, "estimator": "KL"},
        seed=seed, warnings=warnings, details={**facts, "queried": m, "subsampled": m < n},
        algo_version=SHANNON_VERSION)


def behavioral_entropy(points: np.ndarray, *, alpha: float, beta: float | None = None, dimension: int | None = None,
                       k: int = 5, queries: int = 20_000, clip: float = 0.0, seed: int = 0) -> MetricResult:
    """Behavioral entropy; ``beta`` defaults to (ln D)^(1 - alpha), D the representation dimension."""
    if alpha <= 0:
        raise InvalidRequest("alpha must be positive", field="alpha")
    x, facts, warnings = _prepare(points, k)
    n, d = x.shape
    if beta is None:
        dimension = dimension or d
        if dimension < 2:
            raise MetricUndefined("beta = (ln D)^(1 - alpha) needs D >= 2; give beta instead", field="beta")
        beta = math.log(dimension) ** (1 - alpha)
    if beta <= 0:
        raise InvalidRequest("beta must be positive", field="beta")
    rho, m = knn_distances(x, k, queries=queries, seed=seed)
    r = np.maximum(rho / rho.mean() - clip, 0.0)
    energy = beta * np.log1p(r) ** alpha
    terms = r * energy * np.exp(-energy)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(m)) if m > 1 else None
    plug_in, dense_share, undefined = _plug_in(rho, n, d, k, alpha=alpha, beta=beta)
    if undefined:
        warnings.append(undefined)
    return MetricResult(
        metric="behavioral_entropy", value=value, ci_low=value - 1.96 * se if se is not None else None,
        ci_high=value + 1.96 * se if se is not None else None,
        ci_method=f"normal, standard error over {m} query points" if se is not None else None,
        n_rows_used=len(points), n_episodes_used=0,
        params={"alpha": alpha, "beta": beta, "k": k, "queries": queries, "clip": clip, "estimator": "practical"},
        seed=seed, warnings=warnings,
        details={**facts, "queried": m, "plug_in": plug_in, "plug_in_dense_share": dense_share},
        algo_version=BEHAVIORAL_VERSION)


def _plug_in(rho: np.ndarray, n: int, d: int, k: int, *, alpha: float,
             beta: float) -> tuple[float | None, float, str | None]:
    """The plug-in BE on the kNN density f = k / (N V_d rho^d), the share of densities above 1, and why
    the plug-in is undefined (None when it is defined).

    With s = -ln f, phi(f) = beta s^alpha e^(-beta s^alpha) / f = beta s^alpha e^(s - beta s^alpha): the
    same number without dividing by a density. s < 0 (f > 1) is fine for an integer alpha (alpha = beta = 1
    gives the plug-in Shannon form, s itself) and has no real power otherwise.
    """
    surprise = np.log(rho) * d + _log_unit_ball(d) + math.log(n) - math.log(k)  # -ln f, in float64
    dense_share = float(np.mean(surprise < 0))
    if dense_share and not float(alpha).is_integer():
        return None, dense_share, (
            f"{dense_share:.1%} of the kNN densities exceed 1, where (-ln f)^alpha has no value for alpha = "
            f"{alpha}: details.plug_in is null. Use an integer alpha, or features in larger units")
    energy = beta * surprise ** alpha
    with np.errstate(over="ignore"):
        plug_in = float(np.mean(energy * np.exp(surprise - energy)))
    if not math.isfinite(plug_in):  # a density near 0, or (alpha >= 3) far above 1: e^(s - beta s^alpha) overflows
        return None, dense_share, "the plug-in overflows a float for these densities: details.plug_in is null"
    return plug_in, dense_share, None
