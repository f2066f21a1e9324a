"""Job functions and recovery, run in process against a real SQLite catalog, local store and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from arq import Retry

from tuplehub.client.uploads import table_from_arrays, write_parquet
from tuplehub.storage.catalog import Catalog, open_catalog
from tuplehub.storage.models import (
    DatasetRecord,
    ExportCreate,
    JobKind,
    JobRecord,
    JobStatus,
    UploadStatus,
    utcnow,
)
from tuplehub.storage.objects import open_object_store
from tuplehub.storage.queue import Queue
from tuplehub.workers.context import JobRun, WorkerContext
from tuplehub.workers.jobs import ingest as ingest_module
from tuplehub.workers.jobs.export import export
from tuplehub.workers.jobs.ingest import ingest
from tuplehub.workers.monitoring import WorkerMonitor
from tuplehub.workers.recovery import expire_uploads, requeue_lost_jobs, sweep_segments

from .conftest import make_settings
from .factories import episode_arrays, upload_record


@pytest.fixture
async def ctx(tmp_path: Path, redis_url: str) -> AsyncIterator[WorkerContext]:
    settings = make_settings(tmp_path, redis_url)
    catalog = await open_catalog(settings.resolved_catalog_url())
    queue = await Queue.connect(redis_url, settings.queue_name)
    try:
        yield WorkerContext(settings=settings, catalog=catalog, queue=queue, worker_id="test", job_try=1,
                            objects=open_object_store(settings.resolved_objects_url()), monitor=WorkerMonitor())
    finally:
        await queue.aclose()
        await catalog.aclose()


async def stage_ingest(ctx: WorkerContext, arrays: dict[str, np.ndarray], *, rows_per_group: int = 50) -> JobRecord:
    """A dataset, a completed upload of ``arrays`` (several row groups) and its queued ingest job."""
    catalog = ctx["catalog"]
    dataset = await catalog.create_dataset(DatasetRecord(name=f"d{utcnow().timestamp()}", owner="local"))
    upload = upload_record(dataset.id).model_copy(update={"dataset": dataset.name, "status": UploadStatus.completed})
    table = table_from_arrays(arrays)
    with ctx["objects"].open_write(upload.object_key) as sink:
        write_parquet((table.slice(i, rows_per_group) for i in range(0, len(table), rows_per_group)), sink)
    await catalog.create_upload(upload)
    return await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local", params={
        "upload_id": upload.id, "dataset_id": dataset.id, "dataset": dataset.name, "mode": "append"}))


class Interrupting:
    """A catalog that misbehaves after ``after`` block writes: cancels the job, or fails."""

    def __init__(self, catalog: Catalog, *, after: int, action: str) -> None:
        self._catalog, self._after, self._action = catalog, after, action
        self.block_writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)

    async def put_blocks(self, blocks: Any) -> None:
        await self._catalog.put_blocks(blocks)
        self.block_writes += 1
        if self.block_writes == self._after:
            if self._action == "cancel":
                await self._catalog.request_cancel(self._job_id)
            else:
                raise ConnectionError("catalog went away")


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read uploads in many small batches (~60 of these test rows), so jobs have many checkpoints."""
    monkeypatch.setattr(ingest_module, "BATCH_BYTES", 4096)


async def test_ingest_notices_cancellation_between_batches(ctx: WorkerContext) -> None:
    job = await stage_ingest(ctx, episode_arrays(episodes=10, length=100))
    catalog = Interrupting(ctx["catalog"], after=2, action="cancel")
    catalog._job_id = job.id
    await ingest({**ctx, "catalog": catalog}, job.id)
    done = await ctx["catalog"].get_job(job.id)
    assert done.status == JobStatus.cancelled
    assert catalog.block_writes == 2  # it stopped at the next checkpoint
    assert await ctx["catalog"].list_segments() == set()  # and left nothing behind
    assert await ctx["catalog"].list_versions(job.params["dataset_id"]) == []


