"""When is a running job dead, stuck or merely stopped? Run in process on a real catalog and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from tuplehub.storage.models import JobKind, JobRecord, JobStatus
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.recovery import requeue_lost_jobs

from .test_jobs import ctx  # the fixture

__all__ = ["ctx"]


async def _job(ctx: WorkerContext) -> JobRecord:
    return await ctx["catalog"].create_job(JobRecord(kind=JobKind.export, owner="local"))


async def test_a_job_whose_progress_stalls_fails_although_its_heartbeat_is_fresh(ctx: WorkerContext) -> None:
    settings = ctx["settings"].model_copy(update={"stuck_after_s": 1.0, "heartbeat_s": 0.1})
    job = await _job(ctx)

    async def stalls(run: JobRun) -> dict[str, Any]:
        await run.checkpoint(0.3, "ingest", "row group 3 of 10")
        await asyncio.sleep(60)  # the heartbeat goes on; the progress does not
        return {}

    await asyncio.wait_for(run_job({**ctx, "settings": settings}, job.id, stalls, timeout_s=60), 10)
    failed = await ctx["catalog"].get_job(job.id)
    assert failed.status == JobStatus.failed
    assert failed.error is not None
    assert failed.error.code == "stuck"
    assert "no progress for 1 s" in failed.error.detail
    assert "TUPLEHUB_STUCK_AFTER_S" in failed.error.detail


async def test_moving_progress_is_not_stuck(ctx: WorkerContext) -> None:
    settings = ctx["settings"].model_copy(update={"stuck_after_s": 0.5, "heartbeat_s": 0.1})
    job = await _job(ctx)

    async def moves(run: JobRun) -> dict[str, Any]:
        for step in range(12):
            await run.checkpoint(step / 12, "export", f"block {step}")
            await asyncio.sleep(0.1)
        return {"rows": 1}

    await run_job({**ctx, "settings": settings}, job.id, moves, timeout_s=60)
    assert (await ctx["catalog"].get_job(job.id)).status == JobStatus.succeeded


async def test_a_stopping_worker_hands_its_job_back_without_counting_it_lost(ctx: WorkerContext) -> None:
    job = await _job(ctx)
    started = asyncio.Event()

    async def long(run: JobRun) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(60)
        return {}

    attempt = asyncio.create_task(run_job(ctx, job.id, long, timeout_s=60))
    await started.wait()
    attempt.cancel()  # what stopping the worker does to its running jobs
    await asyncio.gather(attempt, return_exceptions=True)
    handed_back = await ctx["catalog"].get_job(job.id)
    assert (handed_back.status, handed_back.worker, handed_back.lost) == (JobStatus.queued, None, 0)
    again = await ctx["catalog"].claim_job(job.id, worker="next")
    assert again is not None
    assert (again.attempts, again.lost) == (2, 0)


async def test_an_attempt_that_ended_with_its_process_is_counted_and_ends_the_job(ctx: WorkerContext) -> None:
    job = await _job(ctx)
    limit = ctx["settings"].job_max_tries
    for _ in range(limit):  # each claimed attempt's process died before recording anything
        claimed = await ctx["catalog"].claim_job(job.id, worker="died")
    assert claimed is not None
    assert claimed.lost == limit - 1  # the claim below finds the last one lost too

    async def never(run: JobRun) -> dict[str, Any]:
        raise AssertionError("a job whose worker died too often must not run again")

    await run_job(ctx, job.id, never, timeout_s=60)
    failed = await ctx["catalog"].get_job(job.id)
    assert failed.status == JobStatus.failed
    assert failed.error is not None
    assert f"the worker process died while running this job {limit} times" in failed.error.detail


async def test_the_sole_worker_takes_over_running_jobs_at_once(ctx: WorkerContext) -> None:
    """Under ``tuplehub serve`` no other worker exists: a job marked running lost its worker."""
    job = await _job(ctx)
    await ctx["catalog"].claim_job(job.id, worker="previous-process")  # heartbeat fresh
    await ctx["queue"].pool.set(f"arq:in-progress:{job.id}", b"1")
    assert await requeue_lost_jobs(ctx) == 0  # another worker might still run it
    assert await requeue_lost_jobs(ctx, sole=True) == 1
    assert not await ctx["queue"].pool.exists(f"arq:in-progress:{job.id}")
