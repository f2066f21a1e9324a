"""Derived datasets: saved exports, merges and splits made on the server, with lineage and content hashes."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client, F, InvalidRequest, JobFailed, Sampling
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.datasets import Dataset

from .conftest import admin_client, admin_token
from .factories import episode_arrays


@pytest.fixture(scope="module")
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def fresh() -> str:
    return f"dv-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def source(hub: Client) -> Dataset:
    arrays = episode_arrays(episodes=20, length=10, seed=3)
    dataset = hub.datasets.create(fresh())
    metadata = {e: {"policy": "expert" if e % 4 == 0 else "random"} for e in range(20)}
    dataset.upload(arrays, episode_metadata=metadata).wait()
    return dataset.refresh()


def latest(hub: Client, name: str):
    return hub.datasets.get(name).record.versions[-1]


def test_an_export_saved_as_a_dataset_keeps_episodes_metadata_and_lineage(hub: Client, source: Dataset) -> None:
    target = fresh()
    hub.datasets.derive(target, [{"dataset": source.name, "episodes": F.metadata.policy == "expert"}]).wait()
    version = latest(hub, target)
    assert version.episodes == 5
    episodes = hub.datasets.get(target).episodes(limit=100).items
    assert {e.episode_id for e in episodes} == {0, 4, 8, 12, 16}
    assert all(e.metadata == {"policy": "expert"} for e in episodes)
    expected = source.export(episodes=F.metadata.policy == "expert", next_observation=True).to_numpy()
    derived = hub.datasets.get(target).export(next_observation=True).to_numpy()
    for name in ("episode_id", "step", "observation", "action", "reward", "terminated", "truncated",
                 "next_observation"):
        np.testing.assert_array_equal(derived[name], expected[name], err_msg=name)
    assert version.lineage is not None
    [origin] = version.lineage.sources
    assert (origin.dataset, origin.version, origin.content_hash) == (source.name, 1,
                                                                     source.record.versions[-1].content_hash)
    assert version.content_hash is not None


def test_rebuilding_from_the_lineage_gives_the_same_content_hash(hub_server: EmbeddedServer, hub: Client,
                                                                 source: Dataset) -> None:
    target = fresh()
    hub.datasets.derive(target, [{"dataset": source.name, "episodes": F.length > 8,
                                  "sample": Sampling(n=6, seed=11)}]).wait()
    original = latest(hub, target)
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    shown = runner.invoke(app, ["lineage", target, "--url", hub_server.url])
    assert shown.exit_code == 0, shown.output
    assert f"{source.name}@1" in shown.output
    command = shown.output.split("rebuild with:\n")[1].splitlines()[0].strip()
    rebuild = runner.invoke(app, [*shlex.split(command)[1:], "--url", hub_server.url])
    assert rebuild.exit_code == 0, rebuild.output
    rebuilt = latest(hub, f"{target}-rebuilt")
    assert rebuilt.episodes == 6
    assert rebuilt.content_hash == original.content_hash


def test_the_content_hash_does_not_depend_on_how_the_upload_was_cut(hub: Client) -> None:
    arrays = episode_arrays(episodes=12, length=50, seed=6)
    hashes = set()
    for part_size in (2**16, 2**22):
        dataset = hub.datasets.create(fresh())
        dataset.upload(arrays, part_size=part_size).wait()
        hashes.add(latest(hub, dataset.name).content_hash)
    dataset = hub.datasets.create(fresh())
    for low, high in ((0, 5), (5, 12)):  # as two appended uploads, the version hash differs (two segments) ...
        rows = (arrays["episode_id"] >= low) & (arrays["episode_id"] < high)
        dataset.upload({k: v[rows] for k, v in arrays.items()}, mode="append").wait()
    assert len(hashes) == 1
    assert latest(hub, dataset.name).content_hash not in hashes
    merged = fresh()  # ... and deriving it back into one piece gives the one-piece hash
    hub.datasets.derive(merged, [{"dataset": dataset.name}]).wait()
    assert latest(hub, merged).content_hash in hashes


def test_merging_renumbers_and_remembers_origins(hub: Client, source: Dataset) -> None:
    other = hub.datasets.create(fresh())
    other.upload(episode_arrays(episodes=3, length=4, seed=9)).wait()
    target = fresh()
    with pytest.raises(JobFailed, match="episode"):  # the ids 0..2 occur in both
        hub.datasets.derive(target, [{"dataset": source.name}, {"dataset": other.name}]).wait()
    hub.datasets.merge(target, [source.name, other.name]).wait()
    episodes = hub.datasets.get(target).episodes(limit=100).items
    assert [e.episode_id for e in episodes] == list(range(23))
    assert episodes[20].metadata["source"] == {"dataset": other.name, "version": 1, "episode_id": 0}
    assert episodes[4].metadata == {"policy": "expert", "source": {"dataset": source.name, "version": 1,
                                                                   "episode_id": 4}}


def test_a_split_is_exact_disjoint_and_repeatable(hub: Client, source: Dataset) -> None:
    def split(seed: int) -> tuple[set[int], set[int]]:
        train, validation = fresh(), fresh()
        for job in hub.datasets.split(source.name, train=train, validation=validation, fraction=0.75, seed=seed):
            job.wait()
        return tuple({e.episode_id for e in hub.datasets.get(name).episodes(limit=100).items}  # type: ignore[return-value]
                     for name in (train, validation))

    train, validation = split(1)
    assert (len(train), len(validation)) == (15, 5)
    assert not train & validation
    assert train | validation == set(range(20))
    assert split(1) == (train, validation)
    assert split(2) != (train, validation)


def test_row_selections_cut_episodes_into_pieces(hub: Client, source: Dataset) -> None:
    where = (F.step >= 2) & (F.step < 5)
    with pytest.raises(InvalidRequest, match="set renumber"):
        hub.datasets.derive(fresh(), [{"dataset": source.name, "where": where}])
    target = fresh()
    hub.datasets.derive(target, [{"dataset": source.name, "where": where | (F.step >= 7)}], renumber=True).wait()
    expected = source.export(where=where | (F.step >= 7), next_observation=True).to_numpy()
    derived = hub.datasets.get(target).export(next_observation=True).to_numpy()
    for name in ("step", "observation", "action", "reward", "terminated", "next_observation"):
        np.testing.assert_array_equal(derived[name], expected[name], err_msg=name)
    episodes = hub.datasets.get(target).episodes(limit=1000).items
    breaks = (np.diff(expected["episode_id"]) != 0) | (np.diff(expected["step"]) != 1)
    assert len(episodes) == 1 + int(breaks.sum())  # one episode per run of consecutive steps
    first = episodes[0]
    assert (first.first_step, first.length, first.termination) == (2, 3, "truncated")  # cut, not terminal
    assert first.metadata["source"] == {"dataset": source.name, "version": 1, "episode_id": 0, "first_step": 2}
    assert first.metadata["policy"] == "expert"
    originals = {e.episode_id: e for e in source.episodes(limit=100).items}
    for piece in episodes:
        origin = originals[piece.metadata["source"]["episode_id"]]
        reaches_end = piece.first_step + piece.length - 1 == origin.last_step
        # a piece that reaches the real end keeps the real ending; any other was cut: truncated
        assert piece.termination == (origin.termination if reaches_end else "truncated")


def test_a_row_sample_saved_as_a_dataset_rebuilds_to_the_same_hash(hub: Client, source: Dataset) -> None:
    selection = {"dataset": source.name, "sample": Sampling(level="tuple", n=40, seed=3),
                 "rebalance": {"keep": (F.step == 0).to_json(), "rest_fraction": 0.5, "seed": 1}}
    first, second = fresh(), fresh()
    for target in (first, second):
        hub.datasets.derive(target, [selection], renumber=True).wait()
    assert latest(hub, first).episodes > 0
    assert latest(hub, first).content_hash == latest(hub, second).content_hash
    rows = hub.datasets.get(first).export().to_numpy()
    assert len(rows["reward"]) == 40


def test_what_a_derived_dataset_cannot_be_is_refused(hub: Client, source: Dataset) -> None:
    with pytest.raises(InvalidRequest, match="nope"):
        hub.datasets.derive(fresh(), [{"dataset": source.name, "where": F.nope > 1}], renumber=True)
    wide = hub.datasets.create(fresh())
    wide.upload(episode_arrays(episodes=2, length=4, obs_dim=7, seed=1)).wait()
    with pytest.raises(InvalidRequest, match="other columns or types"):
        hub.datasets.derive(fresh(), [{"dataset": source.name}, {"dataset": wide.name}], renumber=True)


def test_sources_without_next_observations_and_appended_pieces(hub: Client) -> None:
    plain = hub.datasets.create(fresh())
    plain.upload(episode_arrays(episodes=4, length=6, seed=2, next_observation=False)).wait()
    target = fresh()
    hub.datasets.derive(target, [{"dataset": plain.name}]).wait()
    assert latest(hub, target).episodes == 4
    # Renumbered pieces appended after existing episodes continue after the highest id.
    hub.datasets.derive(target, [{"dataset": plain.name, "where": F.step < 2}], mode="append", renumber=True).wait()
    ids = [e.episode_id for e in hub.datasets.get(target).episodes(limit=100).items]
    assert ids == [0, 1, 2, 3, 4, 5, 6, 7]
