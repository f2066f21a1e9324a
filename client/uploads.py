"""Uploading: any supported source becomes one Parquet stream, sent in parallel parts.

Sources are a dict of per-step numpy arrays, an Arrow table, a Parquet file, or an iterator of
episodes. Parquet is written straight into a :class:`PartSink`, which cuts the byte stream into
parts and sends each from a small thread pool while the next is written, so memory stays at a
few parts whatever the size of the upload. An existing Parquet file is sent as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.client.errors import raise_for_problem
from tuplehub.storage.schema import numpy_to_column, spec_of_array

DEFAULT_PART_SIZE = 32 * 2**20
DEFAULT_PARALLEL = 4
ROW_GROUP_BYTES = 32 * 2**20  # row groups the server can read one at a time in little memory
PRESIGN_BATCH = 16
FLOAT_TYPES = (pa.float16(), pa.float32(), pa.float64())


class PartSink:
    """A write-only binary file whose bytes leave as upload parts, ``parallel`` at a time."""

    def __init__(self, http: httpx.Client, session: dict[str, Any], *, parallel: int = DEFAULT_PARALLEL) -> None:
        self.http = http
        self.session = session
        self.part_size = int(session["part_size"])
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tuplehub-upload")
        self._slots = threading.Semaphore(parallel + 1)  # parts in flight or waiting: bounded memory
        self._futures: list[Future[tuple[int, str]]] = []
        self._urls: dict[int, str] = {}
        self._urls_lock = threading.Lock()
        # Presigned URLs carry their own authorisation; the API client's headers must not go along.
        self._direct = httpx.Client(timeout=600) if session["transport"] == "presigned" else None
        self.bytes_sent = 0
        self.closed = False

    # the file-object protocol pyarrow writes through
    def write(self, data: bytes | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) >= self.part_size:
            self._send(bytes(self._buffer[: self.part_size]))
            del self._buffer[: self.part_size]
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.bytes_sent + len(self._buffer)

    def close(self) -> None:
        self.closed = True

    def finish(self) -> list[dict[str, Any]]:
        """Send what is buffered; wait for every part; the ``parts`` list for ``complete``."""
        if self._buffer or not self._futures:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        try:
            parts = [future.result() for future in self._futures]
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self._direct is not None:
                self._direct.close()
        return [{"number": number, "etag": etag} for number, etag in parts]

    def abort(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._direct is not None:
            self._direct.close()

    def _send(self, data: bytes) -> None:
        self._slots.acquire()
        number = len(self._futures) + 1
        self.bytes_sent += len(data)
        self._futures.append(self._pool.submit(self._put, number, data))
        if self._futures[0].done() and self._futures[0].exception() is not None:
            self._futures[0].result()  # fail fast instead of writing the rest of a doomed upload

    def _put(self, number: int, data: bytes) -> tuple[int, str]:
        try:
            if self.session["transport"] == "presigned":
                assert self._direct is not None
                response = self._direct.put(self._presigned_url(number), content=data)
                if not response.is_success:
                    raise_for_problem(response)
                return number, response.headers["ETag"]
            response = self.http.put(f"/uploads/{self.session['id']}/parts/{number}", content=data,
                                     headers={"Content-Type": "application/octet-stream"}, timeout=600)
            raise_for_problem(response)
            return number, response.json()["etag"]
        finally:
            self._slots.release()

    def _presigned_url(self, number: int) -> str:
        with self._urls_lock:
            if number not in self._urls:
                numbers = list(range(number, number + PRESIGN_BATCH))
                response = self.http.post(f"/uploads/{self.session['id']}/parts", json={"numbers": numbers})
                raise_for_problem(response)
                self._urls.update({item["number"]: item["url"] for item in response.json()})
            return self._urls.pop(number)


# --- sources -> Arrow ----------------------------------------------------------------------------

def table_from_arrays(arrays: Mapping[str, Any]) -> pa.Table:
    """A dict of per-step arrays (episode_id, observation, action, ...) as an Arrow table, zero-copy."""
    columns, fields = [], []
    for name, given in arrays.items():
        values = np.asarray(given)
        spec = spec_of_array(values)
        columns.append(numpy_to_column(values, spec) if values.ndim > 1 else pa.array(values))
        fields.append(spec.arrow_field(name) if values.ndim > 1 else pa.field(name, columns[-1].type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def tables_from_episodes(episodes: Iterable[Mapping[str, Any]],
                         metadata_out: dict[str, dict[str, Any]]) -> Iterator[pa.Table]:
    """Episodes (dicts of per-step arrays, optional ``episode_id`` and ``metadata``) as tables.

    Episodes without an id are numbered from 0 in arrival order; their metadata goes to
    ``metadata_out`` keyed like the upload session expects.
    """
    for number, episode in enumerate(episodes):
        episode = dict(episode)
        episode_id = episode.pop("episode_id", number)
        metadata = episode.pop("metadata", None)
        length = len(np.asarray(episode["reward"]))
        if metadata:
            metadata_out[str(episode_id)] = dict(metadata)
        ids = np.full(length, episode_id, dtype=object if isinstance(episode_id, str) else np.int64)
        yield table_from_arrays({"episode_id": ids, **episode})


def write_parquet(tables: Iterable[pa.Table], sink: Any, *, compression: str | None = "lz4") -> None:
    """Write tables as one Parquet stream, in row groups of about ``ROW_GROUP_BYTES``.

    Dictionary encoding is off for floats (it inflates noisy data), and tensors stay fixed-size
    lists, so the server reads them back with their dtype and shape.
    """
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    pending_bytes = 0
    try:
        for table in tables:
            if writer is None:
                schema = table.schema
                dictionary = [f.name for f in schema if not _is_floating(f.type)]
                writer = pq.ParquetWriter(sink, schema, compression=compression or "none",
                                          use_dictionary=dictionary, write_statistics=["episode_id", "step"])
            pending.append(table)
            pending_bytes += table.nbytes
            if pending_bytes >= ROW_GROUP_BYTES:
                _write_groups(writer, pa.concat_tables(pending))
                pending, pending_bytes = [], 0
        if writer is None:
            raise ValueError("nothing to upload: the source holds no rows")
        if pending:
            _write_groups(writer, pa.concat_tables(pending))
    finally:
        if writer is not None:
            writer.close()


def _write_groups(writer: pq.ParquetWriter, table: pa.Table) -> None:
    rows = max(1, int(len(table) * ROW_GROUP_BYTES / max(table.nbytes, 1)))
    writer.write_table(table, row_group_size=rows)


def _is_floating(arrow_type: pa.DataType) -> bool:
    while pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type):
        arrow_type = arrow_type.value_type
    return arrow_type in FLOAT_TYPES


def send_file(path: Path, sink: PartSink) -> None:
    """Send a file as it is (a Parquet upload, an artifact), a part at a time."""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(sink.part_size), b""):
            sink.write(chunk)
