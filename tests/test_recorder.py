"""Recording environments into datasets: the contract, batches, interruptions and vector environments."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

from tuplehub.client import Client
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.datasets import Dataset
from tuplehub.client.recorder import Recorder, VectorRecorder

from .conftest import admin_client


class Progress(gymnasium.Wrapper):
    """Adds scalar and non-scalar info entries, as real environments do."""

    def step(self, action: Any) -> Any:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.t = getattr(self, "t", 0) + 1
        return observation, reward, terminated, truncated, {**info, "progress": self.t, "flag": True,
                                                           "text": "skipped", "vector": np.ones(2)}


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


@pytest.fixture
def dataset(hub: Client) -> Dataset:
    return hub.datasets.create(f"rec-{uuid.uuid4().hex[:8]}")


def play(env: gymnasium.Env, episodes: int, *, seed: int = 0) -> list[dict[str, list[Any]]]:
    """Run a random policy; what the environment said, step by step, per episode."""
    played = []
    env.action_space.seed(seed)
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        steps: dict[str, list[Any]] = {"observation": [observation], "reward": [], "terminated": [], "truncated": []}
        done = False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            steps["observation"].append(observation)
            steps["reward"].append(reward)
            steps["terminated"].append(terminated)
            steps["truncated"].append(truncated)
            done = terminated or truncated
        played.append(steps)
    return played


def exported(dataset: Dataset) -> dict[str, np.ndarray]:
    return dataset.refresh().export(next_observation=True).to_numpy()


def test_every_step_is_recorded_by_the_contract(dataset: Dataset) -> None:
    env = Progress(gymnasium.make("CartPole-v1", max_episode_steps=15))
    with Recorder(env, dataset, episode_metadata={"policy": "random"}, batch_rows=40) as recording:
        played = play(recording, 12)
    assert len(recording._stream.jobs) > 1  # sent in several batches while recording
    out = exported(dataset)
    assert dataset.record.versions[-1].episodes == 12
    for episode, steps in enumerate(played):
        rows = out["episode_id"] == episode
        np.testing.assert_array_equal(out["observation"][rows], np.stack(steps["observation"][:-1]))
        np.testing.assert_array_equal(out["next_observation"][rows], np.stack(steps["observation"][1:]))
        np.testing.assert_array_equal(out["terminated"][rows], steps["terminated"])
        np.testing.assert_array_equal(out["truncated"][rows], steps["truncated"])
        np.testing.assert_array_equal(out["step"][rows], np.arange(len(steps["reward"])))
    assert out["truncated"].sum() > 0
    assert out["terminated"].sum() > 0  # both endings occur, kept apart
    assert set(np.unique(out["info.progress"])) >= {1.0, 2.0}
    assert set(np.unique(out["info.flag"])) == {1.0}
    assert not any(name in out for name in ("info.text", "info.vector"))
    episodes = dataset.episodes(limit=100).items
    assert [e.metadata for e in episodes[:2]] == [{"policy": "random", "seed": 0}, {"policy": "random", "seed": 1}]


def test_an_interrupted_recording_keeps_complete_episodes_only(dataset: Dataset) -> None:
    def record_until_interrupted() -> None:
        with Recorder(gymnasium.make("CartPole-v1"), dataset) as recording:
            play(recording, 3)
            recording.reset(seed=99)
            recording.step(0)
            raise KeyboardInterrupt  # Ctrl-C in the middle of episode 3

    with pytest.raises(KeyboardInterrupt):
        record_until_interrupted()
    out = exported(dataset)
    assert sorted(np.unique(out["episode_id"]).tolist()) == [0, 1, 2]
    assert out["terminated"][-1] or out["truncated"][-1]  # no half episode at the end


def test_an_unfinished_episode_can_be_kept_and_is_marked(dataset: Dataset) -> None:
    with Recorder(gymnasium.make("CartPole-v1"), dataset, unfinished="keep") as recording:
        play(recording, 1)
        recording.reset(seed=5)
        for _ in range(3):
            recording.step(0)
    episodes = dataset.episodes(limit=10).items
    assert [e.termination for e in episodes] == [episodes[0].termination, "none"]
    assert episodes[1].metadata == {"seed": 5, "unfinished": True}
    assert episodes[1].length == 3


def test_a_second_recording_continues_the_episode_ids(dataset: Dataset) -> None:
    for _ in range(2):
        with Recorder(gymnasium.make("CartPole-v1"), dataset) as recording:
            play(recording, 2)
    assert [e.episode_id for e in dataset.episodes(limit=10).items] == [0, 1, 2, 3]


MODES = getattr(gymnasium.vector, "AutoresetMode", None)  # gymnasium 1.0 (d3rlpy's pin) has next-step only


@pytest.mark.parametrize("mode", [MODES.NEXT_STEP, MODES.SAME_STEP] if MODES else [None])
def test_vector_environments_record_each_sub_environment(dataset: Dataset, mode: object) -> None:
    options = {"vector_kwargs": {"autoreset_mode": mode}} if mode is not None else {}
    envs = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync", **options)
    with VectorRecorder(envs, dataset, batch_rows=50) as recording:
        recording.reset(seed=0)
        recording.action_space.seed(0)
        for _ in range(120):
            recording.step(recording.action_space.sample())
    out = exported(dataset)
    assert np.all(out["reward"] == 1.0)  # a NEXT_STEP reset step (reward 0) is never a row
    ends = out["terminated"] | out["truncated"]
    ids = out["episode_id"]
    assert all(ends[ids == episode][-1] for episode in np.unique(ids))  # only complete episodes, each ends once
    assert all(ends[ids == episode].sum() == 1 for episode in np.unique(ids))
    final = out["next_observation"][out["terminated"]]
    fell = (np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 0.2095)
    assert fell.all()  # the true final state, not the next episode's reset observation
    assert len(np.unique(ids)) >= 6


def test_recording_again_continues_after_the_highest_id(dataset: Dataset) -> None:
    envs = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    with VectorRecorder(envs, dataset) as recording:  # episodes finish, and are stored, out of id order
        recording.reset(seed=0)
        recording.action_space.seed(1)
        for _ in range(80):
            recording.step(recording.action_space.sample())
    highest = max(e.episode_id for e in dataset.episodes(limit=1000).items)
    with Recorder(gymnasium.make("CartPole-v1"), dataset) as recording:
        play(recording, 1)
    assert dataset.episodes(limit=1000).items[-1].episode_id == highest + 1
