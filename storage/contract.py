"""The tuple contract: what an upload's columns must be, and how they are normalised.

One row per transition: ``episode_id``, optional ``step``, ``observation``, ``action``, ``reward``,
``terminated``, ``truncated``, optional ``next_observation`` and optional scalar ``info.*``
columns. Tensor columns may arrive as fixed-size lists (nested for tensors, or flat with a
``tuplehub.shape`` field metadata) or as variable lists of one length; they leave as the flat
fixed-size layout of :mod:`tuplehub.storage.schema`. Rules that span rows (episode boundaries,
steps, flags) live in :mod:`tuplehub.storage.episodes`.

Every rejection is an :class:`InvalidUpload` naming the column, the row (counted from 0 over the
whole upload) and the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tuplehub.storage.errors import InvalidUpload
from tuplehub.storage.schema import NUMERIC_DTYPES, SHAPE_KEY, TensorSpec, TupleSchema

REQUIRED = ("episode_id", "observation", "action", "reward", "terminated", "truncated")
OPTIONAL = ("step", "next_observation")


@dataclass(frozen=True)
class UploadLayout:
    """What :func:`inspect_upload` learned from an upload's schema and first rows."""

    schema: TupleSchema
    has_step: bool
    has_next_observation: bool


def inspect_upload(arrow_schema: pa.Schema, first: pa.RecordBatch | None) -> UploadLayout:
    """Check the columns of an upload and derive the dataset schema they imply."""
    names = arrow_schema.names
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidUpload("the column appears more than once", column=duplicates[0],
                            reason="duplicate-column")
    for name in REQUIRED:
        if name not in names:
            raise InvalidUpload(f"required column is missing; the upload has {names}", column=name,
                                reason="missing-column")
    for name in names:
        if name not in REQUIRED and name not in OPTIONAL and not _is_info(name):
            raise InvalidUpload(
                "unknown column; allowed are " + ", ".join(REQUIRED + OPTIONAL) + " and info.<name>",
                column=name, reason="unknown-column")

    id_type = arrow_schema.field("episode_id").type
    if pa.types.is_integer(id_type):
        episode_id = "int"
    elif pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
        episode_id = "str"
    else:
        raise InvalidUpload(f"must be integers or strings, not {id_type}", column="episode_id",
                            reason="wrong-type")
    if "step" in names and not pa.types.is_integer(arrow_schema.field("step").type):
        raise InvalidUpload(f"must be integers, not {arrow_schema.field('step').type}", column="step",
                            reason="wrong-type")

    reward_type = arrow_schema.field("reward").type
    if not (pa.types.is_floating(reward_type) or pa.types.is_integer(reward_type)):
        raise InvalidUpload(f"must be numbers, not {reward_type}", column="reward", reason="wrong-type")
    reward = "float32" if pa.types.is_float32(reward_type) else "float64"

    for flag in ("terminated", "truncated"):
        flag_type = arrow_schema.field(flag).type
        if not (pa.types.is_boolean(flag_type) or pa.types.is_integer(flag_type)
                or pa.types.is_floating(flag_type)):
            raise InvalidUpload(f"must be booleans, not {flag_type}", column=flag, reason="wrong-type")

    info = {}
    for name in names:
        if _is_info(name):
            info_type = arrow_schema.field(name).type
            if not (pa.types.is_integer(info_type) or pa.types.is_floating(info_type)
                    or pa.types.is_boolean(info_type)):
                raise InvalidUpload(f"info columns must be numeric or boolean scalars, not {info_type}",
                                    column=name, reason="wrong-type")
            info[name.removeprefix("info.")] = np.dtype(info_type.to_pandas_dtype()).name

    observation = _tensor_spec(arrow_schema.field("observation"), first)
    if "next_observation" in names:
        next_spec = _tensor_spec(arrow_schema.field("next_observation"), first)
        if next_spec != observation:
            raise InvalidUpload(
                f"is {next_spec.describe()} but observation is {observation.describe()}",
                column="next_observation", reason="wrong-type")
    schema = TupleSchema(episode_id=episode_id, observation=observation,
                         action=_tensor_spec(arrow_schema.field("action"), first),
                         reward=reward, info=info)
    return UploadLayout(schema, "step" in names, "next_observation" in names)


