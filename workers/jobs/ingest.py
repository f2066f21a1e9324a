"""The ``ingest`` job: turn a completed upload into the dataset's next version.

The upload is read batch by batch (memory stays bounded whatever its size), checked against the
tuple contract, cut into blocks and episode records, and written under a segment whose id is the
job id. Nothing is visible until :func:`commit_segment` inserts the version record, so a crash
leaves no partial version, and a retry overwrites its own blocks by (segment, seq) instead of
duplicating them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.storage.blocks import BlockBuilder, BlockRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.content import ContentHasher
from tuplehub.storage.contract import UploadLayout, inspect_upload, normalize_batch
from tuplehub.storage.episodes import EpisodeSplitter, EpisodeStats, run_starts
from tuplehub.storage.errors import InvalidUpload, NotFound
from tuplehub.storage.models import EpisodeRecord, Lineage, Moments, SegmentRef, UploadMode, VersionRecord
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.upload_limits import check_episode_count, check_tensor_sizes, decoded_size
from tuplehub.storage.versions import commit_segment, segment_id
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.metric_schedule import queue_cheap_metrics

logger = logging.getLogger("tuplehub.workers")

BATCH_BYTES = 16 * 2**20  # decoded bytes per batch read: bounds memory whatever the row width
# Episode records built and written at a time: each costs ~2 KB of Python objects until it is written.
EPISODES_PER_STEP = 10_000
READ_BUFFER = 8 * 2**20


@dataclass
class Step:
    """What one batch of the upload produced."""

    blocks: list[BlockRecord]
    episodes: list[EpisodeRecord]
    rows_done: int


@dataclass
class UploadReader:
    """Streams one Parquet upload into blocks and episodes; all of it blocking, CPU-bound work.

    Memory stays bounded by :data:`BATCH_BYTES` of decoded rows and :data:`EPISODES_PER_STEP`
    episode records, whatever the upload holds: a few huge rows or millions of one-step episodes.
    """

    objects: ObjectStore
    key: str
    segment: str
    episode_metadata: dict[str, dict[str, Any]]
    max_tensor_bytes: int | None
    max_episodes: int | None
    total_rows: int = 0
    layout: UploadLayout | None = None
    used_metadata: set[str] = field(default_factory=set)
    content: ContentHasher = field(default_factory=ContentHasher)

    def steps(self) -> Iterator[Step]:
        with self.objects.open_read(self.key) as handle:
            parquet = _open_parquet(handle)
            self.total_rows = parquet.metadata.num_rows
            size = decoded_size(parquet.metadata)
            if self.max_tensor_bytes is not None:
                check_tensor_sizes(size, max_bytes=self.max_tensor_bytes)  # before a single row is decoded
            if self.max_episodes is not None and "episode_id" in parquet.schema_arrow.names:
                check_episode_count(_batches(parquet, 8, columns=["episode_id"]), max_episodes=self.max_episodes)
            batches = _batches(parquet, size.row_bytes)
            first = next(batches, None)
            layout = self.layout = inspect_upload(parquet.schema_arrow, first)
            splitter = EpisodeSplitter(layout)
            builder = BlockBuilder(layout.schema, self.segment)
            for batch in itertools.chain([first] if first is not None else [], batches):
                if batch.num_rows == 0:
                    continue
                columns = normalize_batch(batch, layout, splitter.rows)
                self.content.update(columns)
                for part in _episode_slices(columns):
                    blocks = list(builder.add(splitter.feed(part)))
                    yield Step(blocks, self._records(splitter.collect()), splitter.rows)
            yield Step(list(builder.finish()), self._records(splitter.close()), splitter.rows)
        if splitter.rows == 0:
            raise InvalidUpload("the upload holds no rows", reason="empty")
        unused = sorted(set(self.episode_metadata) - self.used_metadata)
        if unused:
            raise InvalidUpload(f"episode_metadata names episode {unused[0]!r}, which the upload does not "
                                "contain", column="episode_id", reason="unknown-episode-in-metadata")

    def _records(self, finished: list[EpisodeStats]) -> list[EpisodeRecord]:
        records = []
        for stats in finished:
            key = str(stats.episode_id)
            metadata = self.episode_metadata.get(key, {})
            if key in self.episode_metadata:
                self.used_metadata.add(key)
            records.append(EpisodeRecord(
                segment=self.segment, index=stats.index, episode_id=stats.episode_id, row_start=stats.first_row,
                length=stats.length, return_=stats.return_, reward_min=stats.reward_min,
                reward_max=stats.reward_max, first_step=stats.first_step, last_step=stats.last_step,
                terminated=stats.terminated, truncated=stats.truncated, metadata=metadata))
        return records


def _open_parquet(handle: Any) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidUpload(f"the upload is not a readable Parquet file: {exc}", reason="unreadable") from exc


def _batches(parquet: pq.ParquetFile, row_bytes: int, *, columns: list[str] | None = None
             ) -> Iterator[pa.RecordBatch]:
    """Batches of about :data:`BATCH_BYTES` decoded bytes (one row at least), of ``row_bytes`` a row."""
    try:
        yield from parquet.iter_batches(batch_size=max(1, BATCH_BYTES // max(row_bytes, 1)), columns=columns,
                                        use_threads=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidUpload(f"the upload's Parquet data is damaged: {exc}", reason="unreadable") from exc


def _episode_slices(columns: dict[str, pa.Array]) -> Iterator[dict[str, pa.Array]]:
    """``columns`` cut (zero-copy) so that no piece starts more than :data:`EPISODES_PER_STEP` episodes."""
    cuts = run_starts(columns["episode_id"])[EPISODES_PER_STEP::EPISODES_PER_STEP].tolist()
    for start, stop in zip([0, *cuts], [*cuts, len(columns["episode_id"])], strict=True):
        yield {name: array.slice(start, stop - start) for name, array in columns.items()}


async def ingest(ctx: WorkerContext, job_id: str) -> None:
    await run_job(ctx, job_id, _ingest, timeout_s=ctx["settings"].ingest_timeout_s, cleanup=_discard)


async def _ingest(run: JobRun) -> dict[str, Any]:
    return await ingest_upload(run, run.job.params["upload_id"])


async def ingest_upload(run: JobRun, upload_id: str, *, lineage: Lineage | None = None) -> dict[str, Any]:
    """Turn one completed upload into the dataset's next version (``lineage`` for derived ones)."""
    catalog = run.catalog
    upload = await catalog.get_upload(upload_id)
    committed = await catalog.find_version_by_job(run.job.id)
    if committed is not None:  # an earlier attempt committed, then died before saying so
        await asyncio.to_thread(run.objects.delete, upload.object_key)
        return _result(upload.dataset, committed, committed.segments[-1])
    # Each attempt writes its own segment: an attempt that a stale heartbeat made look dead may
    # still be running, and must never overwrite or delete what another attempt commits.
    segment = segment_id(run.job.id, run.job.attempts)
    # A derived version's rows come from stored versions, which met the upload limits when they came in.
    limited = lineage is None
    reader = UploadReader(run.objects, upload.object_key, segment, upload.episode_metadata,
                          max_tensor_bytes=run.settings.max_tensor_bytes if limited else None,
                          max_episodes=run.settings.max_upload_episodes if limited else None)
    steps = reader.steps()
    size = await asyncio.to_thread(run.objects.size, upload.object_key)  # the bytes ingested, for the metrics
    await run.checkpoint(0.0, "ingest", "reading the upload")
    episodes = transitions = terminated = 0
    returns, lengths = Moments(), Moments()  # for the dataset card, computed while the data passes by
    upcoming = asyncio.create_task(asyncio.to_thread(next, steps, None))
    try:
        while (step := await upcoming) is not None:
            # Compute the next batch while this one is written: CPU and catalog I/O overlap.
            upcoming = asyncio.create_task(asyncio.to_thread(next, steps, None))
            await catalog.put_blocks(step.blocks)
            await catalog.put_episodes(step.episodes)
            episodes += len(step.episodes)
            transitions = step.rows_done
            returns = returns.merge(_moments([record.return_ for record in step.episodes]))
            lengths = lengths.merge(_moments([record.length for record in step.episodes]))
            terminated += sum(record.terminated for record in step.episodes)
            fraction = 0.95 * step.rows_done / max(reader.total_rows, 1)
            await run.checkpoint(fraction, "ingest", f"{step.rows_done} of {reader.total_rows} rows")
    finally:
        if not upcoming.done():
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
    await run.checkpoint(0.97, "commit", "making the version visible")
    await _check_dataset_still_there(catalog, upload.dataset, upload.dataset_id)
    assert reader.layout is not None  # steps() sets it before its first step
    version = await commit_segment(catalog, upload.dataset_id, mode=UploadMode(upload.mode),
                                   segment=SegmentRef(id=segment, episodes=episodes, transitions=transitions,
                                                      returns=returns, lengths=lengths, terminated=terminated,
                                                      content_hash=reader.content.hexdigest(upload.episode_metadata)),
                                   schema=reader.layout.schema, job_id=run.job.id, lineage=lineage)
    await asyncio.to_thread(run.objects.delete, upload.object_key)
    if run.settings.auto_metrics:
        await _queue_cheap_metrics(run, upload.dataset_id, version.number)
    return _result(upload.dataset, version, version.segments[-1], size)


