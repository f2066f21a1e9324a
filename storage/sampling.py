"""Seeded sampling that gives the same rows for the same seed, however the data is laid out.

Every episode (and every row: episode and step) gets a 64-bit key from a hash of the seed and its
identity, never from its position, so neither block boundaries, segment order nor the worker that
runs the export change what is chosen. Choosing ``n`` takes the ``n`` smallest keys (exact);
choosing a fraction of rows keeps a row when its key falls below ``fraction * 2**64`` (each row
independently, so the count is close to, not exactly, the fraction).
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK = np.uint64(2**64 - 1)


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fast, well-spread bijection on 64-bit integers."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def episode_keys(episode_ids: np.ndarray, seed: int) -> np.ndarray:
    """A key per episode id (integers or strings), the same for the same (seed, id)."""
    salt = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    if episode_ids.dtype.kind in "iu":
        with np.errstate(over="ignore"):
            return mix64(episode_ids.astype(np.int64).view(np.uint64) ^ salt)
    distinct, inverse = np.unique(np.asarray(episode_ids, dtype=object).astype(str), return_inverse=True)
    digests = [hashlib.blake2b(f"{seed}:{value}".encode(), digest_size=8).digest() for value in distinct]
    keys = np.frombuffer(b"".join(digests), dtype="<u8") if digests else np.zeros(0, np.uint64)
    return keys[inverse.reshape(-1)]  # hashed once per episode, not once per row


def row_keys(episode_ids: np.ndarray, steps: np.ndarray, seed: int) -> np.ndarray:
    """A key per row, from its episode's key and its step."""
    with np.errstate(over="ignore"):
        return mix64(episode_keys(episode_ids, seed) ^ mix64(steps.astype(np.int64).view(np.uint64)))


def smallest(keys: np.ndarray, n: int) -> np.ndarray:
    """A mask of the ``n`` smallest keys (all when there are fewer)."""
    if n >= len(keys):
        return np.ones(len(keys), dtype=bool)
    if n <= 0:
        return np.zeros(len(keys), dtype=bool)
    threshold = np.partition(keys, n - 1)[n - 1]
    return keys <= threshold


def below(keys: np.ndarray, fraction: float) -> np.ndarray:
    """A mask of keys below ``fraction`` of the key range: each kept with probability ``fraction``."""
    if fraction >= 1:
        return np.ones(len(keys), dtype=bool)
    return keys < np.uint64(int(fraction * 2**64))
