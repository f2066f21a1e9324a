"""Compile a filter to one Arrow compute expression: the definition of what a filter means.

Catalog queries and zone maps may only narrow what is read before this expression runs
(:mod:`tuplehub.storage.filters.prune`); the rows an export returns are exactly the rows for
which this expression is true.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from tuplehub.storage.errors import InvalidFilter
from tuplehub.storage.filters.fields import FieldRef, Kind, Scope, resolve
from tuplehub.storage.filters.language import (
    MAX_DEPTH,
    And,
    Between,
    Compare,
    Exists,
    FilterNode,
    In,
    Not,
    Or,
    depth,
)
from tuplehub.storage.schema import TupleSchema

_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal"}


@dataclass
class CompiledFilter:
    """An expression plus the fields it reads, so callers build only the columns it needs."""

    expression: pc.Expression
    fields: list[FieldRef] = field(default_factory=list)

    def columns(self, level: str) -> set[str]:
        return {ref.column for ref in self.fields if ref.level == level}

    def apply(self, table: pa.Table) -> pa.Table:
        """Rows of ``table`` for which the filter holds; type clashes become InvalidFilter."""
        try:
            return table.filter(self.expression)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidFilter(f"cannot evaluate the filter on this data: {exc}") from exc


def compile_filter(node: FilterNode | None, scope: Scope, schema: TupleSchema) -> CompiledFilter:
    """Type-check ``node`` against ``schema`` and build its expression (``None`` keeps every row)."""
    if node is None:
        return CompiledFilter(pc.scalar(True))
    if depth(node) > MAX_DEPTH:
        raise InvalidFilter(f"the filter nests deeper than {MAX_DEPTH} levels")
    refs: list[FieldRef] = []
    expression = _compile(node, scope, schema, refs)
    return CompiledFilter(expression, refs)


def _compile(node: FilterNode, scope: Scope, schema: TupleSchema, refs: list[FieldRef]) -> pc.Expression:
    if isinstance(node, And):
        parts = [_compile(arg, scope, schema, refs) for arg in node.args]
        return _fold(parts, lambda a, b: a & b)
    if isinstance(node, Or):
        parts = [_compile(arg, scope, schema, refs) for arg in node.args]
        return _fold(parts, lambda a, b: a | b)
    if isinstance(node, Not):
        return ~_compile(node.arg, scope, schema, refs)
    ref = resolve(node.field, scope, schema)  # type: ignore[attr-defined]
    refs.append(ref)
    value = _field_expression(ref)
    if isinstance(node, Exists):
        return value.is_valid()
    if isinstance(node, Compare):
        _check_kind(ref, node.op, [node.value])
        return pc.Expression._call(_COMPARE[node.op], [value, pc.scalar(node.value)])
    if isinstance(node, Between):
        _check_kind(ref, "between", [node.low, node.high])
        return (value >= pc.scalar(node.low)) & (value <= pc.scalar(node.high))
    if isinstance(node, In):
        _check_kind(ref, "in", node.values)
        if not node.values:
            return pc.scalar(False)
        return value.isin(node.values)
    raise InvalidFilter(f"unknown filter node {node!r}")


def _field_expression(ref: FieldRef) -> pc.Expression:
    column = pc.field(ref.column)
    if ref.element is None:
        return column
    return pc.list_element(column, ref.element)


def _fold(parts: list[pc.Expression], combine) -> pc.Expression:
    result = parts[0]
    for part in parts[1:]:
        result = combine(result, part)
    return result


def _check_kind(ref: FieldRef, op: str, values: list) -> None:
    expected: dict[Kind, tuple[type, ...]] = {"number": (int, float), "bool": (bool,), "string": (str,)}
    if ref.kind == "any":
        return
    allowed = expected[ref.kind]
    for value in values:
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and ref.kind == "number"):
            raise InvalidFilter(f"{ref.path} holds {ref.kind}s; it cannot be compared with {value!r}",
                                field=ref.path)
    if ref.kind == "bool" and op not in ("eq", "ne", "in"):
        raise InvalidFilter(f"{ref.path} is a flag; use eq, ne or in, not {op}", field=ref.path)
