"""The ``derive`` job: a new version made of whole episodes of other versions, without the bytes
leaving the server.

Each source (a version, an episode filter, an episode sample) is read with the export plan and
written into one Parquet object with its episodes' metadata, which the ingest path then turns
into a version of the target dataset, carrying its lineage. Sources are deterministic (filters,
and samples seeded by episode identity), so deriving again from the same versions with the same
request gives the same rows, and so the same content hash. ``renumber`` gives the episodes ids
0..N-1 (for merging sources whose ids overlap) and keeps where each came from in its metadata.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from tuplehub.storage.models import (
    ExportCreate,
    ExportFormat,
    Lineage,
    LineageSource,
    UploadMode,
    UploadRecord,
    UploadStatus,
    VersionRecord,
    utcnow,
)
from tuplehub.storage.versions import SegmentEpisodes
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.export import ExportPlan, ResultWriter, episode_lookup, plan_blocks
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
    next_id = 0
    try:
        for number, source in enumerate(params["sources"]):
            version = await _version(run, source["dataset_id"], source["version"])
            request = ExportCreate(episodes=source["episodes"], sample=source["sample"], next_observation=True,
                                   format=ExportFormat.parquet)
            plan = ExportPlan.build(version.tuple_schema, request)
            if writer is None:
                schema = plan.output
                if params["renumber"]:
                    index = schema.get_field_index("episode_id")
                    schema = schema.set(index, pa.field("episode_id", pa.int64(), nullable=False))
                writer = await asyncio.to_thread(ResultWriter, run.objects, key, ExportFormat.parquet, schema)
            work = await plan_blocks(run, version, plan)
            renames = _renames(work, metadata, next_id, source, params["renumber"])
            next_id += len(renames)
            for episodes, seqs in work:
                lookup = episode_lookup(episodes)
                async for block in catalog.read_blocks(episodes.segment.id, seqs):
                    table = await asyncio.to_thread(plan.rows, block, episodes, lookup)
                    if params["renumber"]:
                        table = _renumbered(table, renames)
                    await asyncio.to_thread(writer.write, table)
            lineage.append(LineageSource(dataset=source["dataset"], dataset_id=source["dataset_id"],
                                         version=version.number, content_hash=version.content_hash,
                                         episodes=request.episodes, sample=request.sample))
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


async def _version(run: JobRun, dataset_id: str, number: int) -> VersionRecord:
    return next(v for v in await run.catalog.list_versions(dataset_id) if v.number == number)


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


def _renumbered(table: pa.Table, renames: dict[Any, int]) -> pa.Table:
    old = table.column("episode_id").to_pylist()
    new = pa.array(np.array([renames[value] for value in old], dtype=np.int64))
    return table.set_column(table.schema.get_field_index("episode_id"), pa.field("episode_id", pa.int64(),
                                                                                   nullable=False), new)


async def _discard(run: JobRun) -> None:
    await discard_attempt(run, _object_key(run))
