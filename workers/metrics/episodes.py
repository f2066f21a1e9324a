"""Per-episode quantities from per-step arrays in canonical (episode, step) order."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_CELLS = 8_000_000


def episode_starts(episode_id: np.ndarray) -> np.ndarray:
    """Row index where each episode begins (rows of one episode are contiguous)."""
    ids = np.asarray(episode_id)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1]).astype(np.int64)


def episode_returns(episode_id: np.ndarray, reward: np.ndarray, *, gamma: float = 1.0) -> np.ndarray:
    """G_e = sum_t gamma^t r_t per episode, t counted from each episode's first row (float64)."""
    rewards = np.asarray(reward, dtype=np.float64)
    starts = episode_starts(episode_id)
    if starts.size == 0:
        return np.zeros(0)
    if gamma == 1.0:
        return np.add.reduceat(rewards, starts)
    lengths = np.diff(np.append(starts, len(rewards)))
    t = np.arange(len(rewards)) - np.repeat(starts, lengths)
    return np.add.reduceat(rewards * gamma ** t, starts)


def bootstrap_mean(values: np.ndarray, *, seed: int, resamples: int = 2000) -> tuple[float, float] | None:
    """95% percentile interval of the mean, resampling whole episodes; None with fewer than two."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // len(values))  # resamples drawn at once: memory stays ~64 MB
    means = np.concatenate([values[rng.integers(0, len(values), size=(min(chunk, resamples - done), len(values)))]
                           .mean(axis=1) for done in range(0, resamples, chunk)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
