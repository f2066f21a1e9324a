"""Entropy of the state(-action) distribution from k-nearest-neighbour distances.

- Kozachenko-Leonenko Shannon estimate, in nats:
  H = psi(N) - psi(k) + ln V_d + (d/m) sum_i ln rho_i over m (seeded) query points, every point a
  candidate neighbour.
- Behavioral entropy (Suttle et al. 2025) with Prelec weighting w(p) = exp(-beta (-ln p)^alpha):
  the practical kNN estimator PyTupli follows (distances normalised by their mean, terms
  r E e^-E with E = beta ln(1 + r)^alpha), and the plug-in form on the kNN density in ``details``.

Exact duplicate rows would give rho = 0 and ln 0: they are dropped first (repeats add nothing, as
coverage says) and their share is reported; constant columns are dropped too. Compare datasets
only under one scaler: multiplying the features by c shifts H by d ln c.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.metrics import MetricResult

VERSION = "1"
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
        raise InvalidRequest(f"k = {k} needs more than {k} distinct points, the data has {len(unique)}", field="k")
    if unique.shape[1] == 0:
        raise InvalidRequest("every dimension is constant: the distribution has no spread", field="points")
    return unique, facts, warnings


def knn_distances(points: np.ndarray, k: int, *, queries: int, seed: int) -> tuple[np.ndarray, int]:
    """Distance from ``queries`` seeded points to their k-th nearest *other* point, and how many queried."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(points), size=min(queries, len(points)), replace=False))
    distances, _ = cKDTree(points).query(points[chosen], k=k + 1)  # the first neighbour is the point itself
    return distances[:, k], len(chosen)


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
        algo_version=VERSION)


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
            raise InvalidRequest("beta = (ln D)^(1 - alpha) needs D >= 2; give beta instead", field="beta")
        beta = math.log(dimension) ** (1 - alpha)
    if beta <= 0:
        raise InvalidRequest("beta must be positive", field="beta")
    rho, m = knn_distances(x, k, queries=queries, seed=seed)
    r = np.maximum(rho / rho.mean() - clip, 0.0)
    energy = beta * np.log1p(r) ** alpha
    terms = r * energy * np.exp(-energy)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(m)) if m > 1 else None
    density = k / (n * np.exp(_log_unit_ball(d)) * rho ** d)  # the kNN density, for the plug-in form
    surprise = -np.log(density)
    plug_in = float(np.mean(beta * np.abs(surprise) ** alpha * np.exp(-beta * np.abs(surprise) ** alpha) / density))
    if np.any(density >= 1):
        warnings.append("some kNN densities are >= 1 (units too small): the plug-in form is not meaningful there")
    return MetricResult(
        metric="behavioral_entropy", value=value, ci_low=value - 1.96 * se if se is not None else None,
        ci_high=value + 1.96 * se if se is not None else None,
        ci_method=f"normal, standard error over {m} query points" if se is not None else None,
        n_rows_used=len(points), n_episodes_used=0,
        params={"alpha": alpha, "beta": beta, "k": k, "queries": queries, "clip": clip, "estimator": "practical"},
        seed=seed, warnings=warnings, details={**facts, "queried": m, "plug_in": plug_in}, algo_version=VERSION)