def _is_info(name: str) -> bool:
    return name.startswith("info.") and len(name) > len("info.")


def _tensor_spec(field: pa.Field, first: pa.RecordBatch | None) -> TensorSpec:
    shape: list[int] = []
    arrow_type = field.type
    while pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type) \
            or pa.types.is_large_list(arrow_type):
        if pa.types.is_fixed_size_list(arrow_type):
            shape.append(arrow_type.list_size)
        else:
            shape.append(_uniform_length(field.name, first, depth=len(shape)))
        arrow_type = arrow_type.value_type
    try:
        dtype = np.dtype(arrow_type.to_pandas_dtype()).name
    except (NotImplementedError, TypeError):
        dtype = str(arrow_type)
    if dtype not in NUMERIC_DTYPES:
        raise InvalidUpload(f"elements must be numbers or booleans, not {arrow_type}", column=field.name,
                            reason="wrong-type")
    declared = (field.metadata or {}).get(SHAPE_KEY)
    if declared is not None:
        try:
            declared_shape = [int(n) for n in json.loads(declared)]
        except (ValueError, TypeError) as exc:
            raise InvalidUpload(f"its {SHAPE_KEY.decode()} metadata {declared!r} is not a list of sizes",
                                column=field.name, reason="wrong-shape") from exc
        if math.prod(declared_shape) != math.prod(shape):
            raise InvalidUpload(f"declares shape {declared_shape} but holds {math.prod(shape)} elements",
                                column=field.name, reason="wrong-shape")
        shape = declared_shape
    return TensorSpec(dtype=dtype, shape=shape)


def _uniform_length(name: str, first: pa.RecordBatch | None, depth: int) -> int:
    """The length of a variable-list column, read from the first row of the upload."""
    if first is None or first.num_rows == 0:
        raise InvalidUpload("variable-length lists need at least one row to fix their length",
                            column=name, reason="wrong-type")
    column = first.column(name)
    for _ in range(depth):
        column = column.flatten()
    return len(column[0].values)


def normalize_batch(batch: pa.RecordBatch, layout: UploadLayout, first_row: int) -> dict[str, pa.Array]:
    """Columns of ``batch`` in the stored types; rows are numbered from ``first_row``."""
    schema = layout.schema
    out: dict[str, pa.Array] = {}
    for name in batch.schema.names:
        _reject_nulls(batch.column(name), name, first_row)
    ids = batch.column("episode_id")
    out["episode_id"] = _int64(ids, "episode_id", first_row) if schema.episode_id == "int" \
        else ids.cast(pa.large_string())
    if layout.has_step:
        out["step"] = _int64(batch.column("step"), "step", first_row)
    out["observation"] = _tensor(batch.column("observation"), schema.observation, "observation", first_row)
    out["action"] = _tensor(batch.column("action"), schema.action, "action", first_row)
    if layout.has_next_observation:
        out["next_observation"] = _tensor(batch.column("next_observation"), schema.observation,
                                          "next_observation", first_row)
    out["reward"] = batch.column("reward").cast(pa.from_numpy_dtype(np.dtype(schema.reward)))
    for flag in ("terminated", "truncated"):
        out[flag] = _flag(batch.column(flag), flag, first_row)
    for name, dtype in schema.info.items():
        out[f"info.{name}"] = batch.column(f"info.{name}").cast(pa.from_numpy_dtype(np.dtype(dtype)))
    for name in ("reward", "observation", "action", "next_observation"):
        if name in out:
            _require_finite(out[name], name, first_row)
    return out


