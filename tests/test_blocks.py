"""Tuple blocks: cutting rows into blocks, next observations from tails, zone maps, IPC round trips."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from tuplehub.storage.blocks import BlockBuilder, BlockRecord, decode, encode, next_observations, zone_map
from tuplehub.storage.contract import UploadLayout, inspect_upload, normalize_batch
from tuplehub.storage.episodes import EpisodeSplitter
from tuplehub.storage.errors import InvalidUpload
from tuplehub.storage.filters import F, compile_filter
from tuplehub.storage.filters.prune import may_match
from tuplehub.storage.schema import SHAPE_KEY, TensorSpec, TupleSchema, column_to_numpy, numpy_to_column

from .factories import episode_arrays

SEGMENT = "segment-1"

# ---------------------------------------------------------------------------------------------
# Helpers: an upload as numpy arrays, run through the real ingest steps
# ---------------------------------------------------------------------------------------------


def tensor(values: np.ndarray) -> pa.Array:
    """Per-row values of shape (n, *shape) as a plain column or nested fixed-size lists."""
    if values.ndim == 1:
        return pa.array(values)
    array: pa.Array = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


@dataclass(frozen=True)
class Kind:
    """How an upload's observations look."""

    dtype: str
    shape: tuple[int, ...]


KINDS = {
    "vector-float32": Kind("float32", (3,)),
    "vector-float64": Kind("float64", (4,)),
    "scalar-float64": Kind("float64", ()),
    "matrix-int64": Kind("int64", (2, 3)),
}


def make_upload(kind: Kind, *, seed: int = 0, episodes: int = 7, length: int = 6,
                next_observation: bool = True) -> dict[str, np.ndarray]:
    """Per-step arrays of ragged episodes with observations of ``kind`` and an info column with nulls."""
    size = int(np.prod(kind.shape))
    arrays = episode_arrays(episodes=episodes, length=length, obs_dim=size, act_dim=2, seed=seed,
                            dtype="float32" if kind.dtype == "int64" else kind.dtype)
    n = len(arrays["reward"])
    for name in ("observation", "next_observation"):
        values = arrays[name]
        if kind.dtype == "int64":
            values = np.round(values * 10).astype(np.int64)
        arrays[name] = values.reshape(n, *kind.shape)
    if not next_observation:
        del arrays["next_observation"]
    rng = np.random.default_rng(seed + 100)
    arrays["info.battery"] = np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n))
    return arrays


def upload_batch(arrays: dict[str, np.ndarray]) -> pa.RecordBatch:
    columns = {name: tensor(values) for name, values in arrays.items() if name != "info.battery"}
    battery = arrays["info.battery"]
    columns["info.battery"] = pa.array(battery, mask=np.isnan(battery))
    return pa.record_batch(columns)


