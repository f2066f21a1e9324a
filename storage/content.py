"""Content hashes of ingested data: equal rows and metadata give equal hashes, however they were cut.

Each column gets its own running BLAKE2b fed with the column's values in a canonical byte form
(numbers as little-endian machine values with one NaN bit pattern, tensors flattened, strings
length-prefixed, nulls zeroed and flagged), so where batches or blocks begin does not matter. The
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


def _canonical(array: pa.Array) -> bytes:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return b"".join(len(v).to_bytes(4, "little") + v for v in (s.encode() for s in array.to_pylist()))
    nulls = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        values = array.flatten().to_numpy(zero_copy_only=False) if not array.null_count else \
            array.fill_null(pa.scalar([0] * width, array.type)).flatten().to_numpy(zero_copy_only=False)
    else:
        values = array.to_numpy(zero_copy_only=False)
        if nulls is not None and values.dtype.kind != "f":
            values = np.where(nulls, 0, values)
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), np.nan, values)  # one NaN pattern
    data = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False)).tobytes()
    return data + (np.packbits(nulls).tobytes() if nulls is not None else b"")


class ContentHasher:
    def __init__(self) -> None:
        self._columns: dict[str, Any] = {}
        self._types: dict[str, str] = {}

    def update(self, columns: Mapping[str, pa.Array]) -> None:
        for name, array in columns.items():
            hasher = self._columns.setdefault(name, hashlib.blake2b(digest_size=_DIGEST))
            self._types.setdefault(name, str(array.type))
            hasher.update(_canonical(array))

    def hexdigest(self, episode_metadata: Mapping[str, Any]) -> str:
        final = hashlib.blake2b(digest_size=_DIGEST)
        for name in sorted(self._columns):
            final.update(f"{name}:{self._types[name]}:".encode())
            final.update(self._columns[name].digest())
        final.update(json.dumps(episode_metadata, sort_keys=True, separators=(",", ":")).encode())
        return final.hexdigest()[:32]
