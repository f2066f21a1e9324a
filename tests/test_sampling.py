"""Seeded sampling and rebalancing in exports: exact where promised, the same rows for the same seed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from tuplehub.client import Client, F, InvalidRequest, Rebalance, Sampling
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.datasets import Dataset
from tuplehub.storage import sampling

from .conftest import admin_client
from .factories import episode_arrays


def test_keys_depend_on_seed_and_identity_only() -> None:
    ids = np.arange(1000, dtype=np.int64)
    assert np.array_equal(sampling.episode_keys(ids, 3), sampling.episode_keys(ids, 3))
    assert not np.array_equal(sampling.episode_keys(ids, 3), sampling.episode_keys(ids, 4))
    shuffled = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(np.sort(sampling.episode_keys(shuffled, 3)), np.sort(sampling.episode_keys(ids, 3)))
    names = np.array([f"ep-{i}" for i in range(50)], dtype=object)
    assert np.array_equal(sampling.episode_keys(names, 1), sampling.episode_keys(names.copy(), 1))
    assert sampling.smallest(sampling.episode_keys(ids, 3), 37).sum() == 37
    kept = sampling.below(sampling.row_keys(np.zeros(100_000, np.int64), np.arange(100_000), 9), 0.3).mean()
    assert 0.29 < kept < 0.31


@pytest.fixture(scope="module")
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    data = episode_arrays(episodes=40, length=30, seed=8)
    data["reward"] = np.where(np.random.default_rng(1).random(len(data["reward"])) < 0.05, 1.0, 0.0).astype(
        np.float32)  # sparse rewards
    return data


@pytest.fixture(scope="module")
def one_piece(hub: Client, arrays: dict[str, np.ndarray]) -> Dataset:
    dataset = hub.datasets.create(f"smp-{uuid.uuid4().hex[:8]}")
    dataset.upload(arrays).wait()
    return dataset


@pytest.fixture(scope="module")
def three_pieces(hub: Client, arrays: dict[str, np.ndarray]) -> Dataset:
    """The same rows, appended in three uploads: other segments, other blocks."""
    dataset = hub.datasets.create(f"smp-{uuid.uuid4().hex[:8]}")
    ids = arrays["episode_id"]
    for low, high in ((0, 13), (13, 29), (29, 40)):
        rows = (ids >= low) & (ids < high)
        dataset.upload({k: v[rows] for k, v in arrays.items()}, mode="append").wait()
    return dataset


def rows_of(dataset: Dataset, **options: object) -> set[tuple[int, int]]:
    out = dataset.export(**options).to_numpy()  # type: ignore[arg-type]
    return set(zip(out["episode_id"].tolist(), out["step"].tolist(), strict=True))


@pytest.mark.parametrize("sample", [
    Sampling(n=7, seed=1), Sampling(fraction=0.25, seed=2),
    Sampling(level="tuple", n=100, seed=3), Sampling(level="tuple", fraction=0.2, seed=4),
])
def test_the_same_seed_gives_the_same_rows_whatever_the_layout(one_piece: Dataset, three_pieces: Dataset,
                                                               sample: Sampling) -> None:
    first = rows_of(one_piece, sample=sample)
    assert first == rows_of(one_piece, sample=sample)
    assert first == rows_of(three_pieces, sample=sample)
    other = rows_of(one_piece, sample=sample.model_copy(update={"seed": sample.seed + 100}))
    assert other != first


def test_sizes_are_exact_where_promised(one_piece: Dataset, arrays: dict[str, np.ndarray]) -> None:
    episodes = {e for e, _ in rows_of(one_piece, sample=Sampling(n=7))}
    assert len(episodes) == 7
    quarter = {e for e, _ in rows_of(one_piece, sample=Sampling(fraction=0.25))}
    assert len(quarter) == 10
    assert len(rows_of(one_piece, sample=Sampling(level="tuple", n=100))) == 100
    fifth = len(rows_of(one_piece, sample=Sampling(level="tuple", fraction=0.2))) / len(arrays["reward"])
    assert 0.15 < fifth < 0.25
    assert len(rows_of(one_piece, sample=Sampling(level="tuple", n=10**6))) == len(arrays["reward"])


def test_sampling_comes_after_the_filters(one_piece: Dataset) -> None:
    even = F.episode_id.isin(list(range(0, 40, 2)))
    chosen = rows_of(one_piece, episodes=even, sample=Sampling(n=5, seed=9))
    assert len({e for e, _ in chosen}) == 5
    assert all(e % 2 == 0 for e, _ in chosen)
    late = rows_of(one_piece, where=F.step >= 10, sample=Sampling(level="tuple", n=50))
    assert len(late) == 50
    assert all(step >= 10 for _, step in late)


def test_rebalancing_keeps_every_rare_row_and_a_fraction_of_the_rest(one_piece: Dataset,
                                                                    arrays: dict[str, np.ndarray]) -> None:
    out = one_piece.export(rebalance=Rebalance(keep=F.reward > 0, rest_fraction=0.1, seed=5)).to_numpy()
    rewarded = int((arrays["reward"] > 0).sum())
    assert int((out["reward"] > 0).sum()) == rewarded  # every rewarded row
    rest = int((out["reward"] <= 0).sum()) / int((arrays["reward"] <= 0).sum())
    assert 0.07 < rest < 0.13
    again = one_piece.export(rebalance=Rebalance(keep=F.reward > 0, rest_fraction=0.1, seed=5)).to_numpy()
    np.testing.assert_array_equal(again["step"], out["step"])


def test_bad_sampling_requests_are_422(one_piece: Dataset) -> None:
    with pytest.raises(InvalidRequest, match="exactly one of fraction and n"):
        one_piece.export(sample={"fraction": 0.1, "n": 3})
    with pytest.raises(InvalidRequest, match=r"sample\.n"):
        one_piece.export(sample={"n": 0})
    with pytest.raises(InvalidRequest, match="nope"):
        one_piece.export(rebalance=Rebalance(keep=F.nope > 0, rest_fraction=0.5))


def test_an_episode_sample_ignores_how_the_filter_reached_the_catalog(three_pieces: Dataset) -> None:
    """An indexed filter may leave a segment with no episodes at all; the sample must not change."""
    indexed = rows_of(three_pieces, episodes=F.length > 11, sample=Sampling(n=3, seed=4))
    unindexed = rows_of(three_pieces, episodes=~(F.length <= 11), sample=Sampling(n=3, seed=4))
    assert indexed == unindexed
