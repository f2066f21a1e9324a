"""The tuple contract: upload columns (inspect_upload), per-batch normalisation, and episode rules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tuplehub.storage.contract import UploadLayout, inspect_upload, normalize_batch
from tuplehub.storage.episodes import EpisodeSplitter, EpisodeStats
from tuplehub.storage.errors import InvalidUpload
from tuplehub.storage.schema import SHAPE_KEY, TensorSpec, column_to_numpy

from .factories import episode_arrays

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def tensor(values: np.ndarray, *, variable: bool = False) -> pa.Array:
    """Per-row values of shape (n, *shape) as (nested) fixed-size lists, or variable lists."""
    values = np.asarray(values)
    if values.ndim == 1:
        return pa.array(values)
    if variable:
        value_type: pa.DataType = pa.from_numpy_dtype(values.dtype)
        for _ in range(values.ndim - 1):
            value_type = pa.list_(value_type)
        return pa.array(values.tolist(), value_type)
    array: pa.Array = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def upload(n: int = 4, **columns: Any) -> pa.RecordBatch:
    """A valid one-episode upload of ``n`` rows; keyword columns replace (or, given None, drop) defaults."""
    rng = np.random.default_rng(n)
    defaults: dict[str, Any] = {
        "episode_id": pa.array(np.zeros(n, dtype=np.int64)),
        "observation": tensor(rng.normal(size=(n, 3)).astype(np.float32)),
        "action": pa.array(rng.normal(size=n).astype(np.float32)),
        "reward": pa.array(rng.normal(size=n)),
        "terminated": pa.array(np.arange(n) == n - 1),
        "truncated": pa.array(np.zeros(n, dtype=bool)),
    }
    merged = {**defaults, **columns}
    return pa.record_batch({name: value for name, value in merged.items() if value is not None})


def rejection(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(InvalidUpload) as caught:
        call(*args)
    assert caught.value.code == "invalid-upload"
    return caught.value.extra


def inspect(batch: pa.RecordBatch) -> UploadLayout:
    return inspect_upload(batch.schema, batch)


def normalize(batch: pa.RecordBatch, first_row: int = 0) -> dict[str, pa.Array]:
    return normalize_batch(batch, inspect(batch), first_row)


# ---------------------------------------------------------------------------------------------
# inspect_upload
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["episode_id", "observation", "action", "reward", "terminated", "truncated"])
def test_missing_required_column(column: str) -> None:
    batch = upload(**{column: None})
    assert rejection(inspect, batch) == {"column": column, "reason": "missing-column"}


@pytest.mark.parametrize("column", ["foo", "info.", "infos.x", "next_obs", "Reward", "episode"])
def test_unknown_column(column: str) -> None:
    batch = upload(**{column: pa.array([0.0] * 4)})
    assert rejection(inspect, batch) == {"column": column, "reason": "unknown-column"}


@pytest.mark.parametrize("column", ["reward", "observation", "info.x"])
def test_duplicate_column(column: str) -> None:
    batch = upload(**{"info.x": pa.array([1.0] * 4)})
    schema = batch.schema.append(batch.schema.field(column))
    assert rejection(inspect_upload, schema, None) == {"column": column, "reason": "duplicate-column"}


@pytest.mark.parametrize(("column", "values"), [
    ("reward", pa.array(["1", "2", "3", "4"])),
    ("reward", pa.array([True] * 4)),
    ("episode_id", pa.array([0.0] * 4)),
    ("episode_id", pa.array([b"a"] * 4)),
    ("step", pa.array([0.0, 1.0, 2.0, 3.0])),
    ("terminated", pa.array(["no"] * 4)),
    ("truncated", pa.array(["no"] * 4)),
    ("info.x", pa.array(["a"] * 4)),
    ("info.x", tensor(np.zeros((4, 2)))),
    ("observation", pa.array(["a"] * 4)),
    ("observation", pa.array([["a", "b"]] * 4, pa.list_(pa.string(), 2))),
    ("action", pa.array([{"a": 1}] * 4)),
    ("next_observation", tensor(np.zeros((4, 3), np.float64))),
    ("next_observation", tensor(np.zeros((4, 4), np.float32))),
    ("next_observation", tensor(np.zeros((4, 3, 1), np.float32))),
    ("next_observation", pa.array(np.zeros(4, np.float32))),
])
def test_wrong_types(column: str, values: pa.Array) -> None:
    batch = upload(**{column: values})
    assert rejection(inspect, batch) == {"column": column, "reason": "wrong-type"}


def test_next_observation_matching_the_observation_is_accepted() -> None:
    batch = upload(step=pa.array(np.arange(4)), next_observation=tensor(np.zeros((4, 3), np.float32)))
    layout = inspect(batch)
    assert (layout.has_step, layout.has_next_observation) == (True, True)
    assert (inspect(upload()).has_step, inspect(upload()).has_next_observation) == (False, False)


@pytest.mark.parametrize(("values", "expected"), [
    (tensor(np.zeros((4, 3), np.float64)), TensorSpec(dtype="float64", shape=[3])),
    (tensor(np.zeros((4, 3), np.int64)), TensorSpec(dtype="int64", shape=[3])),
    (tensor(np.zeros((4, 2), np.uint8)), TensorSpec(dtype="uint8", shape=[2])),
    (tensor(np.zeros((4, 2), np.float16)), TensorSpec(dtype="float16", shape=[2])),
    (tensor(np.zeros((4, 2), bool)), TensorSpec(dtype="bool", shape=[2])),
    (tensor(np.zeros((4, 3, 4), np.float32)), TensorSpec(dtype="float32", shape=[3, 4])),
    (tensor(np.zeros((4, 2, 3, 2), np.int32)), TensorSpec(dtype="int32", shape=[2, 3, 2])),
    (tensor(np.zeros(4, np.float64)), TensorSpec(dtype="float64", shape=[])),
    (tensor(np.zeros(4, np.int64)), TensorSpec(dtype="int64", shape=[])),
    (tensor(np.zeros((4, 5), np.float64), variable=True), TensorSpec(dtype="float64", shape=[5])),
    (tensor(np.zeros((4, 3, 4), np.int64), variable=True), TensorSpec(dtype="int64", shape=[3, 4])),
    (pa.array([[1.0, 2.0]] * 4, pa.large_list(pa.float32())), TensorSpec(dtype="float32", shape=[2])),
])
def test_observation_and_action_keep_dtype_and_shape(values: pa.Array, expected: TensorSpec) -> None:
    for column in ("observation", "action"):
        layout = inspect(upload(**{column: values}))
        assert getattr(layout.schema, column) == expected


def test_declared_shape_of_a_flat_column_is_kept() -> None:
    batch = upload(observation=tensor(np.zeros((4, 12), np.float32)))
    field = batch.schema.field("observation").with_metadata({SHAPE_KEY: b"[3, 4]"})
    schema = batch.schema.set(batch.schema.get_field_index("observation"), field)
    assert inspect_upload(schema, None).schema.observation == TensorSpec(dtype="float32", shape=[3, 4])
    field = field.with_metadata({SHAPE_KEY: b"[5, 4]"})
    schema = batch.schema.set(batch.schema.get_field_index("observation"), field)
    assert rejection(inspect_upload, schema, None) == {"column": "observation", "reason": "wrong-shape"}


@pytest.mark.parametrize("first", [None, "empty"])
def test_variable_lists_need_a_first_row(first: str | None) -> None:
    batch = upload(observation=tensor(np.zeros((4, 3)), variable=True))
    first_batch = batch.slice(0, 0) if first else None
    assert rejection(inspect_upload, batch.schema, first_batch) == {"column": "observation", "reason": "wrong-type"}


@pytest.mark.parametrize(("arrow_type", "expected"), [
    (pa.int8(), "int"), (pa.uint64(), "int"), (pa.string(), "str"), (pa.large_string(), "str"),
])
def test_episode_id_type(arrow_type: pa.DataType, expected: str) -> None:
    ids = pa.array([0] * 4 if expected == "int" else ["a"] * 4, arrow_type)
    assert inspect(upload(episode_id=ids)).schema.episode_id == expected


@pytest.mark.parametrize(("arrow_type", "expected"), [
    (pa.float32(), "float32"), (pa.float64(), "float64"), (pa.int32(), "float64"), (pa.float16(), "float64"),
])
def test_reward_type(arrow_type: pa.DataType, expected: str) -> None:
    assert inspect(upload(reward=pa.array([1, 2, 3, 4], arrow_type))).schema.reward == expected


def test_info_columns_keep_their_dtypes() -> None:
    batch = upload(**{"info.battery": pa.array([0.5] * 4, pa.float32()), "info.count": pa.array([1] * 4, pa.int16()),
                      "info.contact": pa.array([True] * 4), "info.x.y": pa.array([1] * 4, pa.uint64())})
    assert inspect(batch).schema.info == {"battery": "float32", "count": "int16", "contact": "bool", "x.y": "uint64"}


# ---------------------------------------------------------------------------------------------
# normalize_batch
# ---------------------------------------------------------------------------------------------


def test_normalized_columns_have_the_stored_types() -> None:
    batch = upload(episode_id=pa.array([3, 3, 3, 3], pa.int32()), step=pa.array([0, 1, 2, 3], pa.int8()),
                   observation=tensor(np.arange(24, dtype=np.int64).reshape(4, 2, 3), variable=True),
                   reward=pa.array([1, 2, 3, 4], pa.int32()), terminated=pa.array([0, 0, 0, 1], pa.int8()),
                   truncated=pa.array([0.0, 0.0, 0.0, 0.0]), **{"info.count": pa.array([1, None, 3, 4], pa.int16())})
    layout = inspect(batch)
    out = normalize_batch(batch, layout, 0)
    assert out["episode_id"].type == pa.int64()
    assert out["step"].type == pa.int64()
    assert out["observation"].type == pa.list_(pa.int64(), 6)
    np.testing.assert_array_equal(column_to_numpy(out["observation"], layout.schema.observation),
                                  np.arange(24).reshape(4, 2, 3))
    assert out["reward"].type == pa.float64()
    assert out["terminated"].to_pylist() == [False, False, False, True]
    assert out["truncated"].to_pylist() == [False] * 4
    assert out["info.count"].to_pylist() == [1, None, 3, 4]  # info columns may hold nulls
    strings = upload(episode_id=pa.array(["a"] * 4))
    assert normalize(strings)["episode_id"].type == pa.large_string()


FIRST_ROWS = [0, 1000]


def ragged_rows(lengths: Sequence[int]) -> pa.Array:
    return pa.array([[float(i)] * k for i, k in enumerate(lengths)], pa.list_(pa.float32()))


@pytest.mark.parametrize("first_row", FIRST_ROWS)
@pytest.mark.parametrize(("lengths", "row"), [([3, 3, 3, 2, 3], 3), ([3, 4, 3, 3, 3], 1), ([3, 3, 3, 3, 0], 4)])
def test_ragged_vectors(lengths: list[int], row: int, first_row: int) -> None:
    n = len(lengths)
    batch = upload(n, observation=tensor(np.zeros((n, 3)), variable=True))
    layout = inspect(batch)
    bad = batch.set_column(batch.schema.get_field_index("observation"), "observation", ragged_rows(lengths))
    assert rejection(normalize_batch, bad, layout, first_row) == {
        "column": "observation", "row": first_row + row, "reason": "ragged"}


@pytest.mark.parametrize("first_row", FIRST_ROWS)
def test_ragged_inner_vectors(first_row: int) -> None:
    values = np.zeros((4, 2, 3)).tolist()
    values[2][1] = [0.0, 0.0]
    ragged = pa.array(values, pa.list_(pa.list_(pa.float64())))
    batch = upload(action=tensor(np.zeros((4, 2, 3)), variable=True))
    layout = inspect(batch)
    bad = batch.set_column(batch.schema.get_field_index("action"), "action", ragged)
    assert rejection(normalize_batch, bad, layout, first_row) == {"column": "action", "row": first_row + 2,
                                                                  "reason": "ragged"}


def with_value(column: str, row: int, value: float, element: int = 0, n: int = 6) -> pa.RecordBatch:
    """An upload whose ``column`` holds ``value`` at ``row`` (and ``element`` for tensors)."""
    rng = np.random.default_rng(1)
    shapes = {"reward": (n,), "observation": (n, 3), "action": (n, 2), "next_observation": (n, 3)}
    values = rng.normal(size=shapes[column])
    if values.ndim == 1:
        values[row] = value
    else:
        values[row, element] = value
    extra = {"observation": tensor(np.zeros((n, 3)))} if column == "next_observation" else {}
    return upload(n, **{**extra, column: tensor(values)})


@pytest.mark.parametrize("first_row", FIRST_ROWS)
@pytest.mark.parametrize(("column", "row", "element"), [
    ("reward", 0, 0), ("reward", 5, 0), ("observation", 3, 2), ("observation", 0, 1), ("action", 4, 1),
    ("next_observation", 2, 0),
])
@pytest.mark.parametrize(("value", "reason"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_values(column: str, row: int, element: int, value: float, reason: str, first_row: int) -> None:
    batch = with_value(column, row, value, element)
    assert rejection(normalize, batch, first_row) == {"column": column, "row": first_row + row, "reason": reason}


def test_first_non_finite_value_is_reported() -> None:
    values = np.zeros((6, 3), np.float32)
    values[4, 0] = np.inf
    values[2, 2] = np.nan
    assert rejection(normalize, upload(6, observation=tensor(values)), 10) == {
        "column": "observation", "row": 12, "reason": "nan"}


def test_huge_finite_values_are_accepted() -> None:
    values = np.full((4, 3), np.finfo(np.float64).max)  # their sum overflows, but each one is finite
    out = normalize(upload(observation=tensor(values), reward=pa.array([np.finfo(np.float64).max] * 4)))
    assert np.isfinite(column_to_numpy(out["observation"], TensorSpec(dtype="float64", shape=[3]))).all()


@pytest.mark.parametrize("first_row", FIRST_ROWS)
@pytest.mark.parametrize(("column", "values", "row"), [
    ("reward", pa.array([0.0, None, 1.0, 2.0]), 1),
    ("episode_id", pa.array([0, 0, 0, None]), 3),
    ("terminated", pa.array([False, False, None, True]), 2),
    ("step", pa.array([0, None, 2, 3]), 1),
    ("observation", pa.array([[0.0] * 3, [0.0] * 3, None, [0.0] * 3], pa.list_(pa.float32(), 3)), 2),
    ("action", pa.array([None, 1.0, 2.0, 3.0], pa.float32()), 0),
])
def test_nulls(column: str, values: pa.Array, row: int, first_row: int) -> None:
    assert rejection(normalize, upload(**{column: values}), first_row) == {
        "column": column, "row": first_row + row, "reason": "null"}


@pytest.mark.parametrize("variable", [False, True], ids=["fixed", "variable"])
def test_null_element_inside_a_vector(variable: bool) -> None:
    rows: list[list[float | None]] = [[0.0, 1.0, 2.0] for _ in range(4)]
    rows[2][1] = None
    values = pa.array(rows, pa.list_(pa.float32()) if variable else pa.list_(pa.float32(), 3))
    assert rejection(normalize, upload(observation=values), 100) == {
        "column": "observation", "row": 102, "reason": "null"}


@pytest.mark.parametrize("flag", ["terminated", "truncated"])
@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int64(), pa.uint8(), pa.float64()])
def test_flags_given_as_zero_or_one(flag: str, arrow_type: pa.DataType) -> None:
    values = [0, 0, 0, 1] if flag == "terminated" else [0, 0, 0, 0]
    batch = upload(**{flag: pa.array(values, arrow_type)})
    assert normalize(batch)[flag].to_pylist() == [bool(v) for v in values]


@pytest.mark.parametrize("first_row", FIRST_ROWS)
@pytest.mark.parametrize(("flag", "values", "row"), [
    ("terminated", pa.array([0, 0, 2, 1]), 2),
    ("truncated", pa.array([0, -1, 0, 0], pa.int8()), 1),
    ("terminated", pa.array([0.0, 0.0, 0.0, 0.5]), 3),
])
def test_flags_other_than_zero_or_one_are_rejected(flag: str, values: pa.Array, row: int, first_row: int) -> None:
    assert rejection(normalize, upload(**{flag: values}), first_row) == {
        "column": flag, "row": first_row + row, "reason": "not-boolean"}


# ---------------------------------------------------------------------------------------------
# EpisodeSplitter
# ---------------------------------------------------------------------------------------------


def arrays_batch(arrays: dict[str, np.ndarray]) -> pa.RecordBatch:
    return pa.record_batch({name: tensor(values) for name, values in arrays.items()})


def split(batch: pa.RecordBatch, cuts: Sequence[int]) -> list[pa.RecordBatch]:
    bounds = [0, *cuts, batch.num_rows]
    return [batch.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def run_splitter(batch: pa.RecordBatch, cuts: Sequence[int]) -> tuple[list[EpisodeStats], pa.Table]:
    """Feed ``batch`` in pieces cut at ``cuts``, as ingest does; the episodes and the stored rows."""
    layout = inspect(batch)
    splitter = EpisodeSplitter(layout)
    episodes: list[EpisodeStats] = []
    tables = []
    for piece in split(batch, cuts):
        tables.append(splitter.feed(normalize_batch(piece, layout, splitter.rows)))
        episodes += splitter.collect()
    episodes += splitter.close()
    assert splitter.rows == batch.num_rows
    return episodes, pa.concat_tables(tables)


def splitter_error(batch: pa.RecordBatch, cuts: Sequence[int]) -> dict[str, Any]:
    with pytest.raises(InvalidUpload) as caught:
        run_splitter(batch, cuts)
    return caught.value.extra


def expected_episodes(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    ids = arrays["episode_id"]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    steps = arrays.get("step")
    out = []
    for index, (a, b) in enumerate(zip(starts, ends, strict=True)):
        reward = arrays["reward"][a:b].astype(np.float64)
        episode_id = ids[a].item() if isinstance(ids[a], np.generic) else ids[a]
        out.append({
            "index": index, "episode_id": episode_id, "first_row": int(a), "length": int(b - a),
            "return_": pytest.approx(float(reward.sum()), rel=1e-9, abs=1e-9),
            "reward_min": float(reward.min()), "reward_max": float(reward.max()),
            "first_step": int(steps[a]) if steps is not None else 0,
            "last_step": int(steps[b - 1]) if steps is not None else int(b - a - 1),
            "terminated": bool(arrays["terminated"][b - 1]), "truncated": bool(arrays["truncated"][b - 1]),
        })
    return out


def stats_dict(stats: EpisodeStats) -> dict[str, Any]:
    keys = ("index", "episode_id", "first_row", "length", "return_", "reward_min", "reward_max", "first_step",
            "last_step", "terminated", "truncated")
    return {key: getattr(stats, key) for key in keys}


def random_upload(seed: int, *, ids: str = "int", step_offset: bool = True) -> dict[str, np.ndarray]:
    """Episodes of varied length; steps start anywhere; some episodes end neither way."""
    arrays = episode_arrays(episodes=7, length=9, seed=seed, first_id=40)
    rng = np.random.default_rng(seed)
    arrays.pop("next_observation")
    ids_ = arrays["episode_id"]
    starts = np.flatnonzero(np.r_[True, ids_[1:] != ids_[:-1]])
    if step_offset:
        offsets = rng.integers(0, 50, size=len(starts))
        arrays["step"] = arrays["step"] + np.repeat(offsets, np.diff(np.r_[starts, len(ids_)]))
    last = np.r_[starts[1:], len(ids_)] - 1
    arrays["terminated"][last[2]] = arrays["truncated"][last[2]] = False  # an episode that simply stops
    if ids == "str":
        arrays["episode_id"] = np.array([f"ep-{i}" for i in ids_], dtype=object)
    return arrays


CUT_STYLES = ["one-batch", "at-episode-ends", "inside-episodes", "mixed", "single-rows", "random"]


def cuts_for(style: str, ids: np.ndarray) -> list[int]:
    """Batch boundaries (row numbers) of one style; "inside" ones split an episode across batches."""
    n = len(ids)
    starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    inside = np.flatnonzero(ids[1:] == ids[:-1]) + 1
    if style == "one-batch":
        return []
    if style == "at-episode-ends":
        return starts.tolist()
    if style == "inside-episodes":
        return inside[::3].tolist()
    if style == "mixed":  # a boundary, a split, a one-row batch and a batch that holds several episodes
        return sorted({int(starts[0]), int(inside[4]), int(inside[4]) + 1, int(starts[1]), int(starts[4]) + 2})
    if style == "single-rows":
        return list(range(1, n))
    return sorted(np.random.default_rng(9).choice(np.arange(1, n), size=8, replace=False).tolist())


@pytest.mark.parametrize("ids", ["int", "str"])
@pytest.mark.parametrize("style", CUT_STYLES)
def test_episode_stats_across_batches(style: str, ids: str) -> None:
    arrays = random_upload(seed=CUT_STYLES.index(style), ids=ids)
    cuts = cuts_for(style, arrays["episode_id"])
    episodes, stored = run_splitter(arrays_batch(arrays), cuts)
    assert [stats_dict(e) for e in episodes] == expected_episodes(arrays)
    ids_ = arrays["episode_id"]
    index = np.cumsum(np.r_[0, ids_[1:] != ids_[:-1]])
    np.testing.assert_array_equal(stored.column("episode").to_numpy(), index)
    assert stored.column("episode").type == pa.int32()
    np.testing.assert_array_equal(stored.column("step").to_numpy(), arrays["step"])
    np.testing.assert_array_equal(stored.column("reward").to_numpy(), arrays["reward"])
    assert "episode_id" not in stored.column_names


@pytest.mark.parametrize("style", ["inside-episodes", "mixed"])
def test_cut_styles_split_episodes(style: str) -> None:
    ids = random_upload(seed=0)["episode_id"]
    cuts = cuts_for(style, ids)
    assert any(ids[c - 1] == ids[c] for c in cuts)


@pytest.mark.parametrize("style", CUT_STYLES)
def test_steps_are_numbered_when_the_upload_has_none(style: str) -> None:
    arrays = random_upload(seed=4, step_offset=False)
    steps = arrays.pop("step")
    cuts = cuts_for(style, arrays["episode_id"])
    episodes, stored = run_splitter(arrays_batch(arrays), cuts)
    np.testing.assert_array_equal(stored.column("step").to_numpy(), steps)
    assert [(e.first_step, e.last_step) for e in episodes] == [(0, e.length - 1) for e in episodes]


def episodes_upload(ids: Sequence[Any], steps: Sequence[int] | None = None, *,
                    terminated: Sequence[int] = (), truncated: Sequence[int] = ()) -> pa.RecordBatch:
    """An upload with the given ids and steps; ``terminated``/``truncated`` list the rows that set them."""
    n = len(ids)
    flags = {name: pa.array(np.isin(np.arange(n), rows)) for name, rows in
             (("terminated", terminated), ("truncated", truncated))}
    step = None if steps is None else pa.array(steps, pa.int64())
    return upload(n, episode_id=pa.array(ids), step=step, **flags)


SPLITTER_ERRORS: list[tuple[str, pa.RecordBatch, list[int], dict[str, Any]]] = [
    ("duplicate", episodes_upload([0, 0, 0, 1], [0, 1, 1, 0]), [],
     {"column": "step", "row": 2, "reason": "duplicate-step"}),
    ("duplicate-at-start", episodes_upload([0, 0, 1, 1, 1], [0, 1, 5, 5, 6]), [],
     {"column": "step", "row": 3, "reason": "duplicate-step"}),
    ("duplicate-across-batches", episodes_upload([0, 0, 0], [0, 1, 1]), [2],
     {"column": "step", "row": 2, "reason": "duplicate-step"}),
    ("duplicate-across-later-batches", episodes_upload([0, 0, 0, 0, 0], [3, 4, 5, 5, 6]), [1, 3],
     {"column": "step", "row": 3, "reason": "duplicate-step"}),
    ("gap", episodes_upload([0, 0, 0], [0, 1, 3]), [],
     {"column": "step", "row": 2, "reason": "step-out-of-order"}),
    ("disorder", episodes_upload([0, 0, 0, 0], [0, 2, 1, 3]), [],
     {"column": "step", "row": 1, "reason": "step-out-of-order"}),
    ("backwards", episodes_upload([5, 5, 7, 7], [0, 1, 4, 3]), [],
     {"column": "step", "row": 3, "reason": "step-out-of-order"}),
    ("gap-across-batches", episodes_upload([0, 0, 0, 0], [0, 1, 3, 4]), [2],
     {"column": "step", "row": 2, "reason": "step-out-of-order"}),
    ("backwards-across-batches", episodes_upload([0, 0, 0], [0, 1, 0]), [2],
     {"column": "step", "row": 2, "reason": "step-out-of-order"}),
    ("gap-later-in-second-batch", episodes_upload([0, 0, 0, 0, 1], [0, 1, 2, 4, 0]), [2],
     {"column": "step", "row": 3, "reason": "step-out-of-order"}),
    ("after-terminated", episodes_upload([0, 0, 0, 1], [0, 1, 2, 0], terminated=[1]), [],
     {"column": "terminated", "row": 2, "reason": "step-after-end"}),
    ("after-truncated", episodes_upload([0, 0, 1, 1, 1], None, truncated=[3]), [],
     {"column": "truncated", "row": 4, "reason": "step-after-end"}),
    ("after-terminated-second-batch", episodes_upload([0, 0, 1, 1, 1], None, terminated=[2]), [2],
     {"column": "terminated", "row": 3, "reason": "step-after-end"}),
    ("after-terminated-across-batches", episodes_upload([0, 0, 0], [0, 1, 2], terminated=[1]), [2],
     {"column": "episode_id", "row": 2, "reason": "step-after-end"}),
    ("after-truncated-across-batches", episodes_upload([0, 1, 1, 1], None, truncated=[2]), [1, 3],
     {"column": "episode_id", "row": 3, "reason": "step-after-end"}),
    ("not-contiguous", episodes_upload([0, 0, 1, 1, 0]), [],
     {"column": "episode_id", "row": 4, "reason": "episode-not-contiguous"}),
    ("not-contiguous-across-batches", episodes_upload([0, 1, 0]), [2],
     {"column": "episode_id", "row": 2, "reason": "episode-not-contiguous"}),
    ("not-contiguous-three-batches", episodes_upload(["a", "b", "b", "a"]), [1, 3],
     {"column": "episode_id", "row": 3, "reason": "episode-not-contiguous"}),
    ("not-contiguous-later", episodes_upload([0, 1, 2, 3, 1], None), [2],
     {"column": "episode_id", "row": 4, "reason": "episode-not-contiguous"}),
]


@pytest.mark.parametrize(("batch", "cuts", "expected"), [case[1:] for case in SPLITTER_ERRORS],
                         ids=[case[0] for case in SPLITTER_ERRORS])
def test_episode_rule_violations(batch: pa.RecordBatch, cuts: list[int], expected: dict[str, Any]) -> None:
    assert splitter_error(batch, cuts) == expected


@pytest.mark.parametrize("cuts", [[], [1], [2], [1, 2, 3]])
def test_valid_episode_layouts_are_accepted(cuts: list[int]) -> None:
    batch = episodes_upload([0, 0, 1, 2, 2], [7, 8, 0, 3, 4], terminated=[1], truncated=[2])
    episodes, _ = run_splitter(batch, cuts)
    assert [(e.episode_id, e.first_step, e.last_step, e.terminated, e.truncated) for e in episodes] == [
        (0, 7, 8, True, False), (1, 0, 0, False, True), (2, 3, 4, False, False)]


def test_collect_holds_back_the_open_episode() -> None:
    batch = episodes_upload([0, 0, 1, 1, 1], None, terminated=[1])
    layout = inspect(batch)
    splitter = EpisodeSplitter(layout)
    splitter.feed(normalize_batch(batch.slice(0, 3), layout, 0))
    assert [e.episode_id for e in splitter.collect()] == [0]
    assert splitter.collect() == []
    splitter.feed(normalize_batch(batch.slice(3), layout, 3))
    assert splitter.collect() == []
    [last] = splitter.close()
    assert (last.episode_id, last.length, last.first_row) == (1, 3, 2)
