"""What one request may cost: filter sizes in every place a filter is accepted, tensor sizes and
episode counts of an upload. Hostile input gets a clear 422 naming the limit, and kills nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tuplehub.client import Client, F, InvalidFilter, Rebalance
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.client.datasets import Dataset
from tuplehub.storage.filters.arrow import compile_filter
from tuplehub.storage.filters.language import And, FilterNode, Or, measure

from .conftest import admin_client, make_settings
from .factories import episode_arrays
from .test_filters import TUPLE_SCHEMA, expected_rows, kept_rows, random_leaf, tuple_data

MAX_LEAVES = 10


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[EmbeddedServer]:
    """A hub whose limits are small enough to reach with small data."""
    settings = make_settings(tmp_path_factory.mktemp("limits"), redis_url, filter_max_leaves=MAX_LEAVES)
    with serve_in_thread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def hub(limited_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(limited_server) as client:
        yield client


@pytest.fixture(scope="module")
def dataset(hub: Client) -> Dataset:
    dataset = hub.datasets.create(f"lim-{uuid.uuid4().hex[:8]}")
    dataset.upload(episode_arrays(episodes=4, length=6)).wait()
    return dataset.refresh()


def wide_or(field: str, leaves: int) -> Or:
    return Or(op="or", args=[F(field) == i for i in range(leaves)])


# --- a wide filter must not kill the process -------------------------------------------------

def test_a_20000_term_or_runs_without_crashing_the_process() -> None:
    """Arrow nested the old left-deep chain one level per term and overflowed the C stack (SIGSEGV).

    Run in a child process, so that a crash fails this test instead of killing pytest.
    """
    script = textwrap.dedent("""
        import pyarrow as pa
        from tuplehub.storage.filters.arrow import compile_filter
        from tuplehub.storage.filters.language import F, Or
        from tests.factories import SCHEMA
        node = Or(op="or", args=[F.step == i for i in range(20_000)])
        assert len(node.model_dump_json()) > 800_000
        kept = compile_filter(node, "tuple", SCHEMA).apply(pa.table({"step": pa.array(range(30_000))}))
        assert kept.column("step").to_pylist() == list(range(20_000)), kept.num_rows
        wide_and = ~Or(op="or", args=[~(F.step != i) for i in range(20_000)])
        assert compile_filter(wide_and, "tuple", SCHEMA).apply(pa.table({"step": pa.array([5, 25_000])})
                                                              ).column("step").to_pylist() == [25_000]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("seed", range(2))
def test_wide_and_nested_filters_keep_exactly_the_matching_rows(seed: int) -> None:
    """Chains longer than Arrow's are cut into pieces; the rows kept must not change."""
    rng = np.random.default_rng(seed)
    table, data = tuple_data(seed)

    def wide(level: int) -> FilterNode:
        args = [wide(level - 1) if level and rng.random() < 0.1 else random_leaf(rng, data)
                for _ in range(int(rng.integers(65, 140)))]
        return And(op="and", args=args) if rng.random() < 0.5 else Or(op="or", args=args)

    for _ in range(2):
        node = wide(1)
        assert kept_rows(node, table, "tuple", TUPLE_SCHEMA) == expected_rows(node, data, "tuple", TUPLE_SCHEMA)
        assert kept_rows(~node, table, "tuple", TUPLE_SCHEMA) == expected_rows(~node, data, "tuple", TUPLE_SCHEMA)


def test_size_is_measured_without_recursion() -> None:
    node: FilterNode = F.reward > 0
    for _ in range(5_000):  # far deeper than Python's recursion limit
        node = ~node
    assert measure(node).depth == 5_001
    with pytest.raises(InvalidFilter, match="deeper than 32"):
        compile_filter(node, "tuple", TUPLE_SCHEMA)
    assert measure(wide_or("reward", 7) & (F.step > 1)).leaves == 8


# --- the leaf limit, in every place a filter is accepted ------------------------------------

def refused(call: Callable[[], object]) -> InvalidFilter:
    with pytest.raises(InvalidFilter, match="TUPLEHUB_FILTER_MAX_LEAVES") as caught:
        call()
    assert f"at most {MAX_LEAVES}" in caught.value.detail
    assert caught.value.extra["limit"] == MAX_LEAVES
    return caught.value


def test_exports_refuse_a_filter_with_too_many_comparisons(dataset: Dataset) -> None:
    too_wide, fits = wide_or("step", MAX_LEAVES + 1), wide_or("step", MAX_LEAVES - 1)
    refused(lambda: dataset.export(where=too_wide))
    refused(lambda: dataset.export(episodes=wide_or("length", MAX_LEAVES + 1)))
    refused(lambda: dataset.export(rebalance=Rebalance(keep=too_wide, rest_fraction=0.5)))
    # An `in` is one comparison, however many values it holds.
    rows = dataset.export(where=fits & F.step.isin(range(1000))).to_arrow()
    assert 0 < len(set(rows.column("step").to_pylist())) <= MAX_LEAVES - 1


def test_derives_refuse_a_filter_with_too_many_comparisons(hub: Client, dataset: Dataset) -> None:
    target = f"lim-{uuid.uuid4().hex[:8]}"
    for selection in ({"where": wide_or("step", MAX_LEAVES + 1)},
                      {"episodes": wide_or("length", MAX_LEAVES + 1)},
                      {"rebalance": Rebalance(keep=wide_or("step", MAX_LEAVES + 1), rest_fraction=0.5)}):
        refused(lambda selection=selection: hub.datasets.derive(
            target, [{"dataset": dataset.name, **selection}], renumber=True))
    hub.datasets.derive(target, [{"dataset": dataset.name, "episodes": wide_or("length", MAX_LEAVES)}]).wait()


def test_episode_listing_refuses_a_filter_with_too_many_comparisons(dataset: Dataset) -> None:
    refused(lambda: dataset.episodes(where=wide_or("length", MAX_LEAVES + 1)))
    assert dataset.episodes(where=wide_or("length", MAX_LEAVES)).total >= 0
