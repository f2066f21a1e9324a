"""Which field paths a filter may name, resolved against one dataset's schema.

Two scopes exist. An *episode filter* sees the episode records (return, length, flags, steps,
metadata). A *tuple filter* sees each row (reward, step, flags, observation[i], action[i],
info.*) and, joined by episode, the episode fields that do not clash with row fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from tuplehub.storage.errors import InvalidFilter
from tuplehub.storage.schema import TensorSpec, TupleSchema

Kind = Literal["number", "bool", "string", "any"]
Level = Literal["tuple", "episode"]
Scope = Literal["tuple", "episode"]

# Episode record fields and their kinds; metadata.* is "any" (free-form JSON).
EPISODE_FIELDS: dict[str, Kind] = {
    "index": "number", "length": "number", "return": "number", "reward_min": "number",
    "reward_max": "number", "first_step": "number", "last_step": "number",
    "terminated": "bool", "truncated": "bool", "termination": "string",
}
# Fields a tuple filter may borrow from its episode (``terminated``/``truncated`` mean the row's flag).
EPISODE_FIELDS_IN_TUPLES = ("length", "return", "reward_min", "reward_max", "first_step", "last_step",
                            "termination")
FLOATING_EPISODE_FIELDS = ("return", "reward_min", "reward_max")
# Numeric episode fields stored as indexed catalog columns: the only ones a catalog query narrows on.
INDEXED_EPISODE_FIELDS = ("length", "return", "reward_min", "reward_max", "first_step", "last_step")

_INDEX = re.compile(r"^(?P<root>[^\[]+)\[(?P<index>[^\]]*)\]$")


@dataclass(frozen=True)
class FieldRef:
    """A resolved field: the table column that holds it and, for tensors, the element."""

    path: str
    column: str
    kind: Kind
    level: Level
    element: int | None = None
    floating: bool = False  # holds floats: integer literals are compared as floats


def resolve(path: str, scope: Scope, schema: TupleSchema) -> FieldRef:
    """Resolve ``path`` in ``scope`` or raise :class:`InvalidFilter` saying what exists."""
    match = _INDEX.match(path)
    if match:
        return _tensor_element(path, match["root"], match["index"], scope, schema)
    root, _, rest = path.partition(".")
    id_kind: Kind = "number" if schema.episode_id == "int" else "string"
    if root == "metadata" and rest:
        return FieldRef(path, path, "any", "episode")
    if path == "episode_id":
        return FieldRef(path, path, id_kind, scope)
    if scope == "episode":
        if path in EPISODE_FIELDS:
            return FieldRef(path, path, EPISODE_FIELDS[path], "episode", floating=path in FLOATING_EPISODE_FIELDS)
        raise InvalidFilter(f"{path!r} is not an episode field; episode filters can use episode_id, "
                            + ", ".join(EPISODE_FIELDS) + " and metadata.<key>", field=path)
    if path in ("reward", "step"):
        return FieldRef(path, path, "number", "tuple", floating=path == "reward")
    if path in ("terminated", "truncated"):
        return FieldRef(path, path, "bool", "tuple")
    if root == "info" and rest:
        if rest not in schema.info:
            known = ", ".join(f"info.{name}" for name in schema.info) or "none"
            raise InvalidFilter(f"{path!r}: the dataset has no such info column (it has: {known})",
                                field=path)
        kind: Kind = "bool" if schema.info[rest] == "bool" else "number"
        return FieldRef(path, path, kind, "tuple", floating=schema.info[rest].startswith("float"))
    if path in EPISODE_FIELDS_IN_TUPLES:
        return FieldRef(path, path, EPISODE_FIELDS[path], "episode", floating=path in FLOATING_EPISODE_FIELDS)
    raise InvalidFilter(
        f"{path!r} is not a tuple field; tuple filters can use reward, step, terminated, truncated, "
        "observation[i], action[i], info.<name>, episode_id, " + ", ".join(EPISODE_FIELDS_IN_TUPLES)
        + " and metadata.<key>", field=path)


def _tensor_element(path: str, root: str, index_text: str, scope: Scope, schema: TupleSchema) -> FieldRef:
    specs: dict[str, TensorSpec] = {"observation": schema.observation, "action": schema.action}
    if scope == "episode" or root not in specs:
        raise InvalidFilter(f"{path!r}: only observation[i] and action[i] take an index, in tuple filters",
                            field=path)
    spec = specs[root]
    indices = [int(part) for part in index_text.split(",")]
    shape = spec.shape or [1]
    if len(indices) == 1 and indices[0] < max(spec.size, 1):
        element = indices[0]
    elif len(indices) == len(shape) and all(i < n for i, n in zip(indices, shape, strict=True)):
        element = sum(i * math.prod(shape[axis + 1:]) for axis, i in enumerate(indices))
    else:
        raise InvalidFilter(f"{path!r}: index out of range; {root} has shape {spec.shape or '()'} "
                            f"({max(spec.size, 1)} elements)", field=path)
    kind: Kind = "bool" if spec.dtype == "bool" else "number"
    return FieldRef(f"{root}[{element}]", root, kind, "tuple", None if spec.is_scalar else element,
                    floating=spec.is_floating)