def split(batch: pa.RecordBatch, cuts: Sequence[int]) -> list[pa.RecordBatch]:
    bounds = [0, *cuts, batch.num_rows]
    return [batch.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


@dataclass
class Ingested:
    layout: UploadLayout
    blocks: list[BlockRecord]
    rows: pa.Table  # what the splitter handed to the builder, concatenated

    @property
    def schema(self) -> TupleSchema:
        return self.layout.schema


def ingest(arrays: dict[str, np.ndarray], *, block_rows: int, cuts: Sequence[int] = ()) -> Ingested:
    """inspect -> normalize -> EpisodeSplitter -> BlockBuilder, batch by batch, as the ingest job does."""
    batch = upload_batch(arrays)
    layout = inspect_upload(batch.schema, batch)
    splitter = EpisodeSplitter(layout)
    builder = BlockBuilder(layout.schema, SEGMENT, block_rows=block_rows)
    blocks: list[BlockRecord] = []
    tables = []
    for piece in split(batch, cuts):
        table = splitter.feed(normalize_batch(piece, layout, splitter.rows))
        tables.append(table)
        blocks += builder.add(table)
    blocks += builder.finish()
    splitter.close()
    return Ingested(layout, blocks, pa.concat_tables(tables))


def batch_cuts(n: int, seed: int) -> list[int]:
    """A few batch boundaries, including one-row batches."""
    rng = np.random.default_rng(seed)
    cuts = set(rng.choice(np.arange(1, n), size=min(6, n - 1), replace=False).tolist())
    cuts |= {1, 2} if n > 3 else set()
    return sorted(cuts)


def episode_last_rows(arrays: dict[str, np.ndarray]) -> np.ndarray:
    ids = arrays["episode_id"]
    return np.r_[ids[1:] != ids[:-1], True]


def decoded_next_observations(ingested: Ingested) -> tuple[np.ndarray, np.ndarray]:
    """Next observations of every row, block by block (zeros where null), and where they are valid."""
    spec = ingested.schema.observation
    values, valid = [], []
    for block in ingested.blocks:
        column = next_observations(decode(block.data), decode(block.tail), ingested.schema)
        assert len(column) == block.rows
        is_valid = column.is_valid().to_numpy(zero_copy_only=False)
        block_values = np.zeros((len(column), *spec.shape), dtype=spec.dtype)
        block_values[is_valid] = column_to_numpy(column.filter(pa.array(is_valid)), spec)
        values.append(block_values)
        valid.append(is_valid)
    return np.concatenate(values), np.concatenate(valid)


BLOCK_ROWS = [1, 3, 4, 7, 1000]


# ---------------------------------------------------------------------------------------------
# BlockBuilder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_blocks_hold_exactly_the_input_rows(kind_name: str, block_rows: int) -> None:
    kind = KINDS[kind_name]
    arrays = make_upload(kind, seed=block_rows)
    n = len(arrays["reward"])
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(n, block_rows))
    stored = ingested.schema.stored_schema()
    decoded = pa.concat_tables([decode(block.data) for block in ingested.blocks])
    assert decoded.schema.equals(stored, check_metadata=True)
    assert decoded.equals(ingested.rows.select(stored.names).cast(stored))
    # And against the upload itself, with dtypes and shapes kept.
    observation = column_to_numpy(decoded.column("observation"), ingested.schema.observation)
    assert observation.dtype == np.dtype(kind.dtype)
    np.testing.assert_array_equal(observation, arrays["observation"])
    np.testing.assert_array_equal(column_to_numpy(decoded.column("action"), ingested.schema.action),
                                  arrays["action"])
    for name in ("step", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(decoded.column(name).to_numpy(), arrays[name])
    battery = decoded.column("info.battery").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(battery, arrays["info.battery"])  # nulls come back as NaN here
    ids = arrays["episode_id"]
    np.testing.assert_array_equal(decoded.column("episode").to_numpy(), np.cumsum(np.r_[0, ids[1:] != ids[:-1]]))


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("cut_seed", [0, 1])
def test_block_records_are_consistent(block_rows: int, cut_seed: int) -> None:
    arrays = make_upload(KINDS["vector-float32"], seed=cut_seed, episodes=6)
    n = len(arrays["reward"])
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(n, cut_seed))
    blocks = ingested.blocks
    assert [block.seq for block in blocks] == list(range(len(blocks)))
    assert [block.row_start for block in blocks] == np.cumsum([0] + [b.rows for b in blocks[:-1]]).tolist()
    assert sum(block.rows for block in blocks) == n
    assert all(block.rows == block_rows for block in blocks[:-1])
    assert 1 <= blocks[-1].rows <= block_rows
    assert len(blocks) == -(-n // block_rows)
    for block in blocks:
        table = decode(block.data)
        episode = table.column("episode").to_numpy()
        assert block.segment == SEGMENT
        assert len(table) == block.rows
        assert (block.first_episode, block.last_episode) == (episode[0], episode[-1])
        # The tail lists each episode's last row in the block and the block's own last row.
        ends = np.flatnonzero(episode[1:] != episode[:-1])
        assert decode(block.tail).column("row").to_pylist() == [*ends.tolist(), block.rows - 1]


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_next_observations_are_reproduced_for_every_row(kind_name: str, block_rows: int) -> None:
    arrays = make_upload(KINDS[kind_name], seed=3)
    n = len(arrays["reward"])
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(n, 3))
    values, valid = decoded_next_observations(ingested)
    assert valid.all()
    assert values.dtype == arrays["next_observation"].dtype
    np.testing.assert_array_equal(values, arrays["next_observation"])


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_without_next_observation_only_episode_ends_are_missing(kind_name: str, block_rows: int) -> None:
    with_next = make_upload(KINDS[kind_name], seed=4)
    arrays = {name: values for name, values in with_next.items() if name != "next_observation"}
    n = len(arrays["reward"])
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(n, 4))
    values, valid = decoded_next_observations(ingested)
    last = episode_last_rows(arrays)
    np.testing.assert_array_equal(valid, ~last)
    np.testing.assert_array_equal(values[~last], with_next["next_observation"][~last])


