"""What one request may cost: filter sizes in every place a filter is accepted, tensor sizes and
episode counts of an upload. Hostile input gets a clear 422 naming the limit, and kills nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuplehub.api.app import create_app
from tuplehub.client import Client, F, InvalidFilter, InvalidUpload, JobFailed, Rebalance
from tuplehub.client.datasets import Dataset
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.filters.arrow import compile_filter
from tuplehub.storage.filters.language import And, FilterNode, Or, measure
from tuplehub.storage.objects import open_object_store
from tuplehub.storage.settings import Settings
from tuplehub.storage.upload_limits import check_episode_count, decoded_size
from tuplehub.workers.jobs import ingest as ingest_module

from .conftest import hub_server_with
from .factories import episode_arrays, episode_record
from .test_filters import TUPLE_SCHEMA, expected_rows, kept_rows, random_leaf, tuple_data

MAX_LEAVES = 10
MAX_TENSOR_BYTES = 4096
MAX_EPISODES = 50


# A hub whose limits are small enough to reach with small data.
hub_server = hub_server_with(filter_max_leaves=MAX_LEAVES, max_tensor_bytes=MAX_TENSOR_BYTES,
                             max_upload_episodes=MAX_EPISODES)


@pytest.fixture(scope="module")
def dataset(admin: Client) -> Dataset:
    dataset = admin.datasets.create(f"lim-{uuid.uuid4().hex[:8]}")
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


def test_derives_refuse_a_filter_with_too_many_comparisons(admin: Client, dataset: Dataset) -> None:
    target = f"lim-{uuid.uuid4().hex[:8]}"
    for selection in ({"where": wide_or("step", MAX_LEAVES + 1)},
                      {"episodes": wide_or("length", MAX_LEAVES + 1)},
                      {"rebalance": Rebalance(keep=wide_or("step", MAX_LEAVES + 1), rest_fraction=0.5)}):
        refused(lambda selection=selection: admin.datasets.derive(
            target, [{"dataset": dataset.name, **selection}], renumber=True))
    admin.datasets.derive(target, [{"dataset": dataset.name, "episodes": wide_or("length", MAX_LEAVES)}]).wait()


def test_episode_listing_refuses_a_filter_with_too_many_comparisons(dataset: Dataset) -> None:
    refused(lambda: dataset.episodes(where=wide_or("length", MAX_LEAVES + 1)))
    assert dataset.episodes(where=wide_or("length", MAX_LEAVES)).total >= 0


def test_every_operation_that_takes_a_filter_is_covered_above(tmp_path: Path) -> None:
    """A new route taking a filter (say, metrics on a subset) must check its size too: add it here."""
    spec = create_app(Settings(_env_file=None, data_dir=tmp_path), "redis://unused").openapi()
    schemas = spec["components"]["schemas"]

    def named(node: object, seen: set[str]) -> set[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                name = value.rsplit("/", 1)[-1] if key == "$ref" else None
                if name is not None and name not in seen:
                    seen.add(name)
                    named(schemas[name], seen)
                elif name is None:
                    named(value, seen)
        elif isinstance(node, list):
            for value in node:
                named(value, seen)
        return seen

    taking = {f"{method.upper()} {path}" for path, operations in spec["paths"].items()
              for method, operation in operations.items()
              if "Compare" in named(operation.get("requestBody", {}), set())
              or any("filter" in (p.get("description") or "").lower() for p in operation.get("parameters", []))}
    assert taking == {"POST /api/v1/datasets/{name}/exports", "POST /api/v1/datasets/{name}/derive",
                      "GET /api/v1/datasets/{name}/versions/{version}/episodes"}

# --- uploads: tensor sizes and episode counts ------------------------------------------------

def zeros_upload(path: Path, *, rows: int, width: int, variable: bool = False, episodes: int = 1) -> Path:
    """``rows`` rows whose observation is ``width`` float32 zeros: a tiny file, big once decoded."""
    values = pa.array(np.zeros(rows * width, np.float32))
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    obs = pa.ListArray.from_arrays(offsets, values) if variable else pa.FixedSizeListArray.from_arrays(values, width)
    ids = np.arange(rows) * episodes // rows
    ends = np.append(ids[1:] != ids[:-1], True)
    pq.write_table(pa.table({"episode_id": ids, "observation": obs, "action": np.zeros(rows, np.float32),
                             "reward": np.zeros(rows, np.float32), "terminated": ends,
                             "truncated": np.zeros(rows, bool)}), path, compression="zstd")
    return path


@pytest.mark.parametrize("variable", [False, True], ids=["fixed-size", "variable"])
def test_tensors_above_the_limit_are_refused_naming_column_and_size(admin: Client, tmp_path: Path,
                                                                     variable: bool) -> None:
    dataset = admin.datasets.create(f"lim-{uuid.uuid4().hex[:8]}")
    fits = zeros_upload(tmp_path / "fits.parquet", rows=20, width=MAX_TENSOR_BYTES // 4, variable=variable)
    dataset.upload(fits).wait()
    wide = zeros_upload(tmp_path / "wide.parquet", rows=20, width=MAX_TENSOR_BYTES // 4 + 1, variable=variable)
    with pytest.raises(JobFailed) as failure:  # replace: an append of another width is refused at open
        dataset.upload(wide, mode="replace").wait()
    assert "column 'observation'" in str(failure.value)
    assert "1,025 values (4,100 bytes)" in str(failure.value)
    assert "TUPLEHUB_MAX_TENSOR_BYTES" in str(failure.value)
    assert failure.value.error["reason"] == "tensor-too-large"
    assert dataset.refresh().latest_version == 1  # nothing half-written


def test_the_tensor_limit_is_decided_from_the_footer_before_any_row_is_decoded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 MB of zeros in a 2 KB file: the footer's value counts give it away."""
    bomb = zeros_upload(tmp_path / "bomb.parquet", rows=8, width=2_000_000)
    assert bomb.stat().st_size < 2**14
    monkeypatch.setattr(ingest_module, "_batches", lambda *_: pytest.fail("rows were decoded"))
    objects = open_object_store((tmp_path / "objects").as_uri())
    with objects.open_write("bomb.parquet") as sink:
        sink.write(bomb.read_bytes())
    reader = ingest_module.UploadReader(objects, "bomb.parquet", "s", {}, max_tensor_bytes=4 * 2**20,
                                        max_episodes=10)
    with pytest.raises(InvalidUpload, match=r"2,000,000 values \(7\.6 MiB\)"):
        next(reader.steps())


