"""Dataset cards: who made the data, how to cite it, and figures computed while it was ingested."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_client, admin_token
from .factories import episode_arrays


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def returns_of(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([arrays["reward"][arrays["episode_id"] == e].sum() for e in np.unique(arrays["episode_id"])],
                    dtype=np.float64)


def test_a_card_carries_provenance_and_ingest_figures(hub: Client) -> None:
    first, second = episode_arrays(episodes=6, length=9, seed=1), episode_arrays(episodes=4, length=5, seed=2,
                                                                                  first_id=6)
    dataset = hub.datasets.create(f"card-{uuid.uuid4().hex[:8]}", description="random walks", tags=["card"],
                                  authors=["Ada Lovelace"], license="CC-BY-4.0",
                                  citation="@misc{walks, title={Walks}}", behavior_policies=["uniform random"])
    dataset.upload(first).wait()
    dataset.upload(second, mode="append").wait()
    record = dataset.refresh().record
    assert (record.authors, record.license, record.behavior_policies) == (["Ada Lovelace"], "CC-BY-4.0",
                                                                          ["uniform random"])
    assert record.owner_name == "admin"
    stats = record.versions[-1].stats
    assert stats is not None
    returns = np.concatenate([returns_of(first), returns_of(second)])
    assert (stats.episodes, stats.transitions) == (10, len(first["reward"]) + len(second["reward"]))
    assert stats.returns is not None
    np.testing.assert_allclose([stats.returns.mean, stats.returns.std, stats.returns.min, stats.returns.max],
                               [returns.mean(), returns.std(), returns.min(), returns.max()], rtol=1e-5)
    assert stats.lengths is not None
    assert stats.lengths.max == 12  # the factory makes lengths 6..12 for length=9
    assert stats.terminated_share == pytest.approx(0.5)  # even episodes terminate, odd ones are truncated
    first_stats = record.versions[0].stats
    assert first_stats is not None
    assert first_stats.episodes == 6


def test_the_card_can_be_edited_and_shown(hub_server: EmbeddedServer, hub: Client) -> None:
    name = f"card-{uuid.uuid4().hex[:8]}"
    hub.datasets.create(name).upload(episode_arrays(episodes=3, length=4)).wait()
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    updated = runner.invoke(app, ["datasets", "update", name, "--author", "Grace Hopper", "--author", "Alan Turing",
                                  "--license", "MIT", "--policy", "scripted", "--url", hub_server.url])
    assert updated.exit_code == 0, updated.output
    shown = runner.invoke(app, ["show", name, "--url", hub_server.url])
    assert shown.exit_code == 0, shown.output
    for expected in ("Grace Hopper", "MIT", "scripted", "return: mean", "terminated:"):
        assert expected in shown.output
    assert hub.datasets.get(name).record.description == ""  # what was not given stayed
