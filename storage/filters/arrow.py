"""Compile a filter to one Arrow compute expression: the definition of what a filter means.

Catalog queries and zone maps may only narrow what is read before this expression runs
(:mod:`tuplehub.storage.filters.prune`); the rows an export returns are exactly the rows for
which this expression is true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tuplehub.storage.errors import InvalidFilter
from tuplehub.storage.filters.fields import FieldRef, Kind, Scope, resolve
from tuplehub.storage.filters.language import (
    And,
    Between,
    Compare,
    Exists,
    FilterNode,
    In,
    Not,
    Or,
    check_size,
)
from tuplehub.storage.schema import TupleSchema

_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
            "ge": "greater_equal"}


@dataclass
class CompiledFilter:
    """An expression plus the fields it reads, so callers build only the columns it needs."""

    expression: pc.Expression
    fields: list[FieldRef] = field(default_factory=list)
    metadata_kinds: dict[str, Kind] = field(default_factory=dict)
    """The kind of value each metadata path is compared with (see :func:`metadata_column`)."""

    def columns(self, level: str) -> set[str]:
        return {ref.column for ref in self.fields if ref.level == level}

    def mask(self, table: pa.Table) -> np.ndarray:
        """Per row, whether the filter holds (a null counts as not), for callers that mix masks."""
        numbered = table.append_column("__row", pa.array(np.arange(len(table), dtype=np.int64)))
        out = np.zeros(len(table), dtype=bool)
        out[self.apply(numbered).column("__row").to_numpy()] = True
        return out

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
    check_size(node)  # bounds the recursion below
    compiled = CompiledFilter(pc.scalar(True))
    try:
        compiled.expression = _compile(node, scope, schema, compiled)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidFilter(f"the filter's values cannot be compared: {exc}") from exc
    return compiled


def metadata_column(values: list[Any], kind: Kind | None) -> pa.Array:
    """A metadata path's values as the column a filter compares.

    Free-form metadata may hold different types under one key across episodes. A value of another
    kind than the filter compares it with counts as missing (so ``metadata.month == 3`` simply
    does not match an episode whose month is ``"March"``); with no comparison (``exists`` only) the
    column just tells which episodes have the key.
    """
    def is_number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if kind == "number":
        kept = [v if is_number(v) else None for v in values]
        as_float = any(isinstance(v, float) or (isinstance(v, int) and abs(v) >= 2**63) for v in kept)
        return pa.array([float(v) if v is not None and as_float else v for v in kept],
                        pa.float64() if as_float else pa.int64())
    if kind == "string":
        return pa.array([v if isinstance(v, str) else None for v in values], pa.string())
    if kind == "bool":
        return pa.array([v if isinstance(v, bool) else None for v in values], pa.bool_())
    return pa.array([True if v is not None else None for v in values], pa.bool_())


def _compile(node: FilterNode, scope: Scope, schema: TupleSchema, out: CompiledFilter) -> pc.Expression:
    if isinstance(node, And):
        return _fold([_compile(arg, scope, schema, out) for arg in _operands(node)], lambda a, b: a & b)
    if isinstance(node, Or):
        return _fold([_compile(arg, scope, schema, out) for arg in _operands(node)], lambda a, b: a | b)
    if isinstance(node, Not):
        return ~_compile(node.arg, scope, schema, out)
    # And, Or and Not are handled above: what is left is a field node (an unknown one is refused below).
    leaf = cast("Compare | In | Between | Exists", node)
    ref = resolve(leaf.field, scope, schema)
    out.fields.append(ref)
    value = _field_expression(ref)
    if isinstance(leaf, Exists):
        return value.is_valid()
    literals = [leaf.value] if isinstance(leaf, Compare) else [leaf.low, leaf.high] \
        if isinstance(leaf, Between) else list(leaf.values)
    _check_kind(ref, leaf.op, literals)
    if ref.kind == "any":
        _note_metadata_kind(ref, literals, out.metadata_kinds)
    if ref.floating:  # 2**53 + 1 is a fine float bound, but Arrow refuses it as an integer
        literals = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in literals]
    if isinstance(leaf, Compare):
        return pc.Expression._call(_COMPARE[leaf.op], [value, pc.scalar(literals[0])])
    if isinstance(leaf, Between):
        return (value >= pc.scalar(literals[0])) & (value <= pc.scalar(literals[1]))
    if isinstance(leaf, In):
        if not literals:
            return pc.scalar(False)
        # A missing value is unknown, not "not in": keep it null so that `not` stays false too.
        return pc.if_else(value.is_valid(), value.isin(literals), pa.scalar(None, pa.bool_()))
    raise InvalidFilter(f"unknown filter node {node!r}")


def _note_metadata_kind(ref: FieldRef, literals: list[Any], kinds: dict[str, Kind]) -> None:
    """A metadata path is compared with one kind of value throughout a filter."""
    for value in literals:
        kind: Kind = "bool" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
        if kinds.setdefault(ref.column, kind) != kind:
            raise InvalidFilter(f"{ref.path} is compared with both {kinds[ref.column]}s and {kind}s; a filter "
                                "compares one metadata key with one kind of value", field=ref.path)


def _field_expression(ref: FieldRef) -> pc.Expression:
    column = pc.field(ref.column)
    if ref.element is None:
        return column
    return pc.list_element(column, ref.element)


# Operands Arrow chains directly. Arrow flattens every chain of one associative operator (``and``
# inside ``and``) and folds it back up left-deep; binding and evaluating recurse once per level,
# so a 20,000-term ``or`` overflowed the C stack and killed the whole process (10,000 already did).
_CHAIN = 64
_TRUE, _FALSE = pa.scalar(True), pa.scalar(False)


def _operands(node: And | Or) -> list[FilterNode]:
    """The operands of ``node`` with nested nodes of the same operator spliced in (``a & (b & c)``)."""
    operands: list[FilterNode] = []
    pending = list(reversed(node.args))
    while pending:
        arg = pending.pop()
        if type(arg) is type(node):
            pending.extend(reversed(arg.args))
        else:
            operands.append(arg)
    return operands


def _fold(parts: list[pc.Expression], combine: Callable[[pc.Expression, pc.Expression], pc.Expression]
          ) -> pc.Expression:
    """Combine ``parts`` into a tree of chains of at most :data:`_CHAIN` operands.

    Each chain below the top is wrapped in ``if_else(chain, true, false)``, the identity on
    booleans (null stays null), which Arrow does not flatten through: the tree keeps
    ``log64(n)`` levels of short chains, and the expression nests ~200 levels for 20,000 terms.
    """
    while True:
        chains = []
        for start in range(0, len(parts), _CHAIN):
            chain = parts[start]
            for part in parts[start + 1:start + _CHAIN]:
                chain = combine(chain, part)
            chains.append(chain)
        if len(chains) == 1:
            return chains[0]
        parts = [pc.if_else(chain, _TRUE, _FALSE) for chain in chains]


def _check_kind(ref: FieldRef, op: str, values: list[Any]) -> None:
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
