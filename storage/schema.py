"""The stored shape of a dataset's tuples, and the Arrow <-> numpy conversions that keep it.

Observations and actions are scalars or tensors of any numeric dtype. A scalar is a plain Arrow
column; a tensor is one ``fixed_size_list`` of its flattened elements, with the tensor's shape in
the field metadata (``tuplehub.shape``), so float64 stays float64, int stays int and a (3, 4)
observation comes back as (n, 3, 4) without a copy of the values.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tuplehub.storage.deferred import deferred

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
else:  # the client's models import this module; numpy and pyarrow load when a schema is first used
    np = deferred("numpy")
    pa = deferred("pyarrow")

SHAPE_KEY = b"tuplehub.shape"

NUMERIC_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
})


class TensorSpec(BaseModel):
    """Element dtype (a numpy name) and per-row shape; ``shape == []`` is a scalar."""

    dtype: str = Field(examples=["float32"])
    shape: list[int] = Field(default_factory=list, examples=[[29]])

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    @property
    def is_floating(self) -> bool:
        return self.dtype.startswith("float")

    def arrow_type(self) -> pa.DataType:
        value_type = pa.from_numpy_dtype(np.dtype(self.dtype))
        return value_type if self.is_scalar else pa.list_(value_type, self.size)

    def arrow_field(self, name: str, *, nullable: bool = False) -> pa.Field:
        metadata = None if len(self.shape) < 2 else {SHAPE_KEY: json.dumps(self.shape).encode()}
        return pa.field(name, self.arrow_type(), nullable=nullable, metadata=metadata)

    def describe(self) -> str:
        return self.dtype if self.is_scalar else f"{self.dtype}{self.shape}"


class TupleSchema(BaseModel):
    """What every row of a dataset version holds; two versions may share blocks only if equal."""

    episode_id: Literal["int", "str"] = Field(description="Type of the uploaded episode ids.")
    observation: TensorSpec
    action: TensorSpec
    reward: Literal["float32", "float64"] = "float64"
    info: dict[str, str] = Field(default_factory=dict,
                                 description="Scalar info.* columns and their dtypes.")

    def stored_schema(self) -> pa.Schema:
        """Columns of a tuple block, in order (``episode`` is the segment-local episode index)."""
        fields = [
            pa.field("episode", pa.int32(), nullable=False),
            pa.field("step", pa.int64(), nullable=False),
            self.observation.arrow_field("observation"),
            self.action.arrow_field("action"),
            pa.field("reward", pa.from_numpy_dtype(np.dtype(self.reward)), nullable=False),
            pa.field("terminated", pa.bool_(), nullable=False),
            pa.field("truncated", pa.bool_(), nullable=False),
        ]
        fields += [pa.field(f"info.{name}", pa.from_numpy_dtype(np.dtype(dtype)))
                   for name, dtype in self.info.items()]
        return pa.schema(fields)

    def row_bytes(self) -> int:
        """Uncompressed bytes per row, used to size blocks and upload parts."""
        def width(spec: TensorSpec) -> int:
            return np.dtype(spec.dtype).itemsize * max(spec.size, 1)
        info = sum(np.dtype(dtype).itemsize for dtype in self.info.values())
        return 4 + 8 + width(self.observation) + width(self.action) + 8 + 2 + info

    def export_columns(self) -> list[str]:
        """Every column an export can return, in the order it returns them."""
        base = ["episode_id", "step", "observation", "action", "reward", "terminated", "truncated",
                "next_observation"]
        return base + [f"info.{name}" for name in self.info]


def column_to_numpy(column: pa.ChunkedArray | pa.Array, spec: TensorSpec) -> np.ndarray:
    """An (n, *shape) array of a tensor column; one copy at most (none for one chunk)."""
    dtype = np.dtype(spec.dtype)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = max(spec.size, 1)
    n = sum(len(chunk) for chunk in chunks)
    if len(chunks) == 1:
        flat = _flat_values(chunks[0], spec)
        out = flat if flat.dtype == dtype else flat.astype(dtype)
    else:
        out = np.empty(n * width, dtype=dtype)
        offset = 0
        for chunk in chunks:
            flat = _flat_values(chunk, spec)
            out[offset:offset + flat.size] = flat
            offset += flat.size
    return out.reshape((n, *spec.shape))


def _flat_values(chunk: pa.Array, spec: TensorSpec) -> np.ndarray:
    if spec.is_scalar:
        values = chunk
    else:
        start = chunk.offset * spec.size
        values = chunk.values.slice(start, len(chunk) * spec.size)
    copy_needed = values.null_count > 0 or pa.types.is_boolean(values.type) or not pa.types.is_primitive(values.type)
    return values.to_numpy(zero_copy_only=not copy_needed)


def numpy_to_column(values: np.ndarray, spec: TensorSpec) -> pa.Array:
    """The inverse of :func:`column_to_numpy`; zero-copy for contiguous arrays."""
    values = np.ascontiguousarray(values, dtype=np.dtype(spec.dtype))
    flat = pa.array(values.reshape(-1))
    return flat if spec.is_scalar else pa.FixedSizeListArray.from_arrays(flat, spec.size)


def spec_of_field(field: pa.Field) -> TensorSpec:
    """The spec of a column written by :meth:`TensorSpec.arrow_field` (strings become ``object``)."""
    arrow_type = field.type
    shape: list[int] = []
    if pa.types.is_fixed_size_list(arrow_type):
        declared = (field.metadata or {}).get(SHAPE_KEY)
        shape = json.loads(declared) if declared is not None else [arrow_type.list_size]
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TensorSpec(dtype="object", shape=shape)
    return TensorSpec(dtype=np.dtype(arrow_type.to_pandas_dtype()).name, shape=shape)


def spec_of_array(values: np.ndarray) -> TensorSpec:
    """The spec of per-row values stacked along the first axis."""
    return TensorSpec(dtype=values.dtype.name, shape=list(values.shape[1:]))
