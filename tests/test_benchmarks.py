"""Benchmarks: faithful descriptions of environments, content ids, rebuilding, families, dataset links."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from tuplehub.client import Client, NotFound
from tuplehub.client.benchmarks import BenchmarkMismatch, describe_env, make_env
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.storage.benchmarks import BenchmarkSpec, SeedPolicy, space_from_json, space_to_json
from tuplehub.storage.errors import InvalidRequest

from .conftest import admin_client


class Unrecorded(gymnasium.Wrapper):
    """A wrapper that does not record its constructor arguments (and lives in a test module)."""


@pytest.fixture
def pendulum() -> Iterator[gymnasium.Env]:
    with gymnasium.wrappers.TimeAwareObservation(gymnasium.make("Pendulum-v1", g=9.81)) as env:
        yield env


# --- describing and rebuilding, no server ---------------------------------------------------------

def test_the_same_environment_gets_the_same_id(pendulum: gymnasium.Env) -> None:
    again = gymnasium.wrappers.TimeAwareObservation(gymnasium.make("Pendulum-v1", g=9.81))
    other = gymnasium.wrappers.TimeAwareObservation(gymnasium.make("Pendulum-v1", g=3.71))
    assert describe_env(pendulum).content_id() == describe_env(again).content_id()
    assert describe_env(pendulum).content_id() != describe_env(other).content_id()
    spec = describe_env(pendulum)
    assert spec.env_id == "Pendulum-v1"
    assert spec.kwargs == {"g": 9.81}
    assert [w.entry_point for w in spec.wrappers] == ["gymnasium.wrappers.stateful_observation:TimeAwareObservation"]
    assert spec.max_episode_steps == 200
    assert spec.requirements["gymnasium"] == gymnasium.__version__
    # The id is a hash of canonical JSON: a round trip through JSON keeps it.
    assert BenchmarkSpec.model_validate_json(spec.model_dump_json()).content_id() == spec.content_id()


def test_make_rebuilds_the_described_environment(pendulum: gymnasium.Env) -> None:
    spec = describe_env(pendulum)
    rebuilt = make_env(spec)
    assert rebuilt.observation_space == pendulum.observation_space
    assert rebuilt.action_space == pendulum.action_space
    first, _ = rebuilt.reset(seed=3)
    expected, _ = pendulum.reset(seed=3)
    np.testing.assert_array_equal(first, expected)  # same dynamics, same wrappers, same seed
    assert rebuilt.unwrapped.g == 9.81


def test_what_cannot_be_described_is_refused_with_the_reason() -> None:
    gymnasium.register("tuplehub-test/Lambda-v0", entry_point=lambda: gymnasium.envs.classic_control.CartPoleEnv())
    with pytest.raises(InvalidRequest, match="Python object"):
        describe_env(gymnasium.make("tuplehub-test/Lambda-v0"))
    with pytest.raises(InvalidRequest, match="does not record its constructor arguments"):
        describe_env(Unrecorded(gymnasium.make("CartPole-v1")))
    with pytest.raises(InvalidRequest, match="JSON"):
        describe_env(gymnasium.make("Pendulum-v1", g=np.float32(9.81)))


def test_a_changed_environment_is_detected_at_make(pendulum: gymnasium.Env) -> None:
    spec = describe_env(pendulum)
    tampered = spec.model_copy(update={"observation_space": {**spec.observation_space, "high": 99.0}})
    with pytest.raises(BenchmarkMismatch, match="observation_space"):
        make_env(tampered)


def test_make_never_imports_what_is_not_installed(pendulum: gymnasium.Env) -> None:
    spec = describe_env(pendulum)
    foreign = spec.model_copy(update={"entry_point": "evil_package_xyz.envs:Env",
                                      "requirements": {**spec.requirements, "evil-package-xyz": "6.6.6"}})
    with pytest.raises(InvalidRequest, match=r"evil-package-xyz==6\.6\.6"):
        make_env(foreign)


@pytest.mark.parametrize("space", [
    spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
    spaces.Box(np.array([0, -np.inf]), np.array([1, np.inf]), dtype=np.float64),
    spaces.Box(0, 255, shape=(4, 4, 3), dtype=np.uint8),
    spaces.Discrete(5, start=-2),
    spaces.MultiDiscrete([3, 4]),
    spaces.MultiBinary(6),
    spaces.Dict({"position": spaces.Box(-1, 1, shape=(2,)), "mode": spaces.Discrete(3)}),
    spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, shape=(1,))]),
])
def test_spaces_round_trip_through_json(space: spaces.Space) -> None:
    assert space_from_json(space_to_json(space)) == space


# --- through the server --------------------------------------------------------------------------------

@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def test_storing_twice_gives_the_same_id_and_datasets_link_to_it(hub: Client, pendulum: gymnasium.Env) -> None:
    seeds = SeedPolicy(kind="sequential", seed=100)
    first = hub.benchmarks.create_from_env(pendulum, name="pendulum g=9.81", seed_policy=seeds)
    second = hub.benchmarks.create_from_env(pendulum, seed_policy=seeds)
    assert first.id == second.id == describe_env(pendulum, seed_policy=seeds).content_id()
    assert hub.benchmarks.create_from_env(pendulum).id != first.id  # the seed policy is part of the spec
    assert [first.seed_for(0), first.seed_for(7)] == [100, 107]
    name = f"pend-{uuid.uuid4().hex[:8]}"
    hub.datasets.create(name, benchmark=first.id)
    assert [d.name for d in first.datasets().items] == [name]
    assert [d.name for d in hub.datasets.list(benchmark=first.id).items] == [name]
    assert hub.datasets.get(name).record.benchmark == first.id
    env = hub.benchmarks.get(first.id).make()
    assert env.observation_space == pendulum.observation_space


def test_a_parameter_sweep_is_listable_by_its_parameters(hub: Client) -> None:
    family = f"tuplehub-test/Sweep{uuid.uuid4().hex[:6]}-v0"
    gymnasium.register(family, entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
                       max_episode_steps=50)
    ids = {}
    for g in (1.62, 3.71, 9.81):
        with gymnasium.make(family, g=g) as env:
            ids[g] = hub.benchmarks.create_from_env(env, name=f"g={g}").id
    listed = hub.benchmarks.list(family=family)
    assert {b.id for b in listed.items} == set(ids.values())
    assert listed.total == 3
    [mars] = hub.benchmarks.list(family=family, params={"g": 3.71}).items
    assert mars.id == ids[3.71]
    assert hub.benchmarks.list(family=family, params={"g": 2.0}).total == 0


def test_benchmarks_follow_the_sharing_rules(hub_server: EmbeddedServer, hub: Client) -> None:
    password = "bench-Passphrase-1"
    names = [f"b-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        hub.users.create(name, password)
    with Client(hub_server.url) as alice, Client(hub_server.url) as bob:
        alice.login(names[0], password, remember=False)
        bob.login(names[1], password, remember=False)
        with gymnasium.make("Pendulum-v1", g=4.2) as env:
            private = alice.benchmarks.create_from_env(env)
        with pytest.raises(NotFound):
            bob.benchmarks.get(private.id)
        with pytest.raises(NotFound):  # nor may bob link a dataset to what he cannot see
            bob.datasets.create(f"x-{uuid.uuid4().hex[:8]}", benchmark=private.id)
        assert private.id not in {b.id for b in bob.benchmarks.list(limit=1000).items}
        private.publish(public=True)
        assert bob.benchmarks.get(private.id).id == private.id
        with pytest.raises(Exception, match="only the owner") as caught:
            bob.benchmarks.get(private.id).set_references(random_return=-1, expert_return=0)
        assert caught.value.status == 403
        private.set_references(random_return=-1200.0, expert_return=-150.0)
        assert bob.benchmarks.get(private.id).record.expert_return == -150.0


def test_benchmark_commands(hub_server: EmbeddedServer, hub: Client) -> None:
    import json

    from typer.testing import CliRunner

    from tuplehub.client.cli import app

    from .conftest import admin_token

    with gymnasium.make("Pendulum-v1", g=5.5) as env:
        benchmark = hub.benchmarks.create_from_env(env, name="cli")
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    listed = runner.invoke(app, ["benchmarks", "list", "--family", "Pendulum-v1", "--param", "g=5.5", "--json",
                                 "--url", hub_server.url])
    assert listed.exit_code == 0, listed.output
    assert [b["id"] for b in json.loads(listed.output)["items"]] == [benchmark.id]
    shown = runner.invoke(app, ["benchmarks", "show", benchmark.id, "--url", hub_server.url])
    assert shown.exit_code == 0, shown.output
    assert '"g": 5.5' in shown.output


@pytest.mark.parametrize("space", [{"type": "Discrete", "n": 0}, {"type": "Dict", "spaces": {"a": 5}},
                                   {"type": "MultiBinary", "n": -1}, {"type": "Nope"}])
def test_a_bad_space_description_is_a_422(hub: Client, pendulum: gymnasium.Env, space: dict) -> None:
    spec = describe_env(pendulum).model_dump(mode="json")
    response = hub.benchmarks._http.post("/benchmarks", json={"spec": {**spec, "action_space": space}})
    assert response.status_code == 422, response.text


def test_kwargs_must_be_plain_json_and_render_mode_is_not_part_of_the_spec(hub: Client) -> None:
    spec = describe_env(gymnasium.make("Pendulum-v1")).model_dump(mode="json")
    body = json.dumps({"spec": {**spec, "kwargs": {"g": float("nan")}}})  # Python writes NaN; JSON has none
    response = hub.benchmarks._http.post("/benchmarks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    with gymnasium.make("Pendulum-v1", render_mode="rgb_array") as shown:
        assert describe_env(shown).content_id() == describe_env(gymnasium.make("Pendulum-v1")).content_id()


def test_integer_bounds_survive_the_round_trip() -> None:
    box = spaces.Box(np.iinfo(np.int64).min, np.iinfo(np.int64).max, shape=(2,), dtype=np.int64)
    assert space_from_json(space_to_json(box)) == box