async def test_interrupted_ingest_retries_without_duplicates(ctx: WorkerContext) -> None:
    arrays = episode_arrays(episodes=10, length=100)
    job = await stage_ingest(ctx, arrays)
    flaky = Interrupting(ctx["catalog"], after=3, action="fail")
    with pytest.raises(Retry):
        await ingest({**ctx, "catalog": flaky}, job.id)
    assert (await ctx["catalog"].get_job(job.id)).status == JobStatus.running
    assert await ctx["catalog"].list_versions(job.params["dataset_id"]) == []  # nothing visible yet

    await ingest(ctx, job.id)
    done = await ctx["catalog"].get_job(job.id)
    assert (done.status, done.attempts) == (JobStatus.succeeded, 2)
    [version] = await ctx["catalog"].list_versions(job.params["dataset_id"])
    blocks = await ctx["catalog"].list_blocks(version.segments[0].id)
    assert sum(block.rows for block in blocks) == len(arrays["reward"])
    assert len(await ctx["catalog"].list_episodes(version.segments[0].id)) == 10

    await ingest(ctx, job.id)  # a late duplicate delivery changes nothing
    assert len(await ctx["catalog"].list_versions(job.params["dataset_id"])) == 1
    assert await sweep_segments(ctx) == 1  # the interrupted attempt's own segment
    assert await ctx["catalog"].list_segments() == {version.segments[0].id}


async def test_ingest_gives_up_after_its_tries(ctx: WorkerContext) -> None:
    job = await stage_ingest(ctx, episode_arrays(episodes=2, length=30))
    await ctx["catalog"].update_job(job.id, attempts=ctx["settings"].job_max_tries - 1)
    flaky = Interrupting(ctx["catalog"], after=1, action="fail")
    await ingest({**ctx, "catalog": flaky}, job.id)
    failed = await ctx["catalog"].get_job(job.id)
    assert (failed.status, failed.error.code, failed.error.detail) == (
        JobStatus.failed, "store-unavailable", "catalog went away")
    assert await ctx["catalog"].list_segments() == set()
    assert not ctx["objects"].exists((await ctx["catalog"].get_upload(job.params["upload_id"])).object_key)


async def test_a_job_whose_worker_keeps_dying_fails(ctx: WorkerContext) -> None:
    """Each claim counts, even when no attempt got far enough to record a failure."""
    job = await stage_ingest(ctx, episode_arrays(episodes=2, length=30))
    for _ in range(ctx["settings"].job_max_tries):
        await ctx["catalog"].claim_job(job.id, worker="killed")  # each of these workers died mid-job
    await ingest(ctx, job.id)
    failed = await ctx["catalog"].get_job(job.id)
    assert (failed.status, failed.error.code) == (JobStatus.failed, "max-attempts")


async def test_two_live_attempts_never_damage_the_committed_version(ctx: WorkerContext) -> None:
    """A worker thought dead (a stale heartbeat) may still be running when the job is re-run."""
    arrays = episode_arrays(episodes=8, length=60)
    job = await stage_ingest(ctx, arrays)
    first = await ctx["catalog"].claim_job(job.id, worker="slow")
    second = await ctx["catalog"].claim_job(job.id, worker="fresh")
    results = await asyncio.gather(ingest_module._ingest(JobRun(ctx, first)),
                                   ingest_module._ingest(JobRun(ctx, second)), return_exceptions=True)
    assert any(isinstance(result, dict) for result in results), results
    [version] = await ctx["catalog"].list_versions(job.params["dataset_id"])
    await ctx["catalog"].finish_job(job.id, JobStatus.succeeded, result={})
    await sweep_segments(ctx)
    assert await ctx["catalog"].list_segments() == {version.segments[0].id}
    blocks = await ctx["catalog"].list_blocks(version.segments[0].id)
    assert sum(block.rows for block in blocks) == len(arrays["reward"])


async def test_export_job_writes_exactly_the_selected_rows(ctx: WorkerContext) -> None:
    arrays = episode_arrays(episodes=6, length=30)
    ingest_job = await stage_ingest(ctx, arrays)
    await ingest(ctx, ingest_job.id)
    request = ExportCreate(where={"op": "gt", "field": "reward", "value": 0}, format="arrow")
    job = await ctx["catalog"].create_job(JobRecord(kind=JobKind.export, owner="local", params={
        "dataset_id": ingest_job.params["dataset_id"], "dataset": "d", "version": 1,
        "request": request.model_dump(mode="json"), "object_key": "exports/x.arrow"}))
    await export(ctx, job.id)
    done = await ctx["catalog"].get_job(job.id)
    assert done.status == JobStatus.succeeded, done.error
    with ctx["objects"].open_read("exports/x.arrow") as handle:
        table = pa.ipc.open_stream(handle).read_all()
    np.testing.assert_array_equal(table.column("reward").to_numpy(), arrays["reward"][arrays["reward"] > 0])
    assert done.result["rows"] == table.num_rows


