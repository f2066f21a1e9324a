"""Small factories for test data: per-step arrays of episodes, catalog records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from tuplehub.storage.blocks import BlockRecord
from tuplehub.storage.models import EpisodeRecord, JobKind, JobRecord, UploadRecord, new_id, utcnow
from tuplehub.storage.schema import TensorSpec, TupleSchema


def episode_arrays(episodes: int = 4, length: int = 10, *, obs_dim: int = 3, act_dim: int = 2, seed: int = 0,
                   first_id: int = 0, dtype: str = "float32", ragged: bool = True,
                   next_observation: bool = True) -> dict[str, np.ndarray]:
    """Per-step arrays of ``episodes`` episodes; even episodes terminate, odd ones are truncated."""
    rng = np.random.default_rng(seed)
    lengths = [max(1, length + (rng.integers(-length // 3, length // 3 + 1) if ragged else 0))
               for _ in range(episodes)]
    parts: dict[str, list[Any]] = {k: [] for k in ("episode_id", "step", "observation", "action", "reward",
                                                    "terminated", "truncated", "next_observation")}
    for e, n in enumerate(lengths):
        obs = np.cumsum(rng.normal(size=(n + 1, obs_dim)), axis=0).astype(dtype)
        parts["episode_id"].append(np.full(n, first_id + e, dtype=np.int64))
        parts["step"].append(np.arange(n, dtype=np.int64))
        parts["observation"].append(obs[:-1])
        parts["next_observation"].append(obs[1:])
        parts["action"].append(rng.uniform(-1, 1, size=(n, act_dim)).astype(dtype))
        parts["reward"].append(rng.normal(size=n).astype(np.float32))
        end = np.zeros(n, dtype=bool)
        end[-1] = True
        parts["terminated"].append(end & (e % 2 == 0))
        parts["truncated"].append(end & (e % 2 == 1))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if not next_observation:
        del arrays["next_observation"]
    return arrays


SCHEMA = TupleSchema(episode_id="int", observation=TensorSpec(dtype="float32", shape=[3]),
                     action=TensorSpec(dtype="float32", shape=[2]), reward="float32")


def episode_record(segment: str, index: int, *, episode_id: int | str | None = None, length: int = 10,
                   return_: float = 1.0, metadata: dict[str, Any] | None = None) -> EpisodeRecord:
    return EpisodeRecord(segment=segment, index=index, episode_id=index if episode_id is None else episode_id,
                         row_start=index * length, length=length, return_=return_, reward_min=0.0,
                         reward_max=1.0, first_step=0, last_step=length - 1, terminated=True, truncated=False,
                         metadata=metadata or {})


def block_record(segment: str, seq: int, *, data: bytes = b"data", zones: dict[str, Any] | None = None) -> BlockRecord:
    return BlockRecord(segment=segment, seq=seq, row_start=seq * 10, rows=10, first_episode=seq,
                       last_episode=seq, zones=zones or {"reward": [0.0, 1.0]}, data=data, tail=b"tail")


def job_record(**fields: Any) -> JobRecord:
    return JobRecord(**{"kind": JobKind.export, "owner": "alice", **fields})


def upload_record(dataset_id: str = "d1", *, expires_in_s: float = 3600) -> UploadRecord:
    upload_id = new_id()
    return UploadRecord(id=upload_id, dataset_id=dataset_id, dataset="ds", owner="alice", mode="append",
                        part_size=2**20, object_key=f"uploads/{upload_id}.parquet",
                        expires_at=utcnow() + timedelta(seconds=expires_in_s))
