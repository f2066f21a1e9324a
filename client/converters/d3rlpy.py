"""d3rlpy: a ``ReplayBuffer`` (what ``MDPDataset`` is) built from exported arrays, episode by episode.

tuplehub builds the d3rlpy object itself rather than going through d3rlpy's own converters, which
infer the action type and size from the data (wrong for a filtered subset) and mishandle steps
that are both terminated and truncated. Here:

- the action space and size come from the benchmark's (or a given gymnasium) action space;
- an episode is ``terminated`` when its last step terminated, whether or not it was also
  truncated (terminal wins); a truncated episode is not terminal, so its last state bootstraps;
- d3rlpy keeps N observations per episode, so the final observation of an episode is dropped,
  as it is for any d3rlpy dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tuplehub.client.converters.episodes import episode_slices
from tuplehub.client.errors import require
from tuplehub.storage.errors import InvalidRequest


def action_kind(action_space: Any) -> tuple[Any, int]:
    """d3rlpy's action space constant and action size for a gymnasium action space."""
    from gymnasium import spaces

    d3rlpy = require("d3rlpy", extra="d3rlpy", feature="to_d3rlpy()")

    if isinstance(action_space, spaces.Discrete):
        return d3rlpy.ActionSpace.DISCRETE, int(action_space.n)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return d3rlpy.ActionSpace.CONTINUOUS, int(action_space.shape[0])
    raise InvalidRequest(f"d3rlpy takes Discrete or one-dimensional Box actions, not {action_space}")


def to_d3rlpy(arrays: Mapping[str, np.ndarray], action_space: Any) -> Any:
    """An export as a d3rlpy ``ReplayBuffer`` over an ``InfiniteBuffer`` (an ``MDPDataset``)."""
    kind, size = action_kind(action_space)  # first: it says what to install if d3rlpy is missing
    from d3rlpy.dataset import Episode, InfiniteBuffer, ReplayBuffer

    discrete = kind.name == "DISCRETE"
    episodes = []
    for rows in episode_slices(arrays):
        actions = np.asarray(arrays["action"][rows])
        actions = actions.reshape(-1, 1).astype(np.int64) if discrete else actions.reshape(len(actions), -1)
        episodes.append(Episode(
            observations=np.asarray(arrays["observation"][rows]), actions=actions,
            rewards=np.asarray(arrays["reward"][rows], dtype=np.float32).reshape(-1, 1),
            terminated=bool(np.asarray(arrays["terminated"][rows])[-1])))
    if not episodes:
        raise InvalidRequest("the export holds no episode to build a d3rlpy dataset from")
    return ReplayBuffer(InfiniteBuffer(), episodes=episodes, action_space=kind, action_size=size)