def test_decoded_sizes_come_from_value_counts(tmp_path: Path) -> None:
    table = pa.table({"observation": pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(5 * 6, np.float64)), 3), 2),
        "action": pa.array([[1, 2]] * 5, pa.list_(pa.int32())), "reward": np.zeros(5, np.float32)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    size = decoded_size(pq.ParquetFile(tmp_path / "t.parquet").metadata)
    assert size.tensor_values == {"observation": 6, "action": 2}
    assert size.tensor_bytes == {"observation": 48, "action": 8}
    assert size.row_bytes == 48 + 8 + 4


def test_ingest_batches_are_sized_by_decoded_bytes(tmp_path: Path) -> None:
    """Rows of 1 MB: the old minimum of 64 rows a batch made 64 MB batches of a 16 MB budget."""
    upload = zeros_upload(tmp_path / "wide.parquet", rows=100, width=2**18)
    parquet = pq.ParquetFile(upload)
    batches = list(ingest_module._batches(parquet, decoded_size(parquet.metadata).row_bytes))
    assert sum(batch.num_rows for batch in batches) == 100
    assert max(batch.nbytes for batch in batches) <= ingest_module.BATCH_BYTES


def test_many_tiny_episodes_are_handled_in_bounded_steps(tmp_path: Path) -> None:
    episodes = 3 * ingest_module.EPISODES_PER_STEP + 7
    upload = zeros_upload(tmp_path / "tiny.parquet", rows=episodes, width=1, episodes=episodes)
    objects = open_object_store((tmp_path / "objects").as_uri())
    with objects.open_write("tiny.parquet") as sink:
        sink.write(upload.read_bytes())
    reader = ingest_module.UploadReader(objects, "tiny.parquet", "s", {}, max_tensor_bytes=4096,
                                        max_episodes=episodes)
    counts = [len(step.episodes) for step in reader.steps()]
    assert sum(counts) == episodes
    assert max(counts) <= ingest_module.EPISODES_PER_STEP

    over = ingest_module.UploadReader(objects, "tiny.parquet", "s", {}, max_tensor_bytes=4096,
                                      max_episodes=episodes - 1)
    with pytest.raises(InvalidUpload, match=f"row {episodes - 1}: the upload holds more than"):
        next(over.steps())  # refused before the first step: from the id column alone


