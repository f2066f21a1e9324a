"""Recording: a gymnasium wrapper that streams every step of an environment into a dataset.

Rows follow the tuple contract: the observation an action was taken in (the reset observation
included), the action, the reward, ``terminated`` and ``truncated`` kept apart, the observation
that followed (so a truncated episode keeps its final state), and scalar ``info`` entries as
``info.<key>``. Complete episodes are sent in batches of about ``batch_rows`` rows, each an
``append`` upload ingested while recording goes on (one at a time, so episodes keep their order),
so memory stays bounded and an interruption loses at most the episode under way: closing the
recorder (or leaving its ``with`` block, even through an exception) sends the
complete episodes and drops the unfinished one, or keeps it marked ``unfinished``.

    with Recorder(gymnasium.make("CartPole-v1"), dataset, episode_metadata={"policy": "random"}) as env:
        for episode in range(100):
            obs, info = env.reset(seed=episode)
            done = False
            while not done:
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                done = terminated or truncated

:class:`VectorRecorder` does the same for a vector environment (each sub-environment's episodes
are kept apart; both autoreset modes of gymnasium 1.x are understood).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsFloat

import gymnasium
import numpy as np

from tuplehub.client.datasets import Dataset
from tuplehub.client.jobs import Job
from tuplehub.storage.errors import InvalidRequest

EpisodeMetadata = Mapping[str, Any] | Callable[[int], Mapping[str, Any]]
DEFAULT_BATCH_ROWS = 100_000


def _scalar(value: Any) -> float | None:
    """Info values kept as ``info.<key>``: numbers and booleans (as floats); anything else is skipped."""
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == ():
        return float(value)
    return None


@dataclass
class _Episode:
    """The steps of one episode while it runs."""

    episode_id: int
    metadata: dict[str, Any]
    observations: list[np.ndarray] = field(default_factory=list)   # n + 1 once the last step is in
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    infos: list[dict[str, float]] = field(default_factory=list)

    def add(self, action: Any, observation: Any, reward: Any, terminated: Any, truncated: Any,
            info: Mapping[str, Any]) -> None:
        self.actions.append(np.asarray(action))
        self.observations.append(np.asarray(observation))
        self.rewards.append(float(reward))
        self.terminated.append(bool(terminated))
        self.truncated.append(bool(truncated))
        self.infos.append({key: v for key, value in info.items() if (v := _scalar(value)) is not None})

    def __len__(self) -> int:
        return len(self.rewards)

    def to_upload(self, info_keys: list[str]) -> dict[str, Any]:
        observations = np.stack(self.observations)
        episode: dict[str, Any] = {
            "episode_id": self.episode_id, "metadata": self.metadata,
            "step": np.arange(len(self), dtype=np.int64), "observation": observations[:-1],
            "action": np.stack(self.actions), "reward": np.asarray(self.rewards, dtype=np.float32),
            "terminated": np.asarray(self.terminated), "truncated": np.asarray(self.truncated),
            "next_observation": observations[1:]}
        for key in info_keys:
            episode[f"info.{key}"] = np.array([info.get(key, math.nan) for info in self.infos], dtype=np.float64)
        return episode


class _Stream:
    """Complete episodes waiting to be sent, and the upload jobs of those already sent."""

    def __init__(self, dataset: Dataset, *, batch_rows: int, episode_metadata: EpisodeMetadata | None,
                 first_episode_id: int | None) -> None:
        self.dataset = dataset
        self.batch_rows = batch_rows
        self.episode_metadata = episode_metadata
        self.next_id = self._first_id(dataset) if first_episode_id is None else first_episode_id
        self.ready: list[_Episode] = []
        self.jobs: list[Job] = []
        self.info_keys: list[str] | None = None

    @staticmethod
    def _first_id(dataset: Dataset) -> int:
        """Continue after the dataset's highest episode id, so appended episodes never collide."""
        if dataset.refresh().latest_version is None:
            return 0
        ids = dataset.export(columns=["episode_id"]).to_numpy()["episode_id"]
        if ids.dtype.kind not in "iu":
            raise InvalidRequest(f"dataset {dataset.name} numbers its episodes with strings; pass first_episode_id")
        return int(ids.max()) + 1 if len(ids) else 0

    def start(self, seed: int | None) -> _Episode:
        episode_id, self.next_id = self.next_id, self.next_id + 1
        given = self.episode_metadata(episode_id) if callable(self.episode_metadata) else self.episode_metadata
        metadata = {**(given or {}), **({"seed": seed} if seed is not None else {})}
        return _Episode(episode_id, metadata)

    def finish(self, episode: _Episode) -> None:
        if len(episode):
            self.ready.append(episode)
        if sum(len(e) for e in self.ready) >= self.batch_rows:
            self.send()

    def send(self) -> None:
        if not self.ready:
            return
        if self.info_keys is None:  # fixed by the first batch: appends must keep one schema
            self.info_keys = sorted({key for e in self.ready for info in e.infos for key in info})
        extra = {key for e in self.ready for info in e.infos for key in info} - set(self.info_keys)
        if extra:
            warnings.warn(f"info keys {sorted(extra)} first appeared after the first batch and are not recorded",
                          stacklevel=3)
        if self.jobs:  # appends commit in the order their ingests finish: one at a time keeps episode order
            self.jobs[-1].wait(progress=False)  # (raises if it failed; the episodes here stay ready)
        episodes = [e.to_upload(self.info_keys) for e in self.ready]
        self.jobs.append(self.dataset.upload(iter(episodes), mode="append"))
        self.ready = []

    def close(self, *, wait: bool) -> list[Job]:
        self.send()
        if wait:
            for job in self.jobs:
                job.wait(progress=False)
        return self.jobs