def inside_rows(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose episode goes on at the next row."""
    return np.flatnonzero(~episode_last_rows(arrays))


INCONSISTENT_CASES = [
    (block_rows, where)
    for block_rows in BLOCK_ROWS
    for where in ("inside-block", "block-end", "first-row", "last-inside")
    # With one-row blocks every row ends a block; with 1000-row blocks no row inside an episode does.
    if (block_rows, where) not in ((1, "inside-block"), (1000, "block-end"))
]


@pytest.mark.parametrize(("block_rows", "where"), INCONSISTENT_CASES)
def test_inconsistent_next_observation_is_rejected(block_rows: int, where: str) -> None:
    arrays = make_upload(KINDS["vector-float64"], seed=5)
    n = len(arrays["reward"])
    inside = inside_rows(arrays)
    at_block_end = inside[(inside + 1) % block_rows == 0]
    candidates = {
        "inside-block": inside[(inside + 1) % block_rows != 0],
        "block-end": at_block_end,
        "first-row": inside[:1],
        "last-inside": inside[-1:],
    }[where]
    assert candidates.size, where
    row = int(candidates[len(candidates) // 2])
    arrays["next_observation"][row, 1] += 0.5
    with pytest.raises(InvalidUpload) as caught:
        ingest(arrays, block_rows=block_rows, cuts=batch_cuts(n, 5))
    assert caught.value.extra == {"column": "next_observation", "row": row, "reason": "inconsistent-next-observation"}


@pytest.mark.parametrize("block_rows", [1, 3, 1000])
def test_next_observation_at_an_episode_end_is_taken_as_given(block_rows: int) -> None:
    arrays = make_upload(KINDS["vector-float32"], seed=6)
    last = np.flatnonzero(episode_last_rows(arrays))
    arrays["next_observation"][last] = np.arange(last.size * 3, dtype=np.float32).reshape(-1, 3) + 1000
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(len(arrays["reward"]), 6))
    values, valid = decoded_next_observations(ingested)
    assert valid.all()
    np.testing.assert_array_equal(values, arrays["next_observation"])


# ---------------------------------------------------------------------------------------------
# Zone maps
# ---------------------------------------------------------------------------------------------


def true_bounds(values: np.ndarray) -> list[float] | list[list[float]]:
    """What a zone map should hold for ``values`` of one block: [min, max], or per-element lists.

    Integers stay exact ints (``.tolist()`` keeps the numpy kind), so large ids never round."""
    if values.ndim == 1:
        return [values.min().item(), values.max().item()]
    flat = values.reshape(len(values), -1)
    return [flat.min(axis=0).tolist(), flat.max(axis=0).tolist()]


@pytest.mark.parametrize("block_rows", [1, 3, 4, 7])
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_zone_maps_hold_true_bounds(kind_name: str, block_rows: int) -> None:
    arrays = make_upload(KINDS[kind_name], seed=7)
    ingested = ingest(arrays, block_rows=block_rows, cuts=batch_cuts(len(arrays["reward"]), 7))
    for block in ingested.blocks:
        rows = slice(block.row_start, block.row_start + block.rows)
        zones = block.zones
        assert zones["reward"] == true_bounds(arrays["reward"][rows].astype(np.float64))
        assert zones["step"] == true_bounds(arrays["step"][rows])
        assert zones["observation"] == true_bounds(arrays["observation"][rows])
        assert zones["action"] == true_bounds(arrays["action"][rows])
        battery = arrays["info.battery"][rows]
        battery = battery[~np.isnan(battery)]
        if battery.size:
            assert zones["info.battery"] == true_bounds(battery)
        else:
            assert "info.battery" not in zones
        assert json.loads(json.dumps(zones)) == json.loads(json.dumps(zone_map(decode(block.data),
                                                                                ingested.schema)))


def test_zone_maps_skip_boolean_tensors() -> None:
    schema = TupleSchema(episode_id="int", observation=TensorSpec(dtype="bool", shape=[2]),
                         action=TensorSpec(dtype="int8"), info={"contact": "bool"})
    table = pa.table({
        "episode": pa.array([0, 0], pa.int32()), "step": pa.array([4, 5]),
        "observation": numpy_to_column(np.array([[True, False], [False, False]]), schema.observation),
        "action": pa.array([-3, 2], pa.int8()), "reward": pa.array([0.5, -1.0]), "terminated": [False, True],
        "truncated": [False, False], "info.contact": pa.array([True, None]),
    }).cast(schema.stored_schema())
    assert zone_map(table, schema) == {"step": [4, 5], "reward": [-1.0, 0.5], "action": [-3, 2]}


# ---------------------------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("observation", "action"), [
    (TensorSpec(dtype="float64", shape=[3]), TensorSpec(dtype="int64", shape=[2])),
    (TensorSpec(dtype="float64", shape=[2, 3]), TensorSpec(dtype="int32")),
    (TensorSpec(dtype="int64", shape=[4]), TensorSpec(dtype="uint8", shape=[3])),
    (TensorSpec(dtype="float16"), TensorSpec(dtype="bool", shape=[2])),
    (TensorSpec(dtype="int16", shape=[1, 2, 2]), TensorSpec(dtype="float64")),
])
@pytest.mark.parametrize("n", [0, 1, 9])
def test_encode_decode_round_trip_keeps_dtypes(observation: TensorSpec, action: TensorSpec, n: int) -> None:
    schema = TupleSchema(episode_id="int", observation=observation, action=action, reward="float64",
                         info={"count": "int64", "level": "float32"})
    rng = np.random.default_rng(n)

    def values(spec: TensorSpec) -> np.ndarray:
        raw = rng.normal(size=(n, *spec.shape)) * 1000
        return raw > 0 if spec.dtype == "bool" else raw.astype(spec.dtype)

    obs, act = values(observation), values(action)
    table = pa.table({
        "episode": pa.array(np.arange(n) // 3, pa.int32()), "step": pa.array(np.arange(n) % 3),
        "observation": numpy_to_column(obs, observation), "action": numpy_to_column(act, action),
        "reward": pa.array(rng.normal(size=n)), "terminated": pa.array(np.zeros(n, bool)),
        "truncated": pa.array(np.zeros(n, bool)),
        "info.count": pa.array(np.arange(n) + 2**62, mask=np.arange(n) % 4 == 1),
        "info.level": pa.array(rng.normal(size=n).astype(np.float32)),
    }).cast(schema.stored_schema())
    data = encode(table)
    assert isinstance(data, bytes)
    back = decode(data)
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.equals(table)
    for name, spec, expected in (("observation", observation, obs), ("action", action, act)):
        array = column_to_numpy(back.column(name), spec)
        assert array.dtype == np.dtype(spec.dtype)
        assert array.shape == (n, *spec.shape)
        np.testing.assert_array_equal(array, expected)
    if len(observation.shape) >= 2:
        assert back.schema.field("observation").metadata[SHAPE_KEY] == json.dumps(observation.shape).encode()


def test_a_column_holding_nan_gets_no_zone_map() -> None:
    """``NaN != 5`` holds, so a range that leaves NaN out would let a ``ne`` filter skip a match."""
    schema = TupleSchema(episode_id="int", observation=TensorSpec(dtype="float32"), action=TensorSpec(dtype="int8"),
                         info={"x": "float64"})
    table = pa.table({
        "episode": pa.array([0, 0, 0], pa.int32()), "step": pa.array([0, 1, 2]),
        "observation": pa.array([0.0, 1.0, 2.0], pa.float32()), "action": pa.array([1, 2, 3], pa.int8()),
        "reward": pa.array([0.0, 0.0, 1.0]), "terminated": [False, False, True], "truncated": [False] * 3,
        "info.x": pa.array([5.0, float("nan"), 5.0]),
    }).cast(schema.stored_schema())
    zones = zone_map(table, schema)
    assert "info.x" not in zones
    assert may_match(F.info.x != 5, zones, schema)
    assert compile_filter(F.info.x != 5, "tuple", schema).apply(table).num_rows == 1
