"""What an upload will cost once decoded, known before its rows are decoded.

Parquet's encodings hide size: a run of zeros is stored as a few bytes whatever its length, so
a 2 KB file can hold rows of 64 MB, and the footer's "uncompressed" sizes count encoded bytes
(626 bytes for 512 MB of zeros). The footer also counts every column chunk's *values*, though,
and values times their width is what Arrow will allocate: that is what sizes ingest batches and
what the tensor limit is checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.storage.episodes import run_starts
from tuplehub.storage.errors import InvalidUpload

# Bytes per decoded value of each Parquet physical type; BYTE_ARRAY (strings) has no fixed width.
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}
TENSOR_COLUMNS = ("observation", "next_observation", "action")


@dataclass(frozen=True)
class DecodedSize:
    """Per row, at most: bytes of the whole row, and values and bytes of each tensor column."""

    row_bytes: int
    tensor_values: dict[str, int]
    tensor_bytes: dict[str, int]


def decoded_size(metadata: pq.FileMetaData) -> DecodedSize:
    """The largest decoded size of one row over the file's row groups (nulls counted as values)."""
    row_bytes = 0
    values: dict[str, int] = {}
    widths: dict[str, int] = {}
    for group in range(metadata.num_row_groups):
        chunks = metadata.row_group(group)
        if chunks.num_rows == 0:
            continue
        group_bytes = 0
        group_values: dict[str, int] = {}
        for index in range(chunks.num_columns):
            chunk = chunks.column(index)
            width = _WIDTH.get(chunk.physical_type)
            if width is None:  # variable or fixed-length byte arrays: their encoded size is all we know
                width = -(-chunk.total_uncompressed_size // max(chunk.num_values, 1))
            group_bytes += chunk.num_values * width
            column = chunk.path_in_schema.split(".", 1)[0]
            if column in TENSOR_COLUMNS:
                group_values[column] = group_values.get(column, 0) + chunk.num_values
                widths[column] = width
        row_bytes = max(row_bytes, -(-group_bytes // chunks.num_rows))
        for column, count in group_values.items():
            values[column] = max(values.get(column, 0), -(-count // chunks.num_rows))
    return DecodedSize(row_bytes, values, {column: count * widths[column] for column, count in values.items()})


def check_tensor_sizes(size: DecodedSize, *, max_bytes: int) -> None:
    """Refuse observations and actions larger than ``max_bytes`` a row, naming the column and size."""
    for column in TENSOR_COLUMNS:
        nbytes = size.tensor_bytes.get(column, 0)
        if nbytes > max_bytes:
            raise InvalidUpload(
                f"one row holds {size.tensor_values[column]:,} values ({_mib(nbytes)}); this server accepts at most "
                f"{_mib(max_bytes)} per observation or action (setting TUPLEHUB_MAX_TENSOR_BYTES)",
                column=column, reason="tensor-too-large", bytes=nbytes, limit=max_bytes)


def check_episode_count(ids: Iterable[pa.RecordBatch], *, max_episodes: int) -> None:
    """Refuse an upload of more than ``max_episodes`` episodes, counted from its id column alone.

    ``ids`` are batches of the ``episode_id`` column, in order. Reading one column first costs a
    fraction of the ingest, and refuses two million one-step episodes in a second instead of after a
    million of them were written. (Episodes are runs of one id here; the ingest checks that runs of
    one id do not repeat.)
    """
    episodes, rows, last = 0, 0, None
    for batch in ids:
        column = batch.column(0)
        if len(column) == 0:
            continue
        starts = run_starts(column)
        if last is not None and column[0].as_py() == last:
            starts = starts[1:]  # the episode goes on from the previous batch
        if episodes + len(starts) > max_episodes:
            raise InvalidUpload(
                f"the upload holds more than {max_episodes:,} episodes, the most this server accepts in one upload "
                "(setting TUPLEHUB_MAX_UPLOAD_EPISODES); send it in parts with mode=append", column="episode_id",
                row=rows + int(starts[max_episodes - episodes]), reason="too-many-episodes", limit=max_episodes)
        episodes += len(starts)
        rows += len(column)
        last = column[-1].as_py()


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**17 else f"{nbytes:,} bytes"
