"""Converters: D4RL dicts, pandas frames and Minari datasets, each on a round trip."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from tuplehub.client import Client
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.converters.d4rl import from_d4rl, to_d4rl
from tuplehub.client.converters.minari import episodes_from_minari, to_minari

from .conftest import admin_client
from .factories import episode_arrays


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def test_d4rl_round_trip_keeps_boundaries_and_flags() -> None:
    arrays = episode_arrays(episodes=5, length=7, seed=2)
    arrays["terminated"][arrays["episode_id"] == 2] = arrays["truncated"][arrays["episode_id"] == 2]  # both set
    d4rl = to_d4rl(arrays)
    assert not (d4rl["terminals"] & d4rl["timeouts"]).any()  # terminal wins, as D4RL readers expect
    back = from_d4rl(d4rl)
    for name in ("observation", "action", "reward", "terminated", "next_observation", "step"):
        np.testing.assert_array_equal(back[name], arrays[name], err_msg=name)
    np.testing.assert_array_equal(np.unique(back["episode_id"], return_counts=True)[1],
                                  np.unique(arrays["episode_id"], return_counts=True)[1])


def test_d4rl_keeps_the_unfinished_tail_and_never_crosses_episodes() -> None:
    d4rl = {"observations": np.arange(10, dtype=np.float32).reshape(5, 2), "actions": np.zeros((5, 1)),
            "rewards": np.ones(5), "terminals": np.array([0, 1, 0, 0, 0], bool),
            "timeouts": np.array([0, 0, 0, 1, 0], bool)}
    arrays = from_d4rl(d4rl)
    assert arrays["episode_id"].tolist() == [0, 0, 1, 1, 2]  # the step after the last flag is kept
    assert arrays["step"].tolist() == [0, 1, 0, 1, 0]
    assert arrays["truncated"].tolist() == [False, False, False, True, False]
    again = to_d4rl(arrays)
    assert again["timeouts"].tolist() == [False, False, False, True, True]  # the open end is marked


def test_pandas_round_trip_through_the_server(hub: Client) -> None:
    arrays = episode_arrays(episodes=4, length=6, obs_dim=3, act_dim=2, seed=4)
    dataset = hub.datasets.create(f"pd-{uuid.uuid4().hex[:8]}")
    import pandas as pd

    from tuplehub.client.converters.frames import to_frame

    frame = to_frame(arrays)
    assert {"observation[0]", "observation[2]", "action[1]"} <= set(frame.columns)
    assert isinstance(frame, pd.DataFrame)
    dataset.upload(frame).wait()
    back = dataset.export(next_observation=True).to_pandas()
    pd.testing.assert_frame_equal(back[frame.columns.tolist()], frame, check_dtype=False)


def _minari_dataset(folder: Path, dataset_id: str):
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gymnasium.make("CartPole-v1", max_episode_steps=30)
    env.action_space.seed(1)
    buffers = []
    for episode in range(6):
        observations = [env.reset(seed=episode)[0]]
        actions, rewards, terminations, truncations = [], [], [], []
        done = False
        while not done:
            action = env.action_space.sample()
            observation, reward, terminated, truncated, _ = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            done = terminated or truncated
        buffers.append(EpisodeBuffer(id=episode, observations=np.stack(observations), actions=np.array(actions),
                                     rewards=rewards, terminations=terminations, truncations=truncations, infos={}))
    return minari.create_dataset_from_buffers(dataset_id, buffers, env=env, data_format="arrow",
                                              algorithm_name="random", author="tuplehub tests",
                                              author_email="tests@example.org", code_permalink="https://example.org",
                                              description="random CartPole")


@pytest.mark.filterwarnings("ignore:.*is set to None:UserWarning")
def test_minari_round_trip_is_identical(hub: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    source = _minari_dataset(tmp_path, "tuplehub/cartpole/random-v0")
    dataset = hub.datasets.create(f"mn-{uuid.uuid4().hex[:8]}")
    dataset.upload(episodes_from_minari(source)).wait()
    arrays = dataset.export(next_observation=True).to_numpy()
    copy = to_minari(arrays, "tuplehub/cartpole/copy-v0", env=gymnasium.make("CartPole-v1", max_episode_steps=30),
                     algorithm_name="random", author="tuplehub tests", author_email="tests@example.org",
                     code_permalink="https://example.org", description="random CartPole, via tuplehub")
    originals = list(source.iterate_episodes())
    copies = list(copy.iterate_episodes())
    assert [e.id for e in copies] == [e.id for e in originals]
    for original, copied in zip(originals, copies, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(copied, field), getattr(original, field), err_msg=field)


def _cartpole_export(hub: Client, *, episodes: int = 12) -> tuple[dict[str, np.ndarray], gymnasium.Space]:
    from tuplehub.client.recorder import Recorder

    env = gymnasium.make("CartPole-v1", max_episode_steps=25)
    dataset = hub.datasets.create(f"d3-{uuid.uuid4().hex[:8]}")
    with Recorder(env, dataset) as recording:
        recording.action_space.seed(0)
        for episode in range(episodes):
            recording.reset(seed=episode)
            done = False
            while not done:
                *_, terminated, truncated, _ = recording.step(recording.action_space.sample())
                done = terminated or truncated
    return dataset.export(next_observation=True).to_numpy(), env.action_space


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_d3rlpy_gets_every_episode_with_the_benchmarks_action_space(hub: Client) -> None:
    from tuplehub.client.converters.d3rlpy import to_d3rlpy

    arrays, action_space = _cartpole_export(hub)
    last = np.flatnonzero(np.diff(arrays["episode_id"], append=-1) != 0)
    arrays["truncated"][last[0]] = True  # terminated and truncated at once: d3rlpy must still accept it
    arrays["terminated"][last[0]] = True
    dataset = to_d3rlpy(arrays, action_space)
    assert len(dataset.episodes) == 12
    assert sum(len(e.rewards) for e in dataset.episodes) == len(arrays["reward"])
    assert dataset.episodes[0].terminated  # terminal wins over truncation
    ends = arrays["terminated"][last] & ~arrays["truncated"][last]
    assert [e.terminated for e in dataset.episodes][1:] == ends[1:].tolist()
    assert dataset.dataset_info.action_size == 2
    # A subset that never takes action 1 still has CartPole's two actions (inferring would say one).
    left_only = to_d3rlpy({k: v[arrays["action"] == 0] for k, v in arrays.items()}, action_space)
    assert left_only.dataset_info.action_size == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
def test_a_d3rlpy_algorithm_trains_on_an_export(hub: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import d3rlpy

    monkeypatch.chdir(tmp_path)  # d3rlpy writes its logs under the working directory

    from tuplehub.client.converters.d3rlpy import to_d3rlpy

    arrays, action_space = _cartpole_export(hub, episodes=8)
    dataset = to_d3rlpy(arrays, action_space)
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=16).create(device="cpu")
    algo.fit(dataset, n_steps=20, n_steps_per_epoch=20, show_progress=False, save_interval=10**9,
             experiment_name=f"tuplehub-{uuid.uuid4().hex[:6]}")
    actions = algo.predict(arrays["observation"][:5])
    assert actions.shape == (5,)
    assert set(actions.tolist()) <= {0, 1}


def test_torch_sees_transitions_in_memory_and_streamed(hub: Client) -> None:
    import torch

    from tuplehub.client.converters.torch import TransitionDataset, TransitionStream

    arrays = episode_arrays(episodes=5, length=8, obs_dim=4, seed=12)
    dataset = hub.datasets.create(f"pt-{uuid.uuid4().hex[:8]}")
    dataset.upload(arrays).wait()
    export = dataset.export(next_observation=True)
    transitions = TransitionDataset(export.to_numpy())
    assert len(transitions) == len(arrays["reward"])
    first = transitions[0]
    assert first["observation"].shape == (4,)
    assert first["terminated"].dtype == torch.float32
    streamed = list(TransitionStream(lambda: dataset.export(next_observation=True)))
    rows = torch.cat([batch["reward"] for batch in streamed])
    assert torch.equal(rows, torch.from_numpy(arrays["reward"]))
    assert streamed[0]["next_observation"].shape[1:] == (4,)


def test_converters_never_join_steps_across_a_gap() -> None:
    arrays = episode_arrays(episodes=1, length=9, ragged=False, seed=1)
    kept = {k: v[np.isin(arrays["step"], [0, 1, 2, 6, 7])] for k, v in arrays.items()}  # a filtered export
    d4rl = to_d4rl(kept)
    assert d4rl["timeouts"].tolist() == [False, False, True, False, True]  # each run ends; none joins the next
