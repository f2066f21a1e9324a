"""The filter language: its JSON form, field resolution, exact meaning in Arrow, and pruning soundness.

The meaning of a filter is checked against a small reference evaluator written with numpy
(:func:`evaluate`), which implements the documented rules: a comparison with a missing value is
false and stays false under ``not`` (three-valued logic, as in SQL), ``exists`` asks for presence.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import TypeAdapter, ValidationError

from tuplehub.storage.blocks import zone_map
from tuplehub.storage.errors import InvalidFilter
from tuplehub.storage.filters import F, Filter, FilterNode, compile_filter
from tuplehub.storage.filters.fields import FieldRef, Kind, Scope, resolve
from tuplehub.storage.filters.language import MAX_DEPTH, And, Between, Compare, Exists, In, Not, Or, field_paths
from tuplehub.storage.filters.prune import Constraint, may_match, narrowing
from tuplehub.storage.models import EpisodeRecord
from tuplehub.storage.schema import TensorSpec, TupleSchema, numpy_to_column
from tuplehub.storage.versions import episode_table

from .factories import episode_record

FILTER = TypeAdapter(Filter)

# ---------------------------------------------------------------------------------------------
# The JSON language
# ---------------------------------------------------------------------------------------------

DOCUMENTED_JSON: list[tuple[FilterNode, dict[str, Any]]] = [
    (F.reward > 0, {"op": "gt", "field": "reward", "value": 0}),
    (F.reward >= 0.5, {"op": "ge", "field": "reward", "value": 0.5}),
    (F.step < 3, {"op": "lt", "field": "step", "value": 3}),
    (F.step <= 3, {"op": "le", "field": "step", "value": 3}),
    (F.terminated == True, {"op": "eq", "field": "terminated", "value": True}),  # noqa: E712
    (F.termination != "none", {"op": "ne", "field": "termination", "value": "none"}),
    (F.observation[3].between(0, 1), {"op": "between", "field": "observation[3]", "low": 0, "high": 1}),
    (F.observation[1, 2] > -1.5, {"op": "gt", "field": "observation[1, 2]", "value": -1.5}),
    (F.metadata.policy.isin(["expert"]), {"op": "in", "field": "metadata.policy", "values": ["expert"]}),
    (F.info.battery.exists(), {"op": "exists", "field": "info.battery"}),
    (~F.info.battery.exists(), {"op": "not", "arg": {"op": "exists", "field": "info.battery"}}),
    ((F.return_ > 100) & F.metadata.policy.isin(["expert"]),
     {"op": "and", "args": [{"op": "gt", "field": "return", "value": 100},
                            {"op": "in", "field": "metadata.policy", "values": ["expert"]}]}),
    ((F.reward < 0) | (F.step == 0),
     {"op": "or", "args": [{"op": "lt", "field": "reward", "value": 0},
                           {"op": "eq", "field": "step", "value": 0}]}),
    (F("metadata.isin") == "x", {"op": "eq", "field": "metadata.isin", "value": "x"}),
]


@pytest.mark.parametrize(("node", "expected"), DOCUMENTED_JSON, ids=lambda v: json.dumps(v) if isinstance(v, dict)
                         else None)
def test_f_expressions_produce_the_documented_json(node: FilterNode, expected: dict[str, Any]) -> None:
    assert node.to_json() == expected


@pytest.mark.parametrize("node", [node for node, _ in DOCUMENTED_JSON])
def test_json_round_trips_through_the_type_adapter(node: FilterNode) -> None:
    data = node.to_json()
    assert FILTER.validate_python(data) == node
    assert FILTER.validate_json(json.dumps(data)) == node
    assert FILTER.validate_python(data).to_json() == data


def test_scalars_keep_their_json_type() -> None:
    assert FILTER.validate_json('{"op": "eq", "field": "terminated", "value": true}').value is True
    assert FILTER.validate_json('{"op": "eq", "field": "reward", "value": 1}').value == 1
    assert type(FILTER.validate_json('{"op": "eq", "field": "reward", "value": 1.0}').value) is float
    assert FILTER.validate_json('{"op": "eq", "field": "reward", "value": "1"}').value == "1"


@pytest.mark.parametrize("data", [
    {"op": "gt", "field": "reward"},                                   # no value
    {"op": "gt", "field": "reward", "value": 0, "extra": 1},           # unknown key
    {"op": "like", "field": "reward", "value": 0},                     # unknown op
    {"op": "gt", "field": "reward", "value": None},                    # null is no scalar
    {"op": "gt", "field": "reward", "value": [1]},
    {"op": "and", "args": []},                                         # empty conjunction
    {"op": "not", "args": [{"op": "exists", "field": "reward"}]},
    {"op": "in", "field": "reward", "values": 1},
])
def test_malformed_nodes_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FILTER.validate_python(data)


def leaves(*names: str) -> list[FilterNode]:
    return [F(name).exists() for name in names]


def test_and_or_chains_flatten() -> None:
    a, b, c, d = leaves("a", "b", "c", "d")
    assert (a & b & c).args == [a, b, c]
    assert (a & (b & c)).args == [a, b, c]
    assert ((a & b) & (c & d)).args == [a, b, c, d]
    assert ((a | b) | (c | d)).args == [a, b, c, d]
    assert (a | b | c).to_json() == {"op": "or", "args": [x.to_json() for x in (a, b, c)]}


def test_mixed_chains_do_not_flatten_across_operators() -> None:
    a, b, c = leaves("a", "b", "c")
    assert ((a | b) & c) == And(op="and", args=[Or(op="or", args=[a, b]), c])
    assert ((a & b) | c) == Or(op="or", args=[And(op="and", args=[a, b]), c])
    assert (~(a & b) & c) == And(op="and", args=[Not(op="not", arg=And(op="and", args=[a, b])), c])
    assert (~~a) == Not(op="not", arg=Not(op="not", arg=a))


def test_field_roots_and_paths() -> None:
    assert F.return_.path == "return"
    assert F.metadata.policy.path == "metadata.policy"
    assert F.observation[1, 2].path == "observation[1, 2]"
    assert F.observation[np.int64(3)].path == "observation[3]"
    assert repr(F.info.battery) == "F.info.battery"
    node = (F.reward > 0) & ~(F.observation[2] < 1) | F.metadata.policy.exists()
    assert field_paths(node) == ["reward", "observation[2]", "metadata.policy"]


MALFORMED_PATHS = ["$where", "a..b", "metadata.$gt", "observation[x]", "", "1reward", "reward.", ".reward",
                   "observation[1][2]", "observation[-1]", "observation[]", "metadata.a b", "metadata.a/b",
                   "info.x[0", "reward; drop"]


@pytest.mark.parametrize("path", MALFORMED_PATHS)
def test_malformed_paths_are_rejected(path: str) -> None:
    with pytest.raises(ValueError, match="not a field path"):
        F(path)
    for data in ({"op": "exists", "field": path}, {"op": "eq", "field": path, "value": 1}):
        with pytest.raises(ValidationError, match="not a field path"):
            FILTER.validate_python(data)


@pytest.mark.parametrize("path", ["metadata.policy\n", "reward\n"])
def test_paths_with_a_trailing_newline_are_rejected(path: str) -> None:
    with pytest.raises(ValidationError):
        FILTER.validate_python({"op": "exists", "field": path})


def test_non_integer_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        F.observation["x"]


@pytest.mark.parametrize("make", [
    lambda: bool(F.reward > 0),
    lambda: 0 < F.reward < 1,
    lambda: (F.reward > 0) and (F.step > 0),
    lambda: (F.reward > 0) or (F.step > 0),
    lambda: not (F.reward > 0),
    lambda: bool(F.reward),
    lambda: bool(F.reward.exists()),
], ids=["bool", "chained-comparison", "and", "or", "not", "bare-field", "exists"])
def test_filters_have_no_truth_value(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError, match="no truth value"):
        make()


def test_field_expressions_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(F.reward)


# ---------------------------------------------------------------------------------------------
# Field resolution
# ---------------------------------------------------------------------------------------------

RESOLVE_SCHEMA = TupleSchema(episode_id="int", observation=TensorSpec(dtype="float32", shape=[3, 4]),
                             action=TensorSpec(dtype="float32", shape=[2]),
                             info={"battery": "float32", "contact": "bool"})
SCALAR_SCHEMA = TupleSchema(episode_id="str", observation=TensorSpec(dtype="float64"),
                            action=TensorSpec(dtype="bool"))


@pytest.mark.parametrize(("path", "scope", "message"), [
    ("velocity", "tuple", "not a tuple field"),
    ("velocity", "episode", "not an episode field"),
    ("metadata", "tuple", "not a tuple field"),
    ("info", "tuple", "not a tuple field"),
    ("observation", "episode", "not an episode field"),
    ("observation[12]", "tuple", "index out of range"),
    ("observation[3, 0]", "tuple", "index out of range"),
    ("observation[0, 4]", "tuple", "index out of range"),
    ("observation[1, 2, 0]", "tuple", "index out of range"),
    ("action[2]", "tuple", "index out of range"),
    ("action[0, 0]", "tuple", "index out of range"),
    ("reward[0]", "tuple", "only observation"),
    ("info.temperature", "tuple", "no such info column"),
    ("reward", "episode", "not an episode field"),
    ("step", "episode", "not an episode field"),
    ("info.battery", "episode", "not an episode field"),
    ("observation[0]", "episode", "only observation"),
    ("action[1]", "episode", "only observation"),
])
def test_unresolvable_fields_name_the_field(path: str, scope: Scope, message: str) -> None:
    with pytest.raises(InvalidFilter, match=message) as caught:
        resolve(path, scope, RESOLVE_SCHEMA)
    assert caught.value.extra["field"] == path
    assert repr(path) in str(caught.value)
    # The same mistake surfaces when compiling a filter that reads the field.
    with pytest.raises(InvalidFilter) as compiled:
        compile_filter(F.episode_id.exists() & F(path).exists(), scope, RESOLVE_SCHEMA)
    assert compiled.value.extra["field"] == path


def test_unknown_info_column_lists_the_existing_ones() -> None:
    with pytest.raises(InvalidFilter, match=r"info\.battery, info\.contact"):
        resolve("info.temperature", "tuple", RESOLVE_SCHEMA)
    with pytest.raises(InvalidFilter, match=r"it has: none"):
        resolve("info.temperature", "tuple", SCALAR_SCHEMA)


@pytest.mark.parametrize(("path", "scope", "schema", "expected"), [
    ("observation[1, 2]", "tuple", RESOLVE_SCHEMA,
     FieldRef("observation[6]", "observation", "number", "tuple", 6, floating=True)),
    ("observation[ 2 , 3 ]", "tuple", RESOLVE_SCHEMA,
     FieldRef("observation[11]", "observation", "number", "tuple", 11, floating=True)),
    ("observation[0, 0]", "tuple", RESOLVE_SCHEMA,
     FieldRef("observation[0]", "observation", "number", "tuple", 0, floating=True)),
    ("observation[11]", "tuple", RESOLVE_SCHEMA,
     FieldRef("observation[11]", "observation", "number", "tuple", 11, floating=True)),
    ("action[1]", "tuple", RESOLVE_SCHEMA, FieldRef("action[1]", "action", "number", "tuple", 1, floating=True)),
    ("observation[0]", "tuple", SCALAR_SCHEMA,
     FieldRef("observation[0]", "observation", "number", "tuple", None, floating=True)),
    ("action[0]", "tuple", SCALAR_SCHEMA, FieldRef("action[0]", "action", "bool", "tuple", None)),
    ("info.contact", "tuple", RESOLVE_SCHEMA, FieldRef("info.contact", "info.contact", "bool", "tuple")),
    ("info.battery", "tuple", RESOLVE_SCHEMA,
     FieldRef("info.battery", "info.battery", "number", "tuple", floating=True)),
    ("terminated", "tuple", RESOLVE_SCHEMA, FieldRef("terminated", "terminated", "bool", "tuple")),
    ("terminated", "episode", RESOLVE_SCHEMA, FieldRef("terminated", "terminated", "bool", "episode")),
    ("return", "tuple", RESOLVE_SCHEMA, FieldRef("return", "return", "number", "episode", floating=True)),
    ("termination", "tuple", RESOLVE_SCHEMA, FieldRef("termination", "termination", "string", "episode")),
    ("episode_id", "tuple", RESOLVE_SCHEMA, FieldRef("episode_id", "episode_id", "number", "tuple")),
    ("episode_id", "episode", SCALAR_SCHEMA, FieldRef("episode_id", "episode_id", "string", "episode")),
    ("metadata.a.b-c", "tuple", RESOLVE_SCHEMA, FieldRef("metadata.a.b-c", "metadata.a.b-c", "any", "episode")),
    ("index", "episode", RESOLVE_SCHEMA, FieldRef("index", "index", "number", "episode")),
])
def test_fields_resolve(path: str, scope: Scope, schema: TupleSchema, expected: FieldRef) -> None:
    assert resolve(path, scope, schema) == expected


def test_filters_nested_too_deep_are_rejected() -> None:
    node: FilterNode = F.reward > 0
    for _ in range(MAX_DEPTH):
        node = ~node
    with pytest.raises(InvalidFilter, match="deeper"):
        compile_filter(node, "tuple", RESOLVE_SCHEMA)
    compile_filter(node.arg, "tuple", RESOLVE_SCHEMA)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# A reference evaluator in numpy
# ---------------------------------------------------------------------------------------------


@dataclass
class Column:
    """A column as numpy: ``values`` (n,) or (n, k), with a filler where ``valid`` is False."""

    values: np.ndarray
    valid: np.ndarray


@dataclass
class Truth:
    """Three-valued truth per row: ``known`` False means null; ``true`` implies ``known``."""

    true: np.ndarray
    known: np.ndarray


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge,
}


def evaluate(node: FilterNode, data: dict[str, Column], scope: Scope, schema: TupleSchema) -> Truth:
    """The documented meaning of ``node`` on ``data`` (three-valued, like SQL)."""
    if isinstance(node, And | Or):
        parts = [evaluate(arg, data, scope, schema) for arg in node.args]
        trues = np.array([p.true for p in parts])
        falses = np.array([p.known & ~p.true for p in parts])
        if isinstance(node, And):
            true, false = trues.all(axis=0), falses.any(axis=0)
        else:
            true, false = trues.any(axis=0), falses.all(axis=0)
        return Truth(true, true | false)
    if isinstance(node, Not):
        inner = evaluate(node.arg, data, scope, schema)
        return Truth(inner.known & ~inner.true, inner.known)
    ref = resolve(node.field, scope, schema)  # type: ignore[attr-defined]
    column = data[ref.column]
    values = column.values if ref.element is None else column.values[:, ref.element]
    valid = column.valid
    if isinstance(node, Exists):
        return Truth(valid.copy(), np.ones_like(valid))
    if isinstance(node, Compare):
        hit = _elementwise(_OPS[node.op], values, node.value)
    elif isinstance(node, Between):
        hit = _elementwise(operator.ge, values, node.low) & _elementwise(operator.le, values, node.high)
    elif isinstance(node, In):
        hit = np.isin(_as_numbers(values), np.array(node.values, dtype=object))
    else:
        raise AssertionError(node)
    return Truth(hit & valid, valid.copy())


def _as_numbers(values: np.ndarray) -> np.ndarray:
    """Numbers compare as numbers, never in a narrower dtype (0.1 is no float32)."""
    return values.astype(np.float64) if values.dtype.kind in "iuf" else values


def _elementwise(op: Callable[[Any, Any], Any], values: np.ndarray, value: Any) -> np.ndarray:
    return np.asarray(op(_as_numbers(values), value), dtype=bool)


def kept_rows(node: FilterNode | None, table: pa.Table, scope: Scope, schema: TupleSchema) -> list[int]:
    """Row numbers (column ``_row``) that the compiled filter keeps."""
    return compile_filter(node, scope, schema).apply(table).column("_row").to_pylist()


def expected_rows(node: FilterNode, data: dict[str, Column], scope: Scope, schema: TupleSchema) -> list[int]:
    return np.flatnonzero(evaluate(node, data, scope, schema).true).tolist()


# ---------------------------------------------------------------------------------------------
# Tuple filters: random rows in the stored layout, plus the episode columns a filter may borrow
# ---------------------------------------------------------------------------------------------

TUPLE_SCHEMA = TupleSchema(episode_id="int", observation=TensorSpec(dtype="float32", shape=[2, 2]),
                           action=TensorSpec(dtype="int64", shape=[3]), reward="float64",
                           info={"battery": "float64", "contact": "bool", "count": "int16"})
POLICIES = ["expert", "medium", "random"]
TERMINATIONS = ["terminated", "truncated", "none"]


def grid(rng: np.random.Generator, size: Any, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Quarter steps: exact in float32, so equality and bounds are hit often and without rounding."""
    return rng.integers(int(low * 4), int(high * 4) + 1, size=size) / 4


