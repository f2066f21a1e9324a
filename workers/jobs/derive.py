"""The ``derive`` job: a new version made from other versions, without the bytes leaving the server.

Each source (a version and an export's selections) is read with the export plan and written into
one Parquet object with its episodes' metadata, which the ingest path then turns into a version
of the target dataset, carrying its lineage. Selections are deterministic (filters, and samples
seeded by identity), so deriving again from the same versions with the same request gives the
same rows, and so the same content hash. ``renumber`` gives the episodes ids 0..N-1 (for merging
sources whose ids overlap) and keeps where each came from in its metadata.

Row-level selections (a tuple filter, a row sample, rebalancing) cut episodes into pieces of
consecutive steps; :class:`Pieces` makes each piece an episode and marks its last row
``truncated`` where the cut, not the environment, ended it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.models import (
    DeriveSource,
    ExportCreate,
    ExportFormat,
    Lineage,
    LineageSource,
    UploadMode,
    UploadRecord,
    UploadStatus,
    utcnow,
)
from tuplehub.storage.versions import SegmentEpisodes, get_version_by_id
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.export import ExportPlan, ResultWriter, episode_lookup, plan_blocks, row_sample_threshold
from tuplehub.workers.jobs.ingest import discard_attempt, ingest_upload


async def derive(ctx: WorkerContext, job_id: str) -> None:
    settings = ctx["settings"]
    await run_job(ctx, job_id, _derive, timeout_s=settings.export_timeout_s + settings.ingest_timeout_s,
                  cleanup=_discard)


def _object_key(run: JobRun) -> str:
    return f"uploads/{run.job.id}x{run.job.attempts}.parquet"


async def _derive(run: JobRun) -> dict[str, Any]:
    catalog, params = run.catalog, run.job.params
    committed = await catalog.find_version_by_job(run.job.id)
    if committed is not None:  # an earlier attempt committed, then died before saying so
        return {"dataset": params["dataset"], "version": committed.number, "episodes": committed.episodes}
    upload_id = f"{run.job.id}x{run.job.attempts}"
    key = _object_key(run)
    metadata: dict[str, dict[str, Any]] = {}
    lineage: list[LineageSource] = []
    writer: ResultWriter | None = None
    appending = params["mode"] == UploadMode.append.value and params["renumber"]
    next_id = await _next_free_id(run, params["dataset_id"]) if appending else 0
    try:
        for number, source in enumerate(params["sources"]):
            version = await get_version_by_id(run.catalog, source["dataset_id"], source["version"])
            request = ExportCreate(episodes=source.get("episodes"), where=source.get("where"),
                                   sample=source.get("sample"),
                                   rebalance=source.get("rebalance"), next_observation=True,
                                   format=ExportFormat.parquet)
            cuts = DeriveSource.model_validate({"dataset": source["dataset"], **request.model_dump(
                include={"where", "sample", "rebalance"})}).cuts_episodes
            plan = ExportPlan.build(version.tuple_schema, request)
            if writer is None:
                schema = plan.output
                if params["renumber"]:
                    index = schema.get_field_index("episode_id")
                    schema = schema.set(index, pa.field("episode_id", pa.int64(), nullable=False))
                writer = await asyncio.to_thread(ResultWriter, run.objects, key, ExportFormat.parquet, schema)
            work = await plan_blocks(run, version, plan)
            threshold = await row_sample_threshold(run, plan, work)
            if cuts:
                pieces = Pieces(_origins(work), next_id, source, metadata)
            else:
                renames = _renames(work, metadata, next_id, source, params["renumber"])
                next_id += len(renames)
            for episodes, seqs in work:
                lookup = episode_lookup(episodes)
                async for block in catalog.read_blocks(episodes.segment.id, seqs):
                    table = await asyncio.to_thread(plan.rows, block, episodes, lookup, threshold)
                    if cuts:
                        table = pieces.feed(table)
                    elif params["renumber"]:
                        table = _renumbered(table, renames)
                    await asyncio.to_thread(writer.write, table)
            if cuts:
                await asyncio.to_thread(writer.write, pieces.close())
                next_id = pieces.next_id
            lineage.append(LineageSource(dataset=source["dataset"], dataset_id=source["dataset_id"],
                                         version=version.number, content_hash=version.content_hash,
                                         episodes=request.episodes, where=request.where, sample=request.sample,
                                         rebalance=request.rebalance))
            await run.checkpoint(0.5 * (number + 1) / len(params["sources"]), "select", f"source {number + 1}")
    finally:
        if writer is not None:
            await asyncio.to_thread(writer.close)
    await catalog.create_upload(UploadRecord(
        id=upload_id, dataset_id=params["dataset_id"], dataset=params["dataset"], owner=run.job.owner,
        mode=UploadMode(params["mode"]), part_size=2**20, object_key=key, status=UploadStatus.completed,
        episode_metadata=metadata, job_id=run.job.id, expires_at=utcnow() + timedelta(days=1)))
    result = await ingest_upload(run, upload_id, lineage=Lineage(sources=lineage, renumber=params["renumber"],
                                                                 job_id=run.job.id))
    return {**result, "derived_from": [f"{s.dataset}@{s.version}" for s in lineage]}


async def _next_free_id(run: JobRun, dataset_id: str) -> int:
    """Renumbered episodes appended to a dataset start after its highest episode id."""
    versions = await run.catalog.list_versions(dataset_id)
    if not versions:
        return 0
    highest = -1
    for segment in versions[-1].segments:
        for record in await run.catalog.list_episodes(segment.id):
            if not isinstance(record.episode_id, int):
                raise InvalidRequest("the target numbers its episodes with strings; renumbered episodes can only "
                                     "replace its content", field="mode")
            highest = max(highest, record.episode_id)
    return highest + 1


def _renames(work: list[tuple[SegmentEpisodes, list[int]]], metadata: dict[str, dict[str, Any]], start: int,
             source: dict[str, Any], renumber: bool) -> dict[Any, int]:
    """Collect the selected episodes' metadata (under their new ids when renumbering)."""
    renames: dict[Any, int] = {}
    for episodes, _ in work:
        by_index = {record.index: record for record in episodes.records}
        for local in episodes.selected.column("local").to_pylist():
            record = by_index[local]
            if renumber:
                new = renames[record.episode_id] = start + len(renames)
                origin = {"dataset": source["dataset"], "version": source["version"], "episode_id": record.episode_id}
                metadata[str(new)] = {**record.metadata, "source": origin}
            elif record.metadata:
                metadata[str(record.episode_id)] = dict(record.metadata)
    return renames


