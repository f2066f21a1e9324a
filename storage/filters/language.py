"""The JSON filter language, and ``F``, the Python way to write it.

A filter is a tree of nodes, each a JSON object with an ``op``::

    {"op": "gt", "field": "reward", "value": 0}
    {"op": "between", "field": "observation[3]", "low": 0, "high": 1}
    {"op": "in", "field": "metadata.policy", "values": ["expert"]}
    {"op": "exists", "field": "info.battery"}
    {"op": "and", "args": [...]}   {"op": "or", "args": [...]}   {"op": "not", "arg": {...}}

Field paths are checked here for form only (so nothing unvalidated ever reaches a database
query); which fields exist depends on the dataset and is checked when a filter is compiled
(:mod:`tuplehub.storage.filters.fields`). A comparison with a missing value is false, and stays
false under ``not``: use ``exists`` to ask for presence.

    >>> from tuplehub.client import F
    >>> (F.return_ > 100) & F.metadata.policy.isin(["expert"])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from tuplehub.storage.errors import InvalidFilter

# Integers fit int64 and floats are finite: every value can be compared without overflow.
Scalar = StrictBool | Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)] \
    | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr

# root(.key)* with an optional [i] or [i, j] index; keys may hold letters, digits, '_' and '-'.
FIELD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*(\[\s*\d+(\s*,\s*\d+)*\s*\])?")
MAX_DEPTH = 32


class FilterNode(BaseModel):
    """Common base: ``&``, ``|`` and ``~`` combine nodes into new ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __and__(self, other: FilterNode) -> And:
        return And(op="and", args=[*_flatten(self, "and"), *_flatten(other, "and")])

    def __or__(self, other: FilterNode) -> Or:
        return Or(op="or", args=[*_flatten(self, "or"), *_flatten(other, "or")])

    def __invert__(self) -> Not:
        return Not(op="not", arg=self)

    def __bool__(self) -> bool:
        raise TypeError("a filter has no truth value: combine filters with & | ~ (not and/or/not), "
                        "and write a range as F.x.between(low, high)")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _flatten(node: FilterNode, op: str) -> list[FilterNode]:
    return list(node.args) if isinstance(node, And | Or) and node.op == op else [node]


def _check_field(path: str) -> str:
    if not FIELD_PATTERN.fullmatch(path):
        raise ValueError(f"{path!r} is not a field path (like reward, observation[3], metadata.policy)")
    return path


class _FieldNode(FilterNode):
    field: str = Field(examples=["reward"])

    @field_validator("field")
    @classmethod
    def _valid_path(cls, path: str) -> str:
        return _check_field(path)


class Compare(_FieldNode):
    op: Literal["eq", "ne", "lt", "le", "gt", "ge"]
    value: Scalar


class In(_FieldNode):
    op: Literal["in"]
    values: list[Scalar] = Field(max_length=100_000)


class Between(_FieldNode):
    """Inclusive at both ends."""

    op: Literal["between"]
    low: Scalar
    high: Scalar


class Exists(_FieldNode):
    op: Literal["exists"]


class And(FilterNode):
    op: Literal["and"]
    args: list[Filter] = Field(min_length=1)


class Or(FilterNode):
    op: Literal["or"]
    args: list[Filter] = Field(min_length=1)


class Not(FilterNode):
    op: Literal["not"]
    arg: Filter


Filter = Annotated[Compare | In | Between | Exists | And | Or | Not, Field(discriminator="op")]
for _model in (And, Or, Not):
    _model.model_rebuild()
_FILTER = TypeAdapter(Filter)


def parse_filter_json(text: str | None, *, source: str | None = None, example: str | None = None) -> FilterNode | None:
    """A filter written as JSON text (a query parameter, a command-line option); blank text is no filter.

    A malformed one raises :class:`InvalidFilter` saying where the first problem is (``source``,
    such as ``--where``, else its place in the JSON) and what it is; with ``example`` (for a
    person at a terminal) the message shows a well-formed filter and points at the docs.
    """
    if text is None or not text.strip():
        return None
    try:
        return _FILTER.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = source or ".".join(str(part) for part in first["loc"]) or "filter"
        if example is None:
            raise InvalidFilter(f"{where}: {first['msg']}") from exc
        raise InvalidFilter(f"{where}: {first['msg']} (expected JSON like {example})",
                            hint="the filter language is in docs/tuples-and-filters.md") from exc