def _moments(values: list[float]) -> Moments:
    """The moments of one step's episodes at once (``Moments.add`` per episode took 4 s per 200,000)."""
    if not values:
        return Moments()
    array = np.asarray(values, dtype=np.float64)
    return Moments(count=array.size, total=float(array.sum()), squares=float(array @ array),
                   low=float(array.min()), high=float(array.max()))


async def _queue_cheap_metrics(run: JobRun, dataset_id: str, version: int) -> None:
    """Never fails the ingest: the periodic sweep computes what this could not queue."""
    try:
        dataset = await run.catalog.get_dataset_by_id(dataset_id)
        if dataset is not None:
            await queue_cheap_metrics(run.catalog, run.ctx["queue"], dataset, version)
    except Exception:
        logger.exception("could not queue the cheap metrics of %s version %d", dataset_id, version)


def _result(dataset: str, version: VersionRecord, segment: SegmentRef, size: int | None = None) -> dict[str, Any]:
    """``bytes``: the upload's size (None when an earlier attempt ingested it and this one only reports it)."""
    return {"dataset": dataset, "version": version.number, "episodes": segment.episodes,
            "transitions": segment.transitions, "version_episodes": version.episodes,
            "version_transitions": version.transitions, "bytes": size}


async def _discard(run: JobRun) -> None:
    upload = await run.catalog.get_upload(run.job.params["upload_id"])
    await discard_attempt(run, upload.object_key)


async def discard_attempt(run: JobRun, object_key: str) -> None:
    """A failed or cancelled ingest leaves the dataset as it was: drop its segment and its bytes."""
    segment = segment_id(run.job.id, run.job.attempts)
    committed = await run.catalog.find_version_by_job(run.job.id)
    if committed is None or segment not in {s.id for s in committed.segments}:
        await run.catalog.delete_segment(segment)
    await asyncio.to_thread(run.objects.delete, object_key)


async def _check_dataset_still_there(catalog: Catalog, name: str, dataset_id: str) -> None:
    """A dataset deleted (and perhaps made again) during the ingest gets no version from it."""
    try:
        same = (await catalog.get_dataset(name)).id == dataset_id
    except NotFound:
        same = False
    if not same:
        raise NotFound(f"dataset {name!r} was deleted during the ingest", name=name)