def test_episodes_are_counted_across_batches() -> None:
    batches = [pa.record_batch({"episode_id": ids}) for ids in (["a", "a", "b"], [], ["b", "b", "c"])]
    check_episode_count(batches, max_episodes=3)
    with pytest.raises(InvalidUpload, match="row 5: the upload holds more than 2 episodes"):
        check_episode_count(batches, max_episodes=2)


def test_an_upload_with_too_many_episodes_is_refused(admin: Client, tmp_path: Path) -> None:
    dataset = admin.datasets.create(f"lim-{uuid.uuid4().hex[:8]}")
    dataset.upload(episode_arrays(episodes=MAX_EPISODES, length=2)).wait()
    with pytest.raises(JobFailed) as failure:
        dataset.upload(episode_arrays(episodes=MAX_EPISODES + 1, length=2), mode="replace").wait()
    assert f"more than {MAX_EPISODES} episodes" in str(failure.value)
    assert "TUPLEHUB_MAX_UPLOAD_EPISODES" in str(failure.value)
    assert failure.value.error["reason"] == "too-many-episodes"
    assert dataset.refresh().latest_version == 1


def test_the_upload_limits_do_not_apply_to_derived_versions(admin: Client) -> None:
    """A merge of stored versions is no upload: its episodes each passed the limit when they came in."""
    parts = []
    for first_id in (0, MAX_EPISODES):
        part = admin.datasets.create(f"lim-{uuid.uuid4().hex[:8]}")
        part.upload(episode_arrays(episodes=MAX_EPISODES, length=2, first_id=first_id)).wait()
        parts.append(part.name)
    merged = f"lim-{uuid.uuid4().hex[:8]}"
    admin.datasets.derive(merged, [{"dataset": name} for name in parts]).wait()
    assert admin.datasets.get(merged).episodes(limit=1).total == 2 * MAX_EPISODES


def disk_use(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("catalog.db*"))


async def test_episode_rows_cost_little_disk_and_older_rows_still_read(tmp_path: Path) -> None:
    """2 M one-step episodes took 1.5 GB: the segment id and every integer were stored twice a row
    (482 bytes an episode here before, 331 after)."""
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    segment = f"{uuid.uuid4().hex}x1"
    try:
        records = [episode_record(segment, i, length=1) for i in range(20_000)]
        await catalog.put_episodes(records)
        assert await catalog.list_episodes(segment) == records
        old = episode_record("older", 0, metadata={"policy": "expert"})
        await catalog._run(lambda c: c.execute(  # a row as written before: the doc holds every field
            "INSERT INTO episodes VALUES (?, 0, '0', 10, 1.0, 0.0, 1.0, 0, 9, ?)", ("older", old.model_dump_json())),
            write=True)
        assert await catalog.list_episodes("older") == [old]
    finally:
        await catalog.aclose()
    used = disk_use(tmp_path)
    assert used / 20_000 < 400, f"{used / 20_000:.0f} bytes per episode"