def _int64(column: pa.Array, name: str, first_row: int) -> pa.Array:
    """Integers as int64; an unsigned value past int64's range is refused at its row."""
    if pa.types.is_uint64(column.type):
        too_big = np.flatnonzero(column.to_numpy(zero_copy_only=False) > np.iinfo(np.int64).max)
        if too_big.size:
            raise InvalidUpload(f"{column[int(too_big[0])].as_py()} does not fit a 64-bit signed integer",
                                column=name, row=first_row + int(too_big[0]), reason="out-of-range")
    return column.cast(pa.int64())


def _reject_nulls(column: pa.Array, name: str, first_row: int, *, per_row: int = 1) -> None:
    """Nulls are refused outside info columns; ``per_row`` values of ``column`` make up one row.

    ``next_observation`` may be null on an episode's last row (its final observation is unknown);
    the block builder refuses a null anywhere else, once episode ends are known.
    """
    if name.startswith("info.") or name == "next_observation" or column.null_count == 0:
        return
    row = _first_true(column.is_null()) // per_row
    raise InvalidUpload("missing value (null)", column=name, row=first_row + row, reason="null")


def _tensor(column: pa.Array, spec: TensorSpec, name: str, first_row: int) -> pa.Array:
    value_type = pa.from_numpy_dtype(np.dtype(spec.dtype))
    if spec.is_scalar:
        return column.cast(value_type)
    if column.null_count:  # whole rows left out (a last row's next_observation): zeros, flagged null
        missing = column.is_null().to_numpy(zero_copy_only=False)
        given = _tensor(column.filter(pa.array(~missing)), spec, name, first_row)
        full = np.zeros((len(column), spec.size), dtype=np.dtype(spec.dtype))
        full[~missing] = given.values.to_numpy(zero_copy_only=False).reshape(-1, spec.size)
        return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), spec.size, mask=pa.array(missing))
    values = column
    n = len(column)
    for depth, size in enumerate(_nesting(column.type, spec)):
        if not pa.types.is_fixed_size_list(values.type):
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(lengths != size)
            if bad.size:
                row = int(bad[0]) // max(1, len(values) // n)
                raise InvalidUpload(
                    f"holds {int(lengths[bad[0]])} elements at depth {depth} where the first row has "
                    f"{size}; vectors must all have one length", column=name, row=first_row + row,
                    reason="ragged")
        values = values.flatten()
        _reject_nulls(values, name, first_row, per_row=max(1, len(values) // max(n, 1)))
    return pa.FixedSizeListArray.from_arrays(values.cast(value_type), spec.size)


def _nesting(arrow_type: pa.DataType, spec: TensorSpec) -> list[int]:
    sizes = []
    while pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type) \
            or pa.types.is_large_list(arrow_type):
        sizes.append(arrow_type.list_size if pa.types.is_fixed_size_list(arrow_type) else None)
        arrow_type = arrow_type.value_type
    if len(sizes) == 1 and sizes[0] is None:
        return [spec.size]
    declared = spec.shape if len(spec.shape) == len(sizes) else [spec.size]
    return [size if size is not None else declared[i] for i, size in enumerate(sizes)]


def _flag(column: pa.Array, name: str, first_row: int) -> pa.Array:
    if pa.types.is_boolean(column.type):
        return column
    values = column.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise InvalidUpload(f"must be true/false or 0/1, found {values[bad[0]]!r}", column=name,
                            row=first_row + int(bad[0]), reason="not-boolean")
    return pa.array(values.astype(bool))


def _require_finite(column: pa.Array, name: str, first_row: int) -> None:
    values = column.values if pa.types.is_fixed_size_list(column.type) else column
    if not pa.types.is_floating(values.type):
        return
    flat = values.to_numpy(zero_copy_only=False)
    # A sum is one cheap pass; it only overflows when the data is suspect anyway.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(flat.sum()):
            return
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size == 0:
        return
    width = len(values) // max(len(column), 1)
    value = flat[bad[0]]
    reason = "nan" if np.isnan(value) else "inf"
    raise InvalidUpload(f"{value} is not a finite number", column=name,
                        row=first_row + int(bad[0]) // width, reason=reason)


def _first_true(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
