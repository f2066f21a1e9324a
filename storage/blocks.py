"""Tuple blocks: contiguous rows of one ingest, stored in the catalog as compressed Arrow IPC.

A block holds a few MB of rows in the layout of :meth:`TupleSchema.stored_schema` plus a *tail*:
the next observation of each row whose successor is not the following row of the block (the
last row of each episode, and the block's own last row). Every other row's next observation is
the following row's observation, so exports offer ``next_observation`` for every row while the
store keeps each observation once. Zone maps (min/max per numeric column and tensor element)
let exports skip blocks a filter cannot match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from tuplehub.storage.errors import InvalidUpload
from tuplehub.storage.schema import TupleSchema, column_to_numpy

# Raw bytes per block: well under MongoDB's 16 MB document cap even if nothing compresses, and
# large enough that per-block overhead (a catalog write, an IPC header) stays small.
BLOCK_TARGET_BYTES = 8 * 2**20
# LZ4 decodes at memory speed; zstd saves ~5% on float data for twice the CPU (perf-floor.md).
BLOCK_COMPRESSION = "lz4"
# Per-element zone maps are kept for tensors up to this many elements. An image observation would
# need megabytes of them per block (past MongoDB's 16 MB document cap at 512x512x3), and filters on
# single pixels are rare, so larger tensors get no zone map and are never pruned by element.
ZONE_MAX_ELEMENTS = 4096


class BlockRecord(BaseModel):
    """One block as the catalog stores it; ``data`` and ``tail`` are Arrow IPC streams."""

    segment: str
    seq: int
    row_start: int
    rows: int
    first_episode: int
    last_episode: int
    zones: dict[str, Any]
    data: bytes = b""
    tail: bytes = b""


def rows_per_block(schema: TupleSchema) -> int:
    return max(1, BLOCK_TARGET_BYTES // schema.row_bytes())


def encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=BLOCK_COMPRESSION)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=len(table) or None)
    return sink.getvalue().to_pybytes()


def decode(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def zone_map(table: pa.Table, schema: TupleSchema) -> dict[str, Any]:
    """Min and max of each numeric column; tensors get per-element lists ``[mins, maxs]``.

    Integers stay exact Python ints (a float would round 2**53 + 1 and let pruning skip a match).
    A column holding NaN (only ``info.*`` may) gets no zone map: ``NaN != 5`` holds, so no range
    could say which blocks a ``ne`` filter may skip.
    """
    zones: dict[str, Any] = {}
    for name in ("step", "reward", *(f"info.{key}" for key in schema.info)):
        column = table.column(name)
        values = column.drop_null().to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f" and np.isnan(values).any():
            continue
        if values.size and values.dtype.kind in "iuf":
            zones[name] = [values.min().item(), values.max().item()]
    for name, spec in (("observation", schema.observation), ("action", schema.action)):
        if spec.size > ZONE_MAX_ELEMENTS:
            continue
        values = column_to_numpy(table.column(name), spec).reshape(len(table), -1)
        if values.size and values.dtype.kind in "iuf":
            low, high = values.min(axis=0).tolist(), values.max(axis=0).tolist()
            zones[name] = [low, high] if spec.shape else [low[0], high[0]]
    return zones


def next_observations(table: pa.Table, tail: pa.Table, schema: TupleSchema) -> pa.Array:
    """``next_observation`` of every row of a block; null where the upload did not give it."""
    spec = schema.observation
    obs = column_to_numpy(table.column("observation"), spec)
    out = np.empty_like(obs)
    out[:-1] = obs[1:]
    valid = np.ones(len(table), dtype=bool)
    rows = tail.column("row").to_numpy()
    given = tail.column("next_observation")
    valid[rows] = given.is_valid().to_numpy(zero_copy_only=False)
    known = rows[valid[rows]]
    if known.size:
        out[known] = column_to_numpy(given.filter(given.is_valid()), spec)
    invalid = None if valid.all() else ~valid
    if spec.is_scalar:
        return pa.array(out, mask=invalid)
    mask = None if invalid is None else pa.array(invalid)
    return pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1)), spec.size, mask=mask)


class BlockBuilder:
    """Cuts a stream of normalised rows into blocks and works out each block's tail.

    Rows arrive as tables in the stored layout, plus ``next_observation`` when the upload had it.
    A block is cut only once the row after it has arrived, because a block's last row takes its
    next observation from that row when the episode goes on.
    """

    def __init__(self, schema: TupleSchema, segment: str, *, block_rows: int | None = None) -> None:
        self.schema = schema
        self.segment = segment
        self.block_rows = block_rows or rows_per_block(schema)
        self._stored = schema.stored_schema()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._seq = 0
        self._row_start = 0

    def add(self, table: pa.Table) -> Iterator[BlockRecord]:
        self._pending.append(table)
        self._pending_rows += len(table)
        yield from self._cut_while(lambda remaining: remaining > self.block_rows)

    def finish(self) -> Iterator[BlockRecord]:
        yield from self._cut_while(lambda remaining: remaining > 0)

    def _cut_while(self, more: Callable[[int], bool]) -> Iterator[BlockRecord]:
        if not more(self._pending_rows):
            return
        buffered = pa.concat_tables(self._pending)  # chunks side by side; each block copies its own
        offset = 0
        while more(self._pending_rows - offset):
            n = min(self.block_rows, self._pending_rows - offset)
            block = buffered.slice(offset, n).combine_chunks()
            successor = buffered.slice(offset + n, 1) if offset + n < len(buffered) else None
            yield self._record(block, successor)
            self._seq += 1
            self._row_start += n
            offset += n
        self._pending = [buffered.slice(offset)] if offset < len(buffered) else []
        self._pending_rows -= offset

    def _record(self, block: pa.Table, successor: pa.Table | None) -> BlockRecord:
        episode = block.column("episode").to_numpy()
        n = len(block)
        ends = np.flatnonzero(episode[1:] != episode[:-1])
        continues = successor is not None and successor.column("episode")[0].as_py() == episode[-1]
        given = block.column("next_observation") if "next_observation" in block.column_names else None
        if given is not None:
            self._check_given(block, successor if continues else None, ends)
        tail_rows = np.append(ends, n - 1).astype(np.int32)
        if continues:
            assert successor is not None  # continues says so
            last_next = successor.column("observation")
            values = pa.concat_arrays([given.take(ends).combine_chunks() if given is not None
                                       else pa.nulls(len(ends), last_next.type),
                                       last_next.combine_chunks()])
        elif given is not None:
            values = given.take(tail_rows).combine_chunks()
        else:
            values = pa.nulls(len(tail_rows), self._stored.field("observation").type)
        tail = pa.table({"row": tail_rows, "next_observation": values})
        stored = block.select(self._stored.names).cast(self._stored)
        return BlockRecord(
            segment=self.segment, seq=self._seq, row_start=self._row_start, rows=n,
            first_episode=int(episode[0]), last_episode=int(episode[-1]),
            zones=zone_map(stored, self.schema), data=encode(stored), tail=encode(tail))

    def _check_given(self, block: pa.Table, successor: pa.Table | None, ends: np.ndarray) -> None:
        """A given next_observation must equal the following row's observation inside an episode."""
        spec = self.schema.observation
        obs = column_to_numpy(block.column("observation"), spec).reshape(len(block), -1)
        column = block.column("next_observation")
        missing = column.is_null().to_numpy(zero_copy_only=False)
        given = column_to_numpy(column, spec).reshape(len(block), -1)
        if successor is not None:
            nxt = column_to_numpy(successor.column("observation"), spec).reshape(1, -1)
            obs = np.concatenate([obs[1:], nxt])
            inside = np.ones(len(block), dtype=bool)
        else:
            obs, given, missing = obs[1:], given[:-1], missing[:-1]
            inside = np.ones(len(block) - 1, dtype=bool)
        inside[ends] = False
        null_inside = np.flatnonzero(inside & missing)
        if null_inside.size:
            raise InvalidUpload("missing value (null) inside an episode; only an episode's last row may leave "
                                "next_observation out", column="next_observation",
                                row=self._row_start + int(null_inside[0]), reason="null")
        differs = np.flatnonzero(inside & np.any(given != obs, axis=1))
        if differs.size:
            row = self._row_start + int(differs[0])
            raise InvalidUpload(
                "differs from the observation of the next row of the same episode; next_observation "
                "must be the observation that follows", column="next_observation", row=row,
                reason="inconsistent-next-observation")