@dataclass(frozen=True)
class FilterSize:
    """How deep a filter nests and how many comparisons (leaves) it holds: what it costs to run."""

    depth: int
    leaves: int


def measure(node: FilterNode) -> FilterSize:
    """The size of ``node``, walked without recursion so that no tree can exhaust Python's stack."""
    deepest = leaves = 0
    pending: list[tuple[FilterNode, int]] = [(node, 1)]
    while pending:
        current, level = pending.pop()
        deepest = max(deepest, level)
        if isinstance(current, And | Or):
            pending.extend((arg, level + 1) for arg in current.args)
        elif isinstance(current, Not):
            pending.append((current.arg, level + 1))
        else:
            leaves += 1
    return FilterSize(deepest, leaves)


def check_size(node: FilterNode | None, *, max_leaves: int | None = None) -> None:
    """Refuse a filter deeper than :data:`MAX_DEPTH` or with more than ``max_leaves`` comparisons.

    Every request that carries a filter calls this with the server's limit before anything else
    looks at the filter: evaluation costs one pass over the data per comparison, so the number of
    comparisons bounds what one request can cost (an ``in`` with many values is one comparison:
    Arrow looks its values up in a hash set). The compiler checks the depth only.
    """
    if node is None:
        return
    size = measure(node)
    if size.depth > MAX_DEPTH:
        raise InvalidFilter(f"the filter nests deeper than {MAX_DEPTH} levels ({size.depth})",
                            limit=MAX_DEPTH)
    if max_leaves is not None and size.leaves > max_leaves:
        raise InvalidFilter(f"the filter holds {size.leaves} comparisons; this server allows at most {max_leaves} "
                            "(setting TUPLEHUB_FILTER_MAX_LEAVES); an 'in' with a list of values counts as one",
                            limit=max_leaves, leaves=size.leaves)


def field_paths(node: FilterNode) -> list[str]:
    """Every field the filter reads, in order of appearance."""
    if isinstance(node, And | Or):
        return [path for arg in node.args for path in field_paths(arg)]
    if isinstance(node, Not):
        return field_paths(node.arg)
    return [node.field]  # type: ignore[attr-defined]


class FieldExpr:
    """A field path under construction: ``F.metadata.policy``, ``F.observation[3]``."""

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = _check_field(path)

    @property
    def path(self) -> str:
        return self._path

    def __getattr__(self, name: str) -> FieldExpr:
        if name.startswith("__"):
            raise AttributeError(name)
        return FieldExpr(f"{self._path}.{name}")

    def __getitem__(self, index: int | tuple[int, ...]) -> FieldExpr:
        indices = index if isinstance(index, tuple) else (index,)
        return FieldExpr(f"{self._path}[{', '.join(str(int(i)) for i in indices)}]")

    def _compare(self, op: str, value: Any) -> Compare:
        return Compare(op=op, field=self._path, value=value)

    def __eq__(self, value: Any) -> Compare:  # type: ignore[override]
        return self._compare("eq", value)

    def __ne__(self, value: Any) -> Compare:  # type: ignore[override]
        return self._compare("ne", value)

    def __lt__(self, value: Any) -> Compare:
        return self._compare("lt", value)

    def __le__(self, value: Any) -> Compare:
        return self._compare("le", value)

    def __gt__(self, value: Any) -> Compare:
        return self._compare("gt", value)

    def __ge__(self, value: Any) -> Compare:
        return self._compare("ge", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Any) -> In:
        return In(op="in", field=self._path, values=list(values))

    def between(self, low: Any, high: Any) -> Between:
        return Between(op="between", field=self._path, low=low, high=high)

    def exists(self) -> Exists:
        return Exists(op="exists", field=self._path)

    def __bool__(self) -> bool:
        raise TypeError(f"{self._path} has no truth value: compare it (F.x > 0) or use .exists()")

    def __repr__(self) -> str:
        return f"F.{self._path}"


class _FieldRoot:
    """``F.<name>`` starts a field path; a trailing ``_`` escapes Python keywords (``F.return_``)."""

    def __getattr__(self, name: str) -> FieldExpr:
        if name.startswith("__"):
            raise AttributeError(name)
        return FieldExpr(name[:-1] if name.endswith("_") else name)

    def __call__(self, path: str) -> FieldExpr:
        """``F("metadata.isin")`` reaches a field whose name clashes with a method."""
        return FieldExpr(path)


F = _FieldRoot()