def _origins(work: list[tuple[SegmentEpisodes, list[int]]]) -> dict[Any, dict[str, Any]]:
    """The metadata of every selected episode, by episode id."""
    return {record.episode_id: record.metadata for episodes, _ in work for record in episodes.records}


class Pieces:
    """Cuts a source's rows into runs of consecutive steps of one episode, each a new episode.

    The last row of a table is held back until the next table shows whether its piece goes on,
    so a piece that spans blocks stays whole and its end is marked exactly once.
    """

    def __init__(self, origins: dict[Any, dict[str, Any]], first_id: int, source: dict[str, Any],
                 metadata: dict[str, dict[str, Any]]) -> None:
        self.origins = origins
        self.next_id = first_id
        self.source = source
        self.metadata = metadata
        self.pending: pa.Table | None = None
        self.current: tuple[Any, int] | None = None  # (episode id, step) of the last row given an id

    def feed(self, table: pa.Table) -> pa.Table:
        if self.pending is not None:
            table = pa.concat_tables([self.pending, table])
        if len(table) == 0:
            self.pending = None
            return table
        ready, self.pending = table.slice(0, len(table) - 1), table.slice(len(table) - 1)
        return self._cut(ready, follower=self.pending)

    def close(self) -> pa.Table:
        pending, self.pending = self.pending, None
        return self._cut(pending, follower=None) if pending is not None else pa.table({})

    def _cut(self, table: pa.Table, follower: pa.Table | None) -> pa.Table:
        if len(table) == 0:
            return table
        ids = table.column("episode_id").to_pylist()
        steps = table.column("step").to_numpy()
        starts = np.ones(len(table), dtype=bool)
        same = np.array([a == b for a, b in zip(ids[1:], ids[:-1], strict=True)], dtype=bool)
        starts[1:] = ~(same & (steps[1:] == steps[:-1] + 1))
        if self.current is not None:
            starts[0] = not (ids[0] == self.current[0] and steps[0] == self.current[1] + 1)
        ends = np.append(starts[1:], True)
        if follower is not None and len(follower):
            nxt_id, nxt_step = follower.column("episode_id")[0].as_py(), follower.column("step")[0].as_py()
            ends[-1] = not (nxt_id == ids[-1] and nxt_step == steps[-1] + 1)
        new_ids = self.next_id - 1 + np.cumsum(starts)
        for row in np.flatnonzero(starts):
            origin = {"dataset": self.source["dataset"], "version": self.source["version"],
                      "episode_id": ids[row], "first_step": int(steps[row])}
            self.metadata[str(int(new_ids[row]))] = {**self.origins.get(ids[row], {}), "source": origin}
        self.next_id = int(new_ids[-1]) + 1
        self.current = (ids[-1], int(steps[-1]))
        terminated = table.column("terminated").to_numpy(zero_copy_only=False)
        truncated = table.column("truncated").to_numpy(zero_copy_only=False) | (ends & ~terminated)
        column = table.schema.get_field_index("truncated")
        table = table.set_column(column, table.schema.field(column), pa.array(truncated))
        index = table.schema.get_field_index("episode_id")
        return table.set_column(index, pa.field("episode_id", pa.int64(), nullable=False),
                                pa.array(new_ids.astype(np.int64)))


def _renumbered(table: pa.Table, renames: dict[Any, int]) -> pa.Table:
    old = table.column("episode_id").to_pylist()
    new = pa.array(np.array([renames[value] for value in old], dtype=np.int64))
    return table.set_column(table.schema.get_field_index("episode_id"), pa.field("episode_id", pa.int64(),
                                                                                   nullable=False), new)


async def _discard(run: JobRun) -> None:
    await discard_attempt(run, _object_key(run))
