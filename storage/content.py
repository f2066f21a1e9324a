"""Content hashes of ingested data: equal rows and metadata give equal hashes, however they were cut.

Each column gets two running BLAKE2b hashes: one of its values in a canonical byte form (numbers
as little-endian machine values with one NaN bit pattern, tensors flattened, strings
length-prefixed, nulls as zeros), one of a byte per row saying whether it is null. Both are fed
row-aligned bytes only, so where batches or blocks begin does not matter. The
digest covers column names and types, every column's hash and the episode metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

_DIGEST = 32


def _canonical(array: pa.Array) -> tuple[bytes, bytes]:
    """The values' bytes (nulls as zeros) and one byte per row saying whether it is null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    nulls = array.is_null().to_numpy(zero_copy_only=False).astype(np.uint8).tobytes()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        texts = [(s or "").encode() for s in array.to_pylist()]
        return b"".join(len(v).to_bytes(4, "little") + v for v in texts), nulls
    if pa.types.is_fixed_size_list(array.type):
        # Null rows' slots hold whatever the writer left there: zero them, whole rows at a time.
        width = array.type.list_size
        values = array.values.slice(array.offset * width, len(array) * width).to_numpy(zero_copy_only=False)
        values = values.reshape(len(array), width).copy()
        values[np.frombuffer(nulls, dtype=np.uint8).astype(bool)] = 0
    else:
        if array.null_count:
            array = array.fill_null(False if pa.types.is_boolean(array.type) else 0)
        values = array.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), np.nan, values)  # one NaN pattern
    return np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False)).tobytes(), nulls


class ContentHasher:
    def __init__(self) -> None:
        self._columns: dict[str, Any] = {}
        self._types: dict[str, str] = {}

    def update(self, columns: Mapping[str, pa.Array]) -> None:
        for name, array in columns.items():
            values, nulls = self._columns.setdefault(name, (hashlib.blake2b(digest_size=_DIGEST),
                                                            hashlib.blake2b(digest_size=_DIGEST)))
            self._types.setdefault(name, str(array.type))
            data, flags = _canonical(array)
            values.update(data)
            nulls.update(flags)

    def hexdigest(self, episode_metadata: Mapping[str, Any]) -> str:
        final = hashlib.blake2b(digest_size=_DIGEST)
        for name in sorted(self._columns):
            final.update(f"{name}:{self._types[name]}:".encode())
            values, nulls = self._columns[name]
            final.update(values.digest() + nulls.digest())
        final.update(json.dumps(episode_metadata, sort_keys=True, separators=(",", ":")).encode())
        return final.hexdigest()[:32]