async def test_requeue_finds_lost_and_abandoned_jobs(ctx: WorkerContext) -> None:
    catalog, queue = ctx["catalog"], ctx["queue"]
    lost = await catalog.create_job(JobRecord(kind=JobKind.export, owner="local"))
    abandoned = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local"))
    await catalog.claim_job(abandoned.id, worker="dead")
    await catalog.update_job(abandoned.id, heartbeat_at=utcnow() - timedelta(hours=1))
    await queue.pool.set(f"arq:in-progress:{abandoned.id}", b"1")
    alive = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local"))
    await catalog.claim_job(alive.id, worker="alive")
    await queue.pool.set(f"arq:in-progress:{alive.id}", b"1")

    assert await requeue_lost_jobs(ctx) == 2
    assert await queue.knows(lost.id)
    assert not await queue.pool.exists(f"arq:in-progress:{abandoned.id}")
    assert await queue.knows(abandoned.id)  # back in the queue for a live worker
    assert await queue.pool.exists(f"arq:in-progress:{alive.id}")  # a live job is left alone
    assert await requeue_lost_jobs(ctx) == 1  # the abandoned one is still silent; the lost one is queued now
    assert ctx["monitor"].registry.get_sample_value("tuplehub_jobs_lost_total", {"kind": "ingest"}) == 2


async def test_expired_uploads_are_aborted(ctx: WorkerContext) -> None:
    upload = upload_record(expires_in_s=-1)
    ctx["objects"].start_multipart(upload.object_key)
    await ctx["catalog"].create_upload(upload)
    assert await expire_uploads(ctx) == 1
    assert (await ctx["catalog"].get_upload(upload.id)).status == UploadStatus.expired
    assert not ctx["objects"].exists(upload.object_key + ".partial")


async def test_sweep_removes_only_dead_segments(ctx: WorkerContext) -> None:
    catalog = ctx["catalog"]
    committed = await stage_ingest(ctx, episode_arrays(episodes=2))
    await ingest(ctx, committed.id)
    running = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local"))
    failed = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local"))
    await catalog.finish_job(failed.id, JobStatus.failed, error={"code": "x", "detail": "y"})
    from .factories import episode_record

    for segment in (f"{running.id}x1", f"{failed.id}x1", f"{committed.id}x9", "orphan"):
        await catalog.put_episodes([episode_record(segment, 0)])
    assert await sweep_segments(ctx) == 3
    assert await catalog.list_segments() == {f"{committed.id}x1", f"{running.id}x1"}


async def test_an_ingest_cancelled_before_it_started_frees_its_upload(ctx: WorkerContext) -> None:
    job = await stage_ingest(ctx, episode_arrays(episodes=2))
    upload = await ctx["catalog"].get_upload(job.params["upload_id"])
    assert (await ctx["catalog"].request_cancel(job.id)).status == JobStatus.cancelled
    await ingest(ctx, job.id)  # the queue still delivers it
    assert not ctx["objects"].exists(upload.object_key)


async def test_block_files_without_rows_are_swept(ctx: WorkerContext) -> None:
    """An ingest killed between writing a block file and its row leaves only the file."""
    from .factories import block_record

    await asyncio.to_thread(ctx["catalog"]._write_block, block_record("deadbeefx1", 0))
    assert await ctx["catalog"].list_segments() == {"deadbeefx1"}
    assert await sweep_segments(ctx) == 1
    assert await ctx["catalog"].list_segments() == set()


async def test_deleting_a_dataset_frees_its_segments(ctx: WorkerContext) -> None:
    catalog = ctx["catalog"]
    done = await stage_ingest(ctx, episode_arrays(episodes=2))
    await ingest(ctx, done.id)
    assert len(await catalog.list_segments()) == 1
    await catalog.delete_dataset(done.params["dataset_id"])
    assert await sweep_segments(ctx) == 1
    assert await catalog.list_segments() == set()


async def test_an_ingest_into_a_dataset_deleted_meanwhile_fails_and_leaves_nothing(ctx: WorkerContext) -> None:
    catalog = ctx["catalog"]
    job = await stage_ingest(ctx, episode_arrays(episodes=2))
    await catalog.delete_dataset(job.params["dataset_id"])
    await ingest(ctx, job.id)
    failed = await catalog.get_job(job.id)
    assert failed.status == JobStatus.failed
    assert failed.error is not None
    assert "deleted during the ingest" in failed.error.detail
    await sweep_segments(ctx)
    assert await catalog.list_segments() == set()
