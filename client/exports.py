"""Export results on the client: numpy arrays, an Arrow table, record batches, or a file.

An Arrow-format result is decoded while it downloads: batches come straight off the HTTP stream
and are copied once into arrays allocated at their final size, so the result never sits on disk
or twice in memory. A Parquet result needs its footer first, so it is downloaded to a temporary
file and read a row group at a time. Results come through a presigned URL when the store gives
one, else from the API.
"""

from __future__ import annotations

import contextlib
import io
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
from tuplehub.client.progress import content_length, save
from tuplehub.client.retries import retry_policy
from tuplehub.storage.schema import column_to_numpy, spec_of_field

DOWNLOAD_CHUNK = 4 * 2**20


class Export(Job):
    """An export job; reading its result waits for it first."""

    @property
    def format(self) -> str:
        return str(self.record.params.get("request", {}).get("format", "parquet"))

    @contextlib.contextmanager
    def _body(self) -> Iterator[httpx.Response]:
        """The result's HTTP response, streaming; the job is waited for first."""
        if not self.status.finished:
            self.wait()
        answer = self._call("GET", f"/exports/{self.id}/url")
        if answer.get("expires_at") is None:
            with self._http.stream("GET", f"/exports/{self.id}/file", timeout=600) as stream:
                yield _checked(stream)
            return
        # Presigned: API credentials must not go along, so another client, under the same retry policy.
        with httpx.Client(timeout=600) as store:
            request = store.build_request("GET", answer["url"])
            stream = retry_policy(self._http).call(lambda: store.send(request, stream=True),
                                                   request=f"GET export {self.id}", idempotent=True)
            try:
                yield _checked(stream)
            finally:
                stream.close()

    def download(self, path: str | Path, *, progress: bool | None = None) -> Path:
        """Save the result file (Parquet, or an Arrow IPC stream, as requested) at ``path``.

        ``progress=None`` shows a byte bar (size, rate, time left) when stderr is a terminal.
        """
        path = Path(path)
        with self._body() as stream:
            return save(stream.iter_raw(DOWNLOAD_CHUNK), path, desc=f"download {path.name}",
                        total=content_length(stream), progress=progress)

    @contextlib.contextmanager
    def _batches(self, batch_size: int = 65_536) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
        if self.format == "arrow":
            with self._body() as stream:
                reader = pa.ipc.open_stream(io.BufferedReader(_StreamFile(stream.iter_raw(DOWNLOAD_CHUNK))))
                yield reader.schema, iter(reader)
            return
        folder = Path(tempfile.mkdtemp(prefix="tuplehub-export-"))
        try:
            parquet = pq.ParquetFile(self.download(folder / f"{self.id}.parquet", progress=False))
            yield parquet.schema_arrow, parquet.iter_batches(batch_size=batch_size)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The result as record batches, read as they arrive: for results larger than memory."""
        with self._batches(batch_size) as (_, batches):
            yield from batches

    def to_arrow(self) -> pa.Table:
        with self._batches() as (schema, batches):
            return pa.Table.from_batches(list(batches), schema=schema)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Each column as an array; tensors come back as (rows, *shape) in their own dtype.

        A ``next_observation`` the upload did not give (an episode's last row) is NaN for float
        observations and 0 otherwise; :meth:`to_arrow` keeps it as null.
        """
        if not self.status.finished:
            self.wait(progress=False)
        with self._batches() as (schema, batches):
            assert self.result is not None  # the server streams the file of a succeeded export only
            rows = int(self.result["rows"])
            return fill_arrays(schema, batches, rows)


    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per step, tensors as ``observation[i]`` columns (needs pandas)."""
        from tuplehub.client.converters.frames import to_frame

        return to_frame(self.to_numpy())

    def to_d4rl(self) -> dict[str, np.ndarray]:
        """A D4RL dict (``next_observations`` when the export has them); see :mod:`.converters.d4rl`."""
        from tuplehub.client.converters.d4rl import to_d4rl

        return to_d4rl(self.to_numpy())


def _checked(stream: httpx.Response) -> httpx.Response:
    """The streaming response, or the error it answers."""
    if not stream.is_success:
        stream.read()
        raise_for_problem(stream)
    return stream


class _StreamFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, for pyarrow's stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def fill_arrays(schema: pa.Schema, batches: Iterator[pa.RecordBatch], rows: int) -> dict[str, np.ndarray]:
    """Copy batches into arrays allocated once at their final size (one copy, no concatenation)."""
    specs = {field.name: spec_of_field(field) for field in schema}
    out = {name: np.empty((rows, *spec.shape), dtype=np.dtype(spec.dtype)) for name, spec in specs.items()}
    offset = 0
    for batch in batches:
        n = batch.num_rows
        if offset + n > rows:
            raise ValueError(f"the export holds more than the {rows} rows its job reported")
        for name, spec in specs.items():
            column = batch.column(name)
            out[name][offset:offset + n] = column_to_numpy(_fill_missing(column) if column.null_count else column,
                                                           spec)
        offset += n
    if offset != rows:
        raise ValueError(f"the export holds {offset} rows, its job reported {rows}")
    return out


def _fill_missing(column: pa.Array) -> pa.Array:
    """Nulls as NaN (floats) or 0: numpy arrays have no nulls."""
    value_type = column.type.value_type if pa.types.is_fixed_size_list(column.type) else column.type
    fill: Any = float("nan") if pa.types.is_floating(value_type) else False if pa.types.is_boolean(value_type) else 0
    if not pa.types.is_fixed_size_list(column.type):
        return column.fill_null(pa.scalar(fill, value_type))
    size = column.type.list_size
    values = column.values.slice(column.offset * size, len(column) * size).to_numpy(zero_copy_only=False).copy()
    values[np.repeat(column.is_null().to_numpy(zero_copy_only=False), size)] = fill
    return pa.FixedSizeListArray.from_arrays(pa.array(values), size)
