"""D4RL dicts: ``observations, actions, rewards, terminals, timeouts`` (+ ``next_observations``).

Episode boundaries are where ``terminals`` or ``timeouts`` is set; steps after the last flag form
one more, unfinished, episode (kept, not silently dropped). A step that is both terminated and
truncated is a terminal (``timeouts`` cleared), as D4RL readers expect. Going the other way, an
episode that ended without a flag gets ``timeouts`` on its last step so its boundary survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tuplehub.client.converters.episodes import episode_slices
from tuplehub.storage.errors import InvalidRequest


def to_d4rl(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An export (``next_observation=True`` for ``next_observations``) as a D4RL dict."""
    terminals = np.asarray(arrays["terminated"], dtype=bool)
    timeouts = np.asarray(arrays["truncated"], dtype=bool) & ~terminals
    for rows in episode_slices(arrays):
        last = rows.stop - 1
        if not (terminals[last] or timeouts[last]):
            timeouts[last] = True
    out = {"observations": np.asarray(arrays["observation"]), "actions": np.asarray(arrays["action"]),
           "rewards": np.asarray(arrays["reward"]), "terminals": terminals, "timeouts": timeouts}
    if "next_observation" in arrays:
        out["next_observations"] = np.asarray(arrays["next_observation"])
    return out


def from_d4rl(data: Mapping[str, Any], *, next_observations: bool = True) -> dict[str, np.ndarray]:
    """A D4RL dict as per-step arrays for ``Dataset.upload`` (episodes numbered from 0)."""
    missing = {"observations", "actions", "rewards", "terminals"} - set(data)
    if missing:
        raise InvalidRequest(f"a D4RL dict needs {sorted(missing)}", field="data")
    terminals = np.asarray(data["terminals"], dtype=bool)
    timeouts = np.asarray(data.get("timeouts", np.zeros_like(terminals)), dtype=bool)
    ends = terminals | timeouts
    episode_id = np.concatenate([[0], np.cumsum(ends[:-1])]).astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])
    step = np.arange(len(terminals)) - np.repeat(starts, np.diff(np.append(starts, len(terminals))))
    out = {"episode_id": episode_id, "step": step.astype(np.int64),
           "observation": np.asarray(data["observations"]), "action": np.asarray(data["actions"]),
           "reward": np.asarray(data["rewards"], dtype=np.float32).reshape(-1),
           "terminated": terminals, "truncated": timeouts & ~terminals}
    if next_observations and "next_observations" in data:
        out["next_observation"] = np.asarray(data["next_observations"])
    return out
