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
    literal_types: dict[str, pa.DataType] = field(default_factory=dict)
    """Type of the values each free-form (metadata) field is compared with: the type to give a
    column in which no episode has that key, so ``in`` still applies (and matches nothing)."""

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
    compiled = CompiledFilter(pc.scalar(True))
    compiled.expression = _compile(node, scope, schema, compiled)
    return compiled


def _compile(node: FilterNode, scope: Scope, schema: TupleSchema, out: CompiledFilter) -> pc.Expression:
    if isinstance(node, And):
        return _fold([_compile(arg, scope, schema, out) for arg in node.args], lambda a, b: a & b)
    if isinstance(node, Or):
        return _fold([_compile(arg, scope, schema, out) for arg in node.args], lambda a, b: a | b)
    if isinstance(node, Not):
        return ~_compile(node.arg, scope, schema, out)
    ref = resolve(node.field, scope, schema)  # type: ignore[attr-defined]
    out.fields.append(ref)
    value = _field_expression(ref)
    if isinstance(node, Exists):
        return value.is_valid()
    literals = [node.value] if isinstance(node, Compare) else [node.low, node.high] \
        if isinstance(node, Between) else list(node.values)  # type: ignore[union-attr]
    _check_kind(ref, node.op, literals)
    if ref.kind == "any" and literals:
        out.literal_types.setdefault(ref.column, pa.scalar(literals[0]).type)
    if ref.floating:  # 2**53 + 1 is a fine float bound, but Arrow refuses it as an integer
        literals = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in literals]
    if isinstance(node, Compare):
        return pc.Expression._call(_COMPARE[node.op], [value, pc.scalar(literals[0])])
    if isinstance(node, Between):
        return (value >= pc.scalar(literals[0])) & (value <= pc.scalar(literals[1]))
    if isinstance(node, In):
        if not literals:
            return pc.scalar(False)
        # A missing value is unknown, not "not in": keep it null so that `not` stays false too.
        return pc.if_else(value.is_valid(), value.isin(literals), pa.scalar(None, pa.bool_()))
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
