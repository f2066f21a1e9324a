"""Return, episode-length and reward statistics: cheap, computed for every version."""

from __future__ import annotations

import numpy as np

from tuplehub.storage.metrics import MetricResult
from tuplehub.workers.metrics.episodes import bootstrap_mean, episode_returns, episode_starts

VERSION = "1"
QUANTILES = (5, 25, 50, 75, 95)


def return_statistics(episode_id: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                      *, gamma: float = 1.0, bins: int = 50, seed: int = 0) -> MetricResult:
    """Mean return (with an episode-bootstrap interval) and the figures around it.

    Reward sparsity is the share of zero rewards per episode, averaged over episodes, so one long
    episode does not decide it.
    """
    rewards = np.asarray(reward, dtype=np.float64)
    starts = episode_starts(episode_id)
    n = len(starts)
    returns = episode_returns(episode_id, rewards, gamma=gamma)
    lengths = np.diff(np.append(starts, len(rewards)))
    last = np.append(starts[1:], len(rewards)) - 1 if n else np.zeros(0, dtype=np.int64)
    ended_terminated = np.asarray(terminated, dtype=bool)[last]
    ended_truncated = np.asarray(truncated, dtype=bool)[last] & ~ended_terminated
    warnings = []
    if n < 2:
        warnings.append("fewer than two episodes: no spread or interval")
    interval = bootstrap_mean(returns, seed=seed)
    details = {}
    if n:
        histogram, edges = np.histogram(returns, bins=bins)
        zero_share = np.add.reduceat((rewards == 0).astype(np.float64), starts) / lengths
        details = {
            "return_std": float(returns.std(ddof=1)) if n > 1 else None,
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "return_quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.percentile(returns, QUANTILES),
                                                                  strict=True)},
            "return_histogram": {"counts": histogram.tolist(), "edges": edges.tolist()},
            "length_min": int(lengths.min()), "length_mean": float(lengths.mean()),
            "length_median": float(np.median(lengths)), "length_max": int(lengths.max()),
            "ended_terminated": float(ended_terminated.mean()), "ended_truncated": float(ended_truncated.mean()),
            "open": float((~ended_terminated & ~ended_truncated).mean()),
            "reward_min": float(rewards.min()), "reward_max": float(rewards.max()),
            "reward_mean": float(rewards.mean()), "reward_sparsity": float(zero_share.mean()),
        }
    return MetricResult(
        metric="returns", value=float(returns.mean()) if n else None,
        ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None,
        ci_method="episode bootstrap, 95% percentile, 2000 resamples" if interval else None,
        n_rows_used=len(rewards), n_episodes_used=n, params={"gamma": gamma, "bins": bins}, seed=seed,
        warnings=warnings, details=details, algo_version=VERSION)