def _check_spaces(observation_space: Any) -> None:
    if not isinstance(observation_space, gymnasium.spaces.Box | gymnasium.spaces.Discrete |
                      gymnasium.spaces.MultiDiscrete | gymnasium.spaces.MultiBinary):
        raise InvalidRequest(f"cannot record {type(observation_space).__name__} observations as tensors; wrap the "
                             "environment in gymnasium.wrappers.FlattenObservation first")


class Recorder(gymnasium.Wrapper[Any, Any, Any, Any]):
    """Record every step of ``env`` into ``dataset`` (see the module docstring)."""

    def __init__(self, env: gymnasium.Env[Any, Any], dataset: Dataset, *,
                 episode_metadata: EpisodeMetadata | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 first_episode_id: int | None = None, unfinished: Literal["drop", "keep"] = "drop") -> None:
        super().__init__(env)
        _check_spaces(env.observation_space)
        self._stream = _Stream(dataset, batch_rows=batch_rows, episode_metadata=episode_metadata,
                               first_episode_id=first_episode_id)
        self._unfinished = unfinished
        self._episode: _Episode | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._end_unfinished()
        observation, info = self.env.reset(seed=seed, options=options)
        self._episode = self._stream.start(seed)
        self._episode.observations.append(np.asarray(observation))
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._episode is None:
            raise InvalidRequest("call reset() before step(): a recording starts with the reset observation")
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._episode.add(action, observation, reward, terminated, truncated, info)
        if terminated or truncated:
            self._stream.finish(self._episode)
            self._episode = None
        return observation, reward, terminated, truncated, info

    def _end_unfinished(self) -> None:
        if self._episode is not None and self._unfinished == "keep" and len(self._episode):
            self._episode.metadata["unfinished"] = True
            self._stream.finish(self._episode)
        self._episode = None

    def close(self, *, wait: bool = True) -> list[Job]:
        """Send what is complete (the unfinished episode is dropped or kept as ``unfinished``), wait
        for the ingests, close the environment; returns the upload jobs."""
        self._end_unfinished()
        try:
            return self._stream.close(wait=wait)
        finally:
            self.env.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VectorRecorder(gymnasium.vector.VectorWrapper):
    """Record every sub-environment of a vector environment; episodes are numbered as they start."""

    def __init__(self, env: gymnasium.vector.VectorEnv[Any, Any, Any], dataset: Dataset, *,
                 episode_metadata: EpisodeMetadata | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 first_episode_id: int | None = None) -> None:
        super().__init__(env)
        _check_spaces(env.single_observation_space)
        modes = getattr(gymnasium.vector, "AutoresetMode", None)  # gymnasium 1.0 only resets on the next step
        mode = env.metadata.get("autoreset_mode", modes.NEXT_STEP if modes else None)
        if modes is not None and mode not in (modes.NEXT_STEP, modes.SAME_STEP):
            raise InvalidRequest(f"autoreset mode {mode} is not supported; use NEXT_STEP or SAME_STEP")
        self._same_step = modes is not None and mode == modes.SAME_STEP
        self._stream = _Stream(dataset, batch_rows=batch_rows, episode_metadata=episode_metadata,
                               first_episode_id=first_episode_id)
        self._episodes: list[_Episode | None] = [None] * env.num_envs

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        # gymnasium annotates an int; its vector environments take one seed per sub-environment too
        observations, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        self._episodes = [self._begin(seeds[i], observations[i]) for i in range(self.num_envs)]
        return observations, info

    def _begin(self, seed: int | None, observation: Any) -> _Episode:
        episode = self._stream.start(seed)
        episode.observations.append(np.asarray(observation))
        return episode

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        for i in range(self.num_envs):
            episode = self._episodes[i]
            if episode is None:  # NEXT_STEP: this step only reset sub-environment i
                self._episodes[i] = self._begin(None, observations[i])
                continue
            done = bool(terminated[i] or truncated[i])
            final, step_info = observations[i], _sub_info(info, i)
            if self._same_step and done:  # the returned observation and info already belong to the next episode
                final = info["final_obs"][i]
                step_info = _sub_info(info.get("final_info", {}), i)
            episode.add(actions[i], final, rewards[i], terminated[i], truncated[i], step_info)
            if done:
                self._stream.finish(episode)
                self._episodes[i] = self._begin(None, observations[i]) if self._same_step else None
        return observations, rewards, terminated, truncated, info

    def close(self, *, wait: bool = True) -> list[Job]:  # type: ignore[override]
        """Send the complete episodes (unfinished ones are dropped), wait, close the environments."""
        try:
            return self._stream.close(wait=wait)
        finally:
            self.env.close()

    def __enter__(self) -> VectorRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sub_info(info: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Sub-environment ``index``'s scalars from a vector info dict (arrays with ``_key`` masks)."""
    out = {}
    for key, values in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}")
        if isinstance(values, np.ndarray) and values.ndim == 1 and (mask is None or mask[index]):
            out[key] = values[index]
    return out