def with_nulls(rng: np.random.Generator, values: np.ndarray, rate: float, filler: Any) -> Column:
    valid = rng.random(len(values)) >= rate
    values = values.copy()
    values[~valid] = filler
    return Column(values, valid)


def tuple_data(seed: int, episodes: int = 30) -> tuple[pa.Table, dict[str, Column]]:
    """Rows of ``episodes`` random episodes as an Arrow table and as numpy columns."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 13, size=episodes)
    n = int(lengths.sum())
    episode = np.repeat(np.arange(episodes), lengths)
    first_step = rng.integers(0, 4, size=episodes)
    step = np.concatenate([np.arange(k) + s for k, s in zip(lengths, first_step, strict=True)])
    everywhere = np.ones(n, dtype=bool)

    def per_row(values: np.ndarray) -> Column:
        return Column(values[episode], everywhere)

    policies = np.array([*POLICIES, ""], dtype=object)[rng.integers(0, 4, size=episodes)]
    data: dict[str, Column] = {
        "episode": Column(episode, everywhere),
        "step": Column(step, everywhere),
        "observation": Column(grid(rng, (n, 4)).astype(np.float32), everywhere),
        "action": Column(rng.integers(-3, 4, size=(n, 3)), everywhere),
        "reward": Column(grid(rng, n), everywhere),
        "terminated": Column(rng.random(n) < 0.3, everywhere),
        "truncated": Column(rng.random(n) < 0.3, everywhere),
        "info.battery": with_nulls(rng, grid(rng, n), 0.25, 0.0),
        "info.contact": with_nulls(rng, rng.random(n) < 0.5, 0.25, False),
        "info.count": with_nulls(rng, rng.integers(0, 4, size=n), 0.25, 0),
        "episode_id": per_row(100 + 7 * np.arange(episodes)),
        "return": per_row(grid(rng, episodes, -4, 4)),
        "length": per_row(lengths),
        "termination": per_row(np.array(TERMINATIONS, dtype=object)[rng.integers(0, 3, size=episodes)]),
        "metadata.policy": Column(policies[episode], policies[episode] != ""),
    }
    stored = TUPLE_SCHEMA.stored_schema()
    columns: dict[str, pa.Array] = {}
    for field in stored:
        column = data[field.name]
        if field.name in ("observation", "action"):
            spec = getattr(TUPLE_SCHEMA, field.name)
            columns[field.name] = numpy_to_column(column.values.reshape(n, *spec.shape), spec)
        else:
            columns[field.name] = pa.array(column.values, field.type, mask=~column.valid)
    extras = [pa.field("episode_id", pa.int64()), pa.field("return", pa.float64()),
              pa.field("length", pa.int64()), pa.field("termination", pa.string()),
              pa.field("metadata.policy", pa.string())]
    for field in extras:
        column = data[field.name]
        columns[field.name] = pa.array(column.values.tolist(), field.type, mask=~column.valid)
    columns["_row"] = pa.array(np.arange(n))
    return pa.table(columns, schema=pa.schema([*stored, *extras, pa.field("_row", pa.int64())])), data


TUPLE_TABLE, TUPLE_DATA = tuple_data(seed=7)

TUPLE_CASES: dict[str, FilterNode] = {
    "eq": F.reward == 0.5, "ne": F.reward != 0.5, "lt": F.reward < -0.25, "le": F.reward <= -0.25,
    "gt": F.reward > 1, "ge": F.reward >= 1, "between": F.reward.between(-0.5, 0.75),
    "between-empty": F.reward.between(1, -1), "in": F.reward.isin([0, 0.25, 2]), "in-empty": F.reward.isin([]),
    "step-eq": F.step == 3, "step-between-floats": F.step.between(1.5, 4.5), "step-in": F.step.isin([0, 2]),
    "step-gt-float": F.step > 2.5,
    "observation-flat": F.observation[3] > 0, "observation-2d": F.observation[1, 0] <= -0.5,
    "observation-in": F.observation[0, 1].isin([0.5, -0.5]), "observation-eq": F.observation[2] == 0.25,
    "action-eq": F.action[2] == 1, "action-ne": F.action[0] != 0, "action-between": F.action[1].between(-1, 1),
    "action-in-float": F.action[1].isin([1.0, 2.5]),
    "terminated": F.terminated == True, "truncated-ne": F.truncated != True,  # noqa: E712
    "flag-in": F.terminated.isin([False]),
    "and": (F.reward > 0) & (F.step < 5) & F.terminated.isin([False]),
    "or": (F.reward > 1) | (F.observation[0] < -1) | (F.action[0] == 3),
    "not": ~(F.reward > 0), "not-and": ~((F.reward > 0) & (F.step > 2)),
    "nested": ((F.reward > 0) | ~(F.step.between(2, 4))) & ~(F.action[1].isin([0, 1]) | (F.truncated == True)),  # noqa: E712
    # Missing values: false, also under not; exists asks for presence.
    "null-gt": F.info.battery > 0, "null-not-gt": ~(F.info.battery > 0), "null-ne": F.info.battery != 0,
    "null-not-eq": ~(F.info.battery == 0), "null-between": F.info.battery.between(-1, 1),
    "null-not-between": ~F.info.battery.between(-1, 1), "null-exists": F.info.battery.exists(),
    "null-not-exists": ~F.info.battery.exists(), "null-int": F.info.count >= 2,
    "null-int-in": F.info.count.isin([1, 2]), "null-flag": F.info.contact == True,  # noqa: E712
    "null-not-flag": ~(F.info.contact == False), "null-flag-in": F.info.contact.isin([True]),  # noqa: E712
    "null-or": (F.info.battery > 0) | (F.reward > 0), "null-not-or": ~((F.info.battery > 0) | (F.reward > 0)),
    "null-and": (F.info.battery > 0) & (F.reward > 0),
    "null-not-and": ~((F.info.battery > 0) & (F.reward > 0)),
    "null-double-not": ~~(F.info.count == 1),
    # Episode fields borrowed by a tuple filter.
    "return": F.return_ > 0, "length": F.length.between(3, 6), "episode-id": F.episode_id.isin([107, 121, 135]),
    "termination": F.termination == "truncated", "termination-in": F.termination.isin(["none", "terminated"]),
    "termination-lt": F.termination < "the", "metadata": F.metadata.policy == "expert",
    "metadata-not": ~(F.metadata.policy == "expert"), "metadata-exists": F.metadata.policy.exists(),
    "metadata-in": F.metadata.policy.isin(["medium", "random"]),
    "metadata-and": F.metadata.policy.exists() & (F.return_ <= 1),
}


@pytest.mark.parametrize("name", TUPLE_CASES)
def test_tuple_filter_keeps_exactly_the_matching_rows(name: str) -> None:
    node = TUPLE_CASES[name]
    expected = expected_rows(node, TUPLE_DATA, "tuple", TUPLE_SCHEMA)
    assert kept_rows(node, TUPLE_TABLE, "tuple", TUPLE_SCHEMA) == expected
    # The cases are only a test if they neither keep nothing nor everything (but a few are meant to).
    if not name.endswith("empty"):
        assert 0 < len(expected) < len(TUPLE_TABLE), name


def test_nulls_are_present_in_the_test_data() -> None:
    for name in ("info.battery", "info.contact", "info.count", "metadata.policy"):
        assert 0 < TUPLE_TABLE.column(name).null_count < len(TUPLE_TABLE) // 2


@pytest.mark.parametrize("node", [
    ~F.info.count.isin([1, 2]),
    ~F.info.contact.isin([True]),
    ~F.metadata.policy.isin(["expert"]),
], ids=["int-info", "bool-info", "metadata"])
def test_not_in_is_false_for_missing_values(node: FilterNode) -> None:
    assert kept_rows(node, TUPLE_TABLE, "tuple", TUPLE_SCHEMA) == expected_rows(node, TUPLE_DATA, "tuple",
                                                                                  TUPLE_SCHEMA)


def test_no_filter_keeps_every_row() -> None:
    compiled = compile_filter(None, "tuple", TUPLE_SCHEMA)
    assert compiled.fields == []
    assert kept_rows(None, TUPLE_TABLE, "tuple", TUPLE_SCHEMA) == list(range(len(TUPLE_TABLE)))


def test_compiled_filter_reports_the_columns_it_reads() -> None:
    node = (F.reward > 0) & (F.observation[1, 1] > 0) & (F.return_ > 0) | F.metadata.policy.exists()
    compiled = compile_filter(node, "tuple", TUPLE_SCHEMA)
    assert compiled.columns("tuple") == {"reward", "observation"}
    assert compiled.columns("episode") == {"return", "metadata.policy"}


FIELDS_BY_KIND: dict[str, list[str]] = {
    "number": ["reward", "step", "observation[0]", "observation[1, 1]", "observation[3]", "action[0]", "action[2]",
               "return", "length", "episode_id"],
    "nullable-number": ["info.battery", "info.count"],
    "bool": ["terminated", "truncated"],
    "nullable-bool": ["info.contact"],
    "string": ["termination"],
    "nullable-string": ["metadata.policy"],
}


def random_leaf(rng: np.random.Generator, data: dict[str, Column]) -> FilterNode:
    kind = str(rng.choice(list(FIELDS_BY_KIND)))
    path = str(rng.choice(FIELDS_BY_KIND[kind]))
    if rng.random() < 0.1:
        return F(path).exists()
    ref = resolve(path, "tuple", TUPLE_SCHEMA)
    column = data[ref.column]
    values = column.values if ref.element is None else column.values[:, ref.element]

    def pick() -> Any:
        value = values[rng.integers(len(values))]
        if kind.endswith("number") and rng.random() < 0.3:
            value = value + float(rng.integers(-4, 5)) / 4
        return value.item() if isinstance(value, np.generic) else value

    # 'in' on nullable fields is excluded here: see test_not_in_is_false_for_missing_values.
    ops = ["eq", "ne", "in"] if kind.endswith(("bool", "string")) else \
        ["eq", "ne", "lt", "le", "gt", "ge", "between", "in"]
    op = str(rng.choice([o for o in ops if not (o == "in" and kind.startswith("nullable"))] or ["eq"]))
    if op == "between":
        low, high = sorted([pick(), pick()])
        return F(path).between(low, high)
    if op == "in":
        return F(path).isin([pick() for _ in range(rng.integers(0, 4))])
    return Compare(op=op, field=path, value=pick())  # type: ignore[arg-type]


def random_filter(rng: np.random.Generator, data: dict[str, Column], depth: int = 3) -> FilterNode:
    roll = rng.random()
    if depth == 0 or roll < 0.4:
        return random_leaf(rng, data)
    if roll < 0.55:
        return ~random_filter(rng, data, depth - 1)
    args = [random_filter(rng, data, depth - 1) for _ in range(rng.integers(1, 4))]
    return And(op="and", args=args) if roll < 0.8 else Or(op="or", args=args)


def test_random_tuple_filters_agree_with_the_reference() -> None:
    rng = np.random.default_rng(2024)
    sizes = []
    for _ in range(300):
        node = random_filter(rng, TUPLE_DATA)
        expected = expected_rows(node, TUPLE_DATA, "tuple", TUPLE_SCHEMA)
        assert kept_rows(node, TUPLE_TABLE, "tuple", TUPLE_SCHEMA) == expected, node.to_json()
        sizes.append(len(expected))
    # Not a vacuous test: filters keep some, none and all rows.
    assert sum(0 < s < len(TUPLE_TABLE) for s in sizes) > 150
    assert 0 in sizes


@pytest.mark.parametrize("node", [
    F.reward == "1", F.reward.isin([1, "a"]), F.reward.between(0, "1"), F.reward == True,  # noqa: E712
    F.step.isin([True]), F.observation[0] > "x", F.action[1].between(False, True), F.info.battery >= True,
    F.terminated == 1, F.terminated > False, F.truncated.between(False, True), F.info.contact >= True,
    F.info.contact.isin([0, 1]), F.termination == 1, F.termination.isin(["none", 0]), F.episode_id == "107",
    F.return_ < "high", (F.reward > 0) & (F.length == "long"), ~(F.terminated <= True),
], ids=lambda node: json.dumps(node.to_json()))
def test_type_clashes_are_rejected_at_compile_time(node: FilterNode) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(node, "tuple", TUPLE_SCHEMA)
    assert caught.value.extra["field"] in field_paths(node)


def test_string_episode_ids_compare_with_strings_only() -> None:
    schema = TUPLE_SCHEMA.model_copy(update={"episode_id": "str"})
    compile_filter(F.episode_id.isin(["a", "b"]), "tuple", schema)
    with pytest.raises(InvalidFilter, match="episode_id"):
        compile_filter(F.episode_id == 3, "episode", schema)


def test_metadata_compares_with_anything_but_clashes_at_evaluation() -> None:
    node = F.metadata.policy > 3
    compiled = compile_filter(node, "tuple", TUPLE_SCHEMA)
    with pytest.raises(InvalidFilter, match="cannot evaluate"):
        compiled.apply(TUPLE_TABLE)


# ---------------------------------------------------------------------------------------------
# Episode filters, on the episode table a version builds from its records
# ---------------------------------------------------------------------------------------------


def random_episodes(seed: int, count: int = 40) -> list[EpisodeRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        length = int(rng.integers(1, 20))
        first_step = int(rng.integers(0, 5))
        low, high = sorted(grid(rng, 2).tolist())
        terminated = bool(rng.random() < 0.5)
        metadata: dict[str, Any] = {}
        if rng.random() < 0.7:
            metadata["policy"] = str(rng.choice(POLICIES))
        if rng.random() < 0.7:
            metadata["score"] = float(grid(rng, 1)[0])
        record = episode_record("seg", i, episode_id=1000 + i, length=length, return_=float(grid(rng, 1, -8, 8)[0]),
                                metadata=metadata)
        records.append(record.model_copy(update={
            "reward_min": low, "reward_max": high, "first_step": first_step, "last_step": first_step + length - 1,
            "terminated": terminated, "truncated": not terminated and bool(rng.random() < 0.5)}))
    return records


EPISODE_PATHS: dict[str, Kind | None] = {"metadata.policy": "string", "metadata.score": "number"}
EPISODE_RECORDS = random_episodes(seed=3)
FIRST_INDEX = 50


def episode_data(records: list[EpisodeRecord]) -> tuple[pa.Table, dict[str, Column]]:
    table = episode_table(records, FIRST_INDEX, EPISODE_PATHS)
    table = table.append_column("_row", pa.array(np.arange(len(records))))
    data: dict[str, Column] = {}
    for name in table.column_names:
        column = table.column(name)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        values = np.array(column.to_pylist(), dtype=object)
        values[~valid] = 0.0 if name == "metadata.score" else ""
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            values = values.astype(np.float64)
        elif pa.types.is_boolean(column.type):
            values = values.astype(bool)
        data[name] = Column(values, valid)
    return table, data


EPISODE_TABLE, EPISODE_DATA = episode_data(EPISODE_RECORDS)

EPISODE_CASES: dict[str, FilterNode] = {
    "return": F.return_ > 0, "length": F.length.between(5, 10), "index": F.index >= FIRST_INDEX + 20,
    "reward-min": F.reward_min <= -1, "reward-max": F.reward_max != 2, "first-step": F.first_step.isin([0, 4]),
    "last-step": F.last_step < 8, "terminated": F.terminated == True, "truncated": F.truncated != False,  # noqa: E712
    "termination": F.termination.isin(["none"]), "episode-id": F.episode_id.isin([1000, 1003, 1039]),
    "policy": F.metadata.policy == "expert", "not-policy": ~(F.metadata.policy == "expert"),
    "policy-exists": F.metadata.policy.exists(), "no-policy": ~F.metadata.policy.exists(),
    "score": F.metadata.score.between(-1, 1), "not-score": ~(F.metadata.score > 0),
    "and": (F.return_ > 0) & (F.length >= 5) & (F.metadata.policy != "random"),
    "or": (F.return_ > 4) | F.metadata.policy.isin(["random"]) | (F.first_step == 0),
    "not-or": ~((F.metadata.score > 0) | (F.length < 4)),
}


@pytest.mark.parametrize("name", EPISODE_CASES)
def test_episode_filter_keeps_exactly_the_matching_episodes(name: str) -> None:
    node = EPISODE_CASES[name]
    expected = expected_rows(node, EPISODE_DATA, "episode", TUPLE_SCHEMA)
    assert kept_rows(node, EPISODE_TABLE, "episode", TUPLE_SCHEMA) == expected
    assert 0 < len(expected) < len(EPISODE_RECORDS)


def test_in_on_a_metadata_key_no_episode_has_keeps_nothing() -> None:
    records = [episode_record("seg", i) for i in range(3)]
    for node in (F.metadata.policy == "expert", F.metadata.policy.isin(["expert"])):
        compiled = compile_filter(node, "episode", TUPLE_SCHEMA)
        table = episode_table(records, 0, {"metadata.policy": compiled.metadata_kinds.get("metadata.policy")})
        assert len(compiled.apply(table)) == 0


# ---------------------------------------------------------------------------------------------
# Pruning: zone maps may only skip blocks with no matching row
# ---------------------------------------------------------------------------------------------

PRUNE_SCHEMA = TupleSchema(episode_id="int", observation=TensorSpec(dtype="float32", shape=[2, 2]),
                           action=TensorSpec(dtype="int64", shape=[2]), reward="float64")
PRUNE_FIELDS = ["reward", "step", "observation[0]", "observation[3]", "observation[1, 0]", "observation[0, 1]",
                "action[0]", "action[1]"]


def random_block(rng: np.random.Generator) -> tuple[pa.Table, dict[str, Column]]:
    """A block of 1..16 rows whose values sit around a random centre, so zones differ from block to block."""
    n = int(rng.integers(1, 17))
    centre = float(rng.integers(-3, 4))
    everywhere = np.ones(n, dtype=bool)
    data = {
        "episode": Column(np.sort(rng.integers(0, 3, size=n)), everywhere),
        "step": Column(np.arange(n) + int(rng.integers(0, 20)), everywhere),
        "observation": Column((centre + grid(rng, (n, 4), -1, 1)).astype(np.float32), everywhere),
        "action": Column(int(centre) + rng.integers(-2, 3, size=(n, 2)), everywhere),
        "reward": Column(centre + grid(rng, n, -1, 1), everywhere),
        "terminated": Column(np.zeros(n, dtype=bool), everywhere),
        "truncated": Column(np.zeros(n, dtype=bool), everywhere),
    }
    columns = {}
    for field in PRUNE_SCHEMA.stored_schema():
        if field.name in ("observation", "action"):
            spec = getattr(PRUNE_SCHEMA, field.name)
            columns[field.name] = numpy_to_column(data[field.name].values.reshape(n, *spec.shape), spec)
        else:
            columns[field.name] = pa.array(data[field.name].values, field.type)
    table = pa.table(columns, schema=PRUNE_SCHEMA.stored_schema())
    return table.append_column("_row", pa.array(np.arange(n))), data


def random_prune_filter(rng: np.random.Generator, data: dict[str, Column], depth: int = 3) -> FilterNode:
    roll = rng.random()
    if depth > 0 and roll < 0.3:
        args = [random_prune_filter(rng, data, depth - 1) for _ in range(rng.integers(1, 4))]
        return And(op="and", args=args) if roll < 0.18 else Or(op="or", args=args)
    if depth > 0 and roll < 0.35:
        return ~random_prune_filter(rng, data, depth - 1)
    path = str(rng.choice(PRUNE_FIELDS))
    ref = resolve(path, "tuple", PRUNE_SCHEMA)
    values = data[ref.column].values
    values = values if ref.element is None else values[:, ref.element]

    def pick() -> float | int:
        if rng.random() < 0.5:  # a value of the block: on the bounds, or inside
            value = values[rng.integers(len(values))].item()
            return value if rng.random() < 0.5 else value + float(rng.choice([-0.25, 0.25]))
        return float(grid(rng, 1, -6, 25)[0])

    op = str(rng.choice(["eq", "ne", "lt", "le", "gt", "ge", "between", "in"]))
    if op == "between":
        return F(path).between(*sorted([pick(), pick()]))
    if op == "in":
        return F(path).isin([pick() for _ in range(rng.integers(0, 4))])
    value = pick()
    if rng.random() < 0.3 and float(value).is_integer():
        value = int(value)
    return Compare(op=op, field=path, value=value)  # type: ignore[arg-type]


def test_zone_maps_never_prune_a_block_with_matching_rows() -> None:
    rng = np.random.default_rng(11)
    pruned = 0
    for _ in range(400):
        table, data = random_block(rng)
        node = random_prune_filter(rng, data)
        zones = zone_map(table, PRUNE_SCHEMA)
        # The catalog stores zones as JSON (tuples become lists); the answer must not change.
        stored_zones = json.loads(json.dumps(zones))
        answer = may_match(node, zones, PRUNE_SCHEMA)
        assert may_match(node, stored_zones, PRUNE_SCHEMA) == answer
        if not answer:
            pruned += 1
            assert kept_rows(node, table, "tuple", PRUNE_SCHEMA) == [], node.to_json()
    assert pruned > 60  # the property is not vacuous


@pytest.mark.parametrize(("node", "answer"), [
    (F.reward > 5, False), (F.reward >= 2, True), (F.reward > 2, False), (F.reward < 1, False),
    (F.reward <= 1, True), (F.reward == 1.5, True), (F.reward == 3, False), (F.reward != 1, True),
    (F.reward.between(2.5, 3), False), (F.reward.between(0, 1), True), (F.reward.isin([0, 3]), False),
    (F.reward.isin([0, 2]), True), (F.reward.isin([]), False), (F.step > 9, False), (F.step == 9, True),
    (F.observation[1, 1] > 3, False), (F.observation[3] > 2, True), (F.action[1] < -1, False),
    (~(F.reward > 5), True), ((F.reward > 5) | (F.step == 0), True), ((F.reward > 5) & (F.step == 0), False),
    ((F.reward > 1) & (F.step.between(0, 9)), True), (F.terminated == True, True),  # noqa: E712
    (F.return_ > 10**9, True), (F.reward.exists(), True), (None, True),
])
def test_may_match_on_known_zones(node: FilterNode | None, answer: bool) -> None:
    table = pa.table({
        "episode": pa.array([0, 0], pa.int32()), "step": pa.array([0, 9]),
        "observation": numpy_to_column(np.array([[[0, 1], [2, 3]], [[1, 1], [1, 1]]], np.float32),
                                       PRUNE_SCHEMA.observation),
        "action": numpy_to_column(np.array([[0, 0], [-1, 1]]), PRUNE_SCHEMA.action),
        "reward": pa.array([1.0, 2.0]), "terminated": [False, True], "truncated": [False, False],
    }).cast(PRUNE_SCHEMA.stored_schema())
    assert may_match(node, zone_map(table, PRUNE_SCHEMA), PRUNE_SCHEMA) is answer


def test_may_match_without_zones_keeps_the_block() -> None:
    assert may_match(F.reward > 5, {}, PRUNE_SCHEMA)
    assert may_match(F.observation[0] > 5, {"reward": [0.0, 1.0]}, PRUNE_SCHEMA)


@pytest.mark.parametrize("node", [F.info.stamp > 2**53, F.observation[0] > 2**53, F.observation[1] == 2**53 + 1],
                         ids=["info", "observation-gt", "observation-eq"])
def test_zone_maps_of_large_integers_do_not_prune_matching_blocks(node: FilterNode) -> None:
    schema = TupleSchema(episode_id="int", observation=TensorSpec(dtype="int64", shape=[2]),
                         action=TensorSpec(dtype="float32"), info={"stamp": "int64"})
    big = 2**53 + 1
    table = pa.table({
        "episode": pa.array([0, 0], pa.int32()), "step": pa.array([0, 1]),
        "observation": numpy_to_column(np.array([[big, big], [0, 0]]), schema.observation),
        "action": pa.array([0.0, 0.0], pa.float32()), "reward": pa.array([0.0, 0.0]),
        "terminated": [False, False], "truncated": [False, False], "info.stamp": pa.array([big, 0]),
    }).cast(schema.stored_schema())
    assert len(compile_filter(node, "tuple", schema).apply(table)) == 1
    assert may_match(node, zone_map(table, schema), schema)


# ---------------------------------------------------------------------------------------------
# Narrowing: catalog constraints hold for every episode the exact filter keeps
# ---------------------------------------------------------------------------------------------

NARROW_FIELDS = ["length", "return", "reward_min", "reward_max", "first_step", "last_step"]


def random_episode_filter(rng: np.random.Generator, depth: int = 3) -> FilterNode:
    roll = rng.random()
    if depth > 0 and roll < 0.35:
        args = [random_episode_filter(rng, depth - 1) for _ in range(rng.integers(1, 4))]
        return And(op="and", args=args) if roll < 0.25 else Or(op="or", args=args)
    if depth > 0 and roll < 0.4:
        return ~random_episode_filter(rng, depth - 1)
    if roll > 0.92:
        others = [F.terminated == True, F.metadata.policy == "expert", F.index > 60, F.metadata.score.exists()]  # noqa: E712
        return others[rng.integers(len(others))]
    path = str(rng.choice(NARROW_FIELDS))
    column = EPISODE_DATA[path].values

    def pick() -> float | int:
        value = float(column[rng.integers(len(column))]) + float(rng.choice([-0.5, 0, 0, 0.5]))
        return int(value) if value.is_integer() and rng.random() < 0.5 else value

    op = str(rng.choice(["eq", "ne", "lt", "le", "gt", "ge", "between", "in"]))
    if op == "between":
        return F(path).between(*sorted([pick(), pick()]))
    if op == "in":
        return F(path).isin([pick() for _ in range(rng.integers(0, 3))])
    return Compare(op=op, field=path, value=pick())  # type: ignore[arg-type]


def holds(constraint: Constraint, value: float) -> bool:
    return bool(_OPS[constraint.op](value, constraint.value))


def test_narrowing_constraints_hold_for_every_kept_episode() -> None:
    rng = np.random.default_rng(5)
    narrowed = 0
    for _ in range(300):
        node = random_episode_filter(rng)
        constraints = narrowing(node, "episode", TUPLE_SCHEMA)
        narrowed += bool(constraints)
        kept = compile_filter(node, "episode", TUPLE_SCHEMA).apply(EPISODE_TABLE)
        for constraint in constraints:
            assert constraint.column in NARROW_FIELDS
            values = kept.column(constraint.column).to_pylist()
            assert all(holds(constraint, v) for v in values), (node.to_json(), constraint)
    assert narrowed > 100


@pytest.mark.parametrize(("node", "expected"), [
    (F.return_ > 1, [Constraint("return", "gt", 1.0)]),
    (F.length.between(2, 5), [Constraint("length", "ge", 2.0), Constraint("length", "le", 5.0)]),
    ((F.length == 3) & ((F.return_ < 0) & (F.first_step >= 1)),
     [Constraint("length", "eq", 3.0), Constraint("return", "lt", 0.0), Constraint("first_step", "ge", 1.0)]),
    (F.length != 3, []), (~(F.length > 3), []), ((F.length > 3) | (F.return_ > 0), []),
    (F.length.isin([3]), []), (F.index > 3, []), (F.metadata.score > 3, []), (F.terminated == True, []),  # noqa: E712
    (None, []),
])
def test_narrowing_on_known_filters(node: FilterNode | None, expected: list[Constraint]) -> None:
    assert narrowing(node, "episode", TUPLE_SCHEMA) == expected


def test_tuple_filters_narrow_on_borrowed_episode_fields_only() -> None:
    node = (F.return_ > 1) & (F.reward > 0) & (F.step.between(0, 3))
    assert narrowing(node, "tuple", TUPLE_SCHEMA) == [Constraint("return", "gt", 1.0)]
