"""Export results on the client: download once, then numpy arrays, an Arrow table or batches.

The result file is fetched through a presigned URL when the store gives one, else streamed from
the API, into a temporary file; it is then read with pyarrow. ``iter_batches`` reads the file a
batch at a time, for results larger than memory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.client.errors import raise_for_problem
from tuplehub.client.jobs import Job
from tuplehub.storage.schema import SHAPE_KEY, TensorSpec, column_to_numpy

DOWNLOAD_CHUNK = 4 * 2**20


class Export(Job):
    """An export job; reading its result waits for it first."""

    def download(self, path: str | Path, *, progress: bool | None = None) -> Path:
        """Save the result file (Parquet or Arrow IPC stream, as requested) at ``path``."""
        if not self.status.finished:
            self.wait(progress=progress)
        path = Path(path)
        response = self._http.get(f"/exports/{self.id}/url")
        raise_for_problem(response)
        answer = response.json()
        direct = answer.get("expires_at") is not None  # presigned: no API credentials may go along
        url = answer["url"] if direct else f"/exports/{self.id}/file"
        client = httpx.Client(timeout=600) if direct else self._http
        try:
            with client.stream("GET", url, timeout=600) as stream:
                if not stream.is_success:
                    stream.read()
                    raise_for_problem(stream)
                with path.open("wb") as handle:
                    for chunk in stream.iter_bytes(DOWNLOAD_CHUNK):
                        handle.write(chunk)
        finally:
            if direct:
                client.close()
        return path

    @contextlib.contextmanager
    def _local_copy(self) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix="tuplehub-export-"))
        try:
            yield self.download(folder / f"{self.id}.{self._format}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def _format(self) -> str:
        return str(self.record.params.get("request", {}).get("format", "parquet"))

    def to_arrow(self) -> pa.Table:
        with self._local_copy() as path:
            if self._format == "arrow":
                with pa.OSFile(str(path)) as handle:
                    return pa.ipc.open_stream(handle).read_all()
            return pq.read_table(path, memory_map=False)

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Record batches of the result, read from disk one at a time."""
        with self._local_copy() as path:
            if self._format == "arrow":
                with pa.OSFile(str(path)) as handle:
                    yield from pa.ipc.open_stream(handle)
            else:
                yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Each column as an array; tensors come back as (rows, *shape) in their own dtype.

        A ``next_observation`` the upload did not give (an episode's last row) is NaN for float
        observations and 0 otherwise; :meth:`to_arrow` keeps it as null.
        """
        return table_to_numpy(self.to_arrow())


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for field in table.schema:
        column = table.column(field.name)
        if column.null_count:
            column = _fill_missing(column)
        out[field.name] = column_to_numpy(column, _spec(field))
    return out


def _spec(field: pa.Field) -> TensorSpec:
    arrow_type = field.type
    shape: list[int] = []
    if pa.types.is_fixed_size_list(arrow_type):
        shape = [arrow_type.list_size]
        arrow_type = arrow_type.value_type
        declared = (field.metadata or {}).get(SHAPE_KEY)
        if declared is not None:
            shape = [int(n) for n in declared.decode().strip("[]").split(",")]
    dtype = "object" if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) \
        else np.dtype(arrow_type.to_pandas_dtype()).name
    return TensorSpec(dtype=dtype, shape=shape)


def _fill_missing(column: pa.ChunkedArray) -> pa.ChunkedArray:
    value_type = column.type.value_type if pa.types.is_fixed_size_list(column.type) else column.type
    fill: Any = float("nan") if pa.types.is_floating(value_type) else 0
    if not pa.types.is_fixed_size_list(column.type):
        return column.fill_null(pa.scalar(fill, value_type))
    size = column.type.list_size
    chunks = []
    for chunk in column.chunks:
        values = chunk.values.slice(chunk.offset * size, len(chunk) * size).to_numpy(zero_copy_only=False).copy()
        missing = np.repeat(chunk.is_null().to_numpy(zero_copy_only=False), size)
        values[missing] = fill
        chunks.append(pa.FixedSizeListArray.from_arrays(pa.array(values), size))
    return pa.chunked_array(chunks, type=column.type)
