"""Uploading: any supported source becomes one Parquet stream, sent in parallel parts.

Sources are a dict of per-step numpy arrays, an Arrow table, a Parquet file, or an iterator of
episodes. A Parquet file is checked first (its magic bytes and footer: a CSV or a file whose
columns break the tuple contract is refused before a byte is sent) and then sent as it is,
straight from disk (:mod:`.parts`), so it can be resumed after Ctrl-C or a dropped connection.
Other sources are written as Parquet straight into a :class:`PartSink`, which cuts the byte
stream into parts and sends each from a small thread pool while the next is written. Either way
memory stays at a few parts or less whatever the size of the upload, and the session is opened
with the schema the columns imply, so an append that does not fit the dataset fails at once.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shlex
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.client.errors import ServerUnreachable, UploadInterrupted, raise_for_problem
from tuplehub.client.parts import FileParts, PresignedURLs, fingerprint, held_parts, send_parts
from tuplehub.client.progress import ByteBar
from tuplehub.client.retries import IDEMPOTENT, ONCE, retry_policy
from tuplehub.storage.contract import inspect_upload
from tuplehub.storage.errors import InvalidUpload
from tuplehub.storage.models import UploadMode
from tuplehub.storage.schema import numpy_to_column, spec_of_array

DEFAULT_PART_SIZE = 32 * 2**20
DEFAULT_PARALLEL = 4
ROW_GROUP_BYTES = 32 * 2**20  # row groups the server can read one at a time in little memory
MAX_PARTS = 10_000  # S3's limit, and the server's default
PARQUET_MAGIC = b"PAR1"
FLOAT_TYPES = (pa.float16(), pa.float32(), pa.float64())


class PartSink:
    """A write-only binary file whose bytes leave as upload parts, ``parallel`` at a time."""

    def __init__(self, http: httpx.Client, session: dict[str, Any], *, parallel: int = DEFAULT_PARALLEL,
                 bar: ByteBar | None = None) -> None:
        self.http = http
        self.bar = bar
        self.session = session
        self.part_size = int(session["part_size"])
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tuplehub-upload")
        self._slots = threading.Semaphore(parallel + 1)  # parts in flight or waiting: bounded memory
        self._futures: list[Future[tuple[int, str]]] = []
        size = session.get("size")  # a declared size bounds the part numbers the server will presign
        last = max(1, -(-int(size) // self.part_size)) if size is not None else None
        self._urls = PresignedURLs(http, session["id"], last) if session["transport"] == "presigned" else None
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
                assert self._urls is not None
                direct, url = self._direct, self._urls.get(number)
                response = retry_policy(self.http).call(lambda: direct.put(url, content=data),
                                                        request=f"PUT part {number}", idempotent=True)
                raise_for_problem(response)
                etag = response.headers["ETag"]
            else:
                response = self.http.put(f"/uploads/{self.session['id']}/parts/{number}", content=data,
                                         headers={"Content-Type": "application/octet-stream"}, timeout=600)
                raise_for_problem(response)
                etag = response.json()["etag"]
            if self.bar is not None:
                self.bar.update(len(data))
            return number, etag
        finally:
            self._slots.release()


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


# --- the upload of a dataset version ------------------------------------------------------------

def upload_dataset(http: httpx.Client, dataset: str, source: Any, *, mode: UploadMode | str,
                   episode_metadata: Mapping[Any, Mapping[str, Any]] | None, part_size: int, parallel: int,
                   compression: str | None, resume: bool, progress: bool | None) -> dict[str, Any]:
    """Send ``source`` (see ``Dataset.upload``) as ``dataset``'s next version; the ingest job's record."""
    mode = UploadMode(mode)
    metadata = {str(key): dict(value) for key, value in (episode_metadata or {}).items()}
    if isinstance(source, str | Path):
        return _upload_file(http, dataset, Path(source), mode=mode, metadata=metadata, part_size=part_size,
                            parallel=parallel, resume=resume, progress=progress)
    if resume:
        raise ValueError("resume=True needs the path of a Parquet file: only a file can be sent again in part")
    late_metadata: dict[str, dict[str, Any]] = {}
    tables = _tables_of(source, late_metadata)
    first = next(tables, None)
    if first is None:
        raise ValueError("nothing to upload: the source holds no rows")
    session = _open_session(http, dataset, {"mode": mode.value, "part_size": part_size,
                                            "episode_metadata": metadata, "schema": _table_schema(first)})
    with ByteBar(f"upload {dataset}", None, progress=progress) as bar:
        sink = PartSink(http, session, parallel=parallel, bar=bar)
        try:
            write_parquet(itertools.chain([first], tables), sink, compression=compression)
            parts = sink.finish()
        except BaseException as exc:
            sink.abort()
            with contextlib.suppress(Exception):
                http.delete(f"/uploads/{session['id']}", extensions=ONCE)
            if isinstance(exc, KeyboardInterrupt):
                raise UploadInterrupted(session["id"], 0, 0) from None
            raise
    return _complete(http, session["id"], parts, late_metadata)


def _tables_of(source: Any, late_metadata: dict[str, dict[str, Any]]) -> Iterator[pa.Table]:
    if isinstance(source, pa.Table):
        return iter([source])
    if isinstance(source, Mapping):
        return iter([table_from_arrays(source)])
    if _is_frame(source):
        from tuplehub.client.converters.frames import from_frame

        return iter([table_from_arrays(from_frame(source))])
    return tables_from_episodes(source, late_metadata)


def _is_frame(source: object) -> bool:
    """A pandas DataFrame, recognised without importing pandas."""
    return type(source).__module__.startswith("pandas") and hasattr(source, "columns")


def implied_schema(arrow_schema: pa.Schema, first: pa.RecordBatch | None) -> dict[str, Any] | None:
    """The tuple schema the server will derive from these columns, for the session to check an append.

    None when the columns break the contract: the server stays the one judge of that, and its
    ingest job reports the column, row and reason.
    """
    try:
        return inspect_upload(arrow_schema, first).schema.model_dump(mode="json")
    except InvalidUpload:
        return None


def _table_schema(table: pa.Table) -> dict[str, Any] | None:
    return implied_schema(table.schema, table.slice(0, 1).to_batches()[0] if len(table) else None)


def parquet_schema(path: Path) -> dict[str, Any] | None:
    """The tuple schema a Parquet file implies, from its magic bytes and footer, without reading its rows.

    Anything that is not Parquet (a CSV, a truncated copy) is refused with a hint, before any byte
    goes to the server; None when the footer or columns are broken (the server judges those).
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, size - 4))
        tail = handle.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise InvalidUpload(f"{path} is not a Parquet file (it does not begin and end with PAR1); tuplehub "
                            "takes Parquet files of tuples. From pandas, upload the frame itself: "
                            "`ds.upload(pd.read_csv(...))`", reason="not-parquet")
    try:
        parquet = pq.ParquetFile(path)
        lists = [f.name for f in parquet.schema_arrow if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
        first = next(parquet.iter_batches(batch_size=1, columns=lists), None) if lists else None
    except (pa.ArrowInvalid, OSError):
        return None  # a damaged footer: the ingest job names what is wrong with it
    return implied_schema(parquet.schema_arrow, first)


def _upload_file(http: httpx.Client, dataset: str, path: Path, *, mode: UploadMode,
                 metadata: dict[str, dict[str, Any]], part_size: int, parallel: int, resume: bool,
                 progress: bool | None) -> dict[str, Any]:
    """Send a Parquet file as it is, from disk; with ``resume``, only the parts the server lacks.

    An interrupted or cut-off file upload keeps its session (until it expires) so it can resume;
    any other failure cancels it.
    """
    schema = parquet_schema(path)
    size, content = path.stat().st_size, fingerprint(path)
    session = _resumable(http, dataset, mode, content) if resume else None
    resumed = session is not None
    if session is None:
        part_size = max(part_size, math.ceil(size / MAX_PARTS))
        session = _open_session(http, dataset, {
            "mode": mode.value, "part_size": part_size, "episode_metadata": metadata, "size": size,
            "fingerprint": content, "schema": schema})
    parts = FileParts(path, size, int(session["part_size"]))
    held = held_parts(http, session["id"], parts, progress=progress) if resumed else {}
    initial = sum(parts.length(number) for number in held)
    resume_with = f"`{resume_command(dataset, path, mode)}` (Python: upload(..., resume=True)) before " \
        f"{session['expires_at']}"
    try:
        with ByteBar(f"upload {path.name}", size, progress=progress, initial=initial) as bar:
            sent = send_parts(http, session, parts, held=held, parallel=parallel, bar=bar)
    except UploadInterrupted as exc:
        raise UploadInterrupted(exc.upload_id, exc.sent, exc.total, resume_with) from None
    except httpx.TransportError as exc:  # the connection dropped: the parts that arrived stay for a resume
        raise ServerUnreachable(str(http.base_url), exc, hint=(
            f"the upload session is kept: once the server answers, send only the missing parts with "
            f"{resume_with}")) from exc
    except BaseException:
        with contextlib.suppress(Exception):
            http.delete(f"/uploads/{session['id']}", extensions=ONCE)
        raise
    return _complete(http, session["id"], sent, metadata if resumed else {})


def resume_command(dataset: str, path: Path, mode: UploadMode | str) -> str:
    """The command that resumes this upload: a resume looks for a session of the same mode, so it names it."""
    words = ["tuplehub", "upload", "--resume", dataset, str(path)]
    return shlex.join(words if UploadMode(mode) is UploadMode.append else [*words, "--mode", UploadMode(mode).value])


def _resumable(http: httpx.Client, dataset: str, mode: UploadMode, content: str) -> dict[str, Any] | None:
    """The newest open session of this file (same content fingerprint and mode), if any."""
    response = http.get(f"/datasets/{dataset}/uploads")
    raise_for_problem(response)
    for session in response.json():
        if session["fingerprint"] == content and session["mode"] == mode.value:
            return session
    return None


def _open_session(http: httpx.Client, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
    # Sent again if its answer is lost: the session opened first is never used, and expires.
    response = http.post(f"/datasets/{dataset}/uploads", json=body, extensions=IDEMPOTENT)
    raise_for_problem(response)
    return response.json()


def _complete(http: httpx.Client, upload_id: str, parts: list[dict[str, Any]],
              metadata: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # The API answers a repeated completion with the first one's job, so a lost answer is asked for again.
    response = http.post(f"/uploads/{upload_id}/complete", json={"parts": parts, "episode_metadata": metadata},
                         extensions=IDEMPOTENT)
    raise_for_problem(response)
    return response.json()


def send_file(http: httpx.Client, session: Mapping[str, Any], path: Path, *, parallel: int = DEFAULT_PARALLEL,
              progress: bool | None = None) -> list[dict[str, Any]]:
    """Send a file as it is (an artifact) from disk; the ``parts`` list for ``complete``."""
    parts = FileParts(path, path.stat().st_size, int(session["part_size"]))
    with ByteBar(f"upload {path.name}", parts.size, progress=progress) as bar:
        return send_parts(http, session, parts, held={}, parallel=parallel, bar=bar)
