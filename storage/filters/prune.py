"""What may be skipped before a filter runs: blocks by zone map, episodes by catalog query.

Both answers are conservative. ``may_match`` says False only when no row of a block can satisfy
the filter; ``narrowing`` returns only constraints that every matching episode satisfies. The
exact answer always comes from :mod:`tuplehub.storage.filters.arrow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from tuplehub.storage.filters.fields import INDEXED_EPISODE_FIELDS, Scope, resolve
from tuplehub.storage.filters.language import And, Between, Compare, FilterNode, In, Not, Or
from tuplehub.storage.schema import TupleSchema

ZoneMap = dict[str, Any]


def may_match(node: FilterNode | None, zones: ZoneMap, schema: TupleSchema) -> bool:
    """False only if no row of a block with these zone maps can satisfy the tuple filter."""
    if node is None:
        return True
    if isinstance(node, And):
        return all(may_match(arg, zones, schema) for arg in node.args)
    if isinstance(node, Or):
        return any(may_match(arg, zones, schema) for arg in node.args)
    if isinstance(node, Not):
        return True
    bounds = _bounds(node.field, zones, schema)  # type: ignore[attr-defined]
    if bounds is None:
        return True
    low, high = bounds
    if isinstance(node, Compare):
        return _compare_may(node.op, node.value, low, high)
    if isinstance(node, Between):
        return _numeric(node.low) and _numeric(node.high) and high >= node.low and low <= node.high
    if isinstance(node, In):
        return any(_numeric(v) and low <= v <= high for v in node.values) or not all(
            _numeric(v) for v in node.values)
    return True


def _numeric(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare_may(op: str, value: Any, low: float, high: float) -> bool:
    if not _numeric(value):
        return True
    return {
        "eq": low <= value <= high, "ne": not (low == high == value), "lt": low < value,
        "le": low <= value, "gt": high > value, "ge": high >= value,
    }[op]


def _bounds(path: str, zones: ZoneMap, schema: TupleSchema) -> tuple[float, float] | None:
    ref = resolve(path, "tuple", schema)
    if ref.level != "tuple" or ref.kind != "number":
        return None
    entry = zones.get(ref.column)
    if entry is None:
        return None
    if ref.element is None:
        return entry[0], entry[1]
    return entry[0][ref.element], entry[1][ref.element]


@dataclass(frozen=True)
class Constraint:
    """``column op value`` on an indexed numeric episode column."""

    column: str
    op: str  # one of lt le gt ge eq
    value: float


def narrowing(node: FilterNode | None, scope: Scope, schema: TupleSchema) -> list[Constraint]:
    """Constraints implied by an episode filter that a catalog query can use (a conjunction)."""
    if node is None:
        return []
    if isinstance(node, And):
        return [c for arg in node.args for c in narrowing(arg, scope, schema)]
    if isinstance(node, Or | Not):
        return []
    path = node.field  # type: ignore[attr-defined]
    if path not in INDEXED_EPISODE_FIELDS or resolve(path, scope, schema).level != "episode":
        return []
    if isinstance(node, Compare) and node.op != "ne" and _numeric(node.value):
        return [Constraint(path, node.op, float(node.value))]
    if isinstance(node, Between) and _numeric(node.low) and _numeric(node.high):
        return [Constraint(path, "ge", float(node.low)), Constraint(path, "le", float(node.high))]
    return []
