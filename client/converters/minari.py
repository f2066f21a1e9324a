"""Minari datasets, whose episodes carry N+1 observations (the reset one and the final one).

Into tuplehub, episode *i*'s rows are observations ``0..N-1`` with ``next_observation``
``1..N`` (so the final observation is kept), and scalar infos after each step as ``info.*``. Out of
tuplehub, the final observation comes back from the last ``next_observation``: export with
``next_observation=True``. Episode ids and boundaries survive the round trip unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tuplehub.client.converters.episodes import episode_slices
from tuplehub.client.errors import require
from tuplehub.storage.errors import InvalidRequest


def episodes_from_minari(dataset: Any) -> Iterator[dict[str, Any]]:
    """A Minari dataset's episodes, ready for ``Dataset.upload`` (an iterator: bounded memory)."""
    for episode in dataset.iterate_episodes():
        observations = episode.observations
        if isinstance(observations, dict | tuple):
            raise InvalidRequest("Minari episodes with Dict or Tuple observations are not supported yet; "
                                 "flatten them first", field="observations")
        steps = len(episode.rewards)
        out: dict[str, Any] = {
            "episode_id": int(episode.id), "step": np.arange(steps, dtype=np.int64),
            "observation": observations[:-1], "next_observation": observations[1:],
            "action": np.asarray(episode.actions), "reward": np.asarray(episode.rewards, dtype=np.float32),
            "terminated": np.asarray(episode.terminations, dtype=bool),
            "truncated": np.asarray(episode.truncations, dtype=bool)}
        for key, values in (episode.infos or {}).items():
            values = np.asarray(values)
            if values.ndim == 1 and len(values) == steps + 1 and values.dtype.kind in "biuf":
                out[f"info.{key}"] = values[1:].astype(np.float64)  # the info after each step
        yield out


def to_minari(arrays: Mapping[str, np.ndarray], dataset_id: str, *, env: Any = None,
              observation_space: Any = None, action_space: Any = None, **metadata: Any) -> Any:
    """Write an export (with ``next_observation``) as a new local Minari dataset and return it."""
    minari = require("minari", extra="minari", feature="to_minari()")
    from minari.data_collector import EpisodeBuffer

    if "next_observation" not in arrays:
        raise InvalidRequest("Minari needs each episode's final observation: export with next_observation=True")
    buffers = []
    for rows in episode_slices(arrays):
        observations = np.concatenate([arrays["observation"][rows], arrays["next_observation"][rows][-1:]])
        buffers.append(EpisodeBuffer(
            id=int(arrays["episode_id"][rows.start]), observations=observations,
            actions=np.asarray(arrays["action"][rows]), rewards=list(np.asarray(arrays["reward"][rows])),
            terminations=list(np.asarray(arrays["terminated"][rows])),
            truncations=list(np.asarray(arrays["truncated"][rows])), infos={}))
    return minari.create_dataset_from_buffers(dataset_id, buffers, env=env, observation_space=observation_space,
                                              action_space=action_space, data_format="arrow", **metadata)
