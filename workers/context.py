"""What every job gets, and the one wrapper that runs a job against its catalog record.

:func:`run_job` claims the catalog record, keeps its heartbeat, turns the outcome into a status
(``succeeded``, ``failed`` with an error naming the problem, ``cancelled``) and decides what is
worth retrying: an unreachable store is retried with backoff, bad input never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypedDict

from arq import Retry

from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import JobCancelled, NotFound, StoreUnavailable, TuplehubError
from tuplehub.storage.models import JobRecord, JobStatus, utcnow
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.workers")

TRANSIENT = (StoreUnavailable, ConnectionError, TimeoutError)


class WorkerContext(TypedDict, total=False):
    """Filled by ``on_startup``; Arq adds ``job_id`` and ``job_try`` for each job."""

    settings: Settings
    catalog: Catalog
    objects: ObjectStore
    queue: Queue
    worker_id: str
    job_id: str
    job_try: int


class JobRun:
    """A running job's handle: progress reports double as cancellation checkpoints."""

    def __init__(self, ctx: WorkerContext, job: JobRecord) -> None:
        self.ctx = ctx
        self.job = job
        self.catalog = ctx["catalog"]
        self.objects = ctx["objects"]
        self.settings = ctx["settings"]

    async def checkpoint(self, fraction: float, stage: str, message: str = "") -> None:
        """Record progress; raise :class:`JobCancelled` if someone asked the job to stop."""
        current = await self.catalog.get_job(self.job.id)
        if current.cancel_requested or current.status == JobStatus.cancelled:
            raise JobCancelled("cancelled on request")
        await self.catalog.update_job(self.job.id, progress={
            "fraction": round(min(max(fraction, 0.0), 1.0), 4), "stage": stage, "message": message},
            heartbeat_at=utcnow())


Body = Callable[[JobRun], Awaitable[dict[str, Any]]]
Cleanup = Callable[[JobRun], Awaitable[None]]


async def run_job(ctx: WorkerContext, job_id: str, body: Body, *, timeout_s: float,
                  cleanup: Cleanup | None = None) -> None:
    """Run ``body`` for the catalog job ``job_id`` and record how it ended."""
    catalog = ctx["catalog"]
    attempt = ctx.get("job_try", 1)
    try:
        job = await catalog.claim_job(job_id, attempt=attempt, worker=ctx["worker_id"])
    except NotFound:
        logger.warning("job %s is not in the catalog; dropping it", job_id)
        return
    if job is None:
        if (await catalog.get_job(job_id)).cancel_requested:
            await catalog.finish_job(job_id, JobStatus.cancelled)
        return  # finished, or cancelled before it started
    run = JobRun(ctx, job)
    every_s = ctx["settings"].heartbeat_s
    heartbeat = asyncio.create_task(_beat(catalog, job_id, every_s, beats=int(timeout_s / every_s) + 1))
    try:
        async with asyncio.timeout(timeout_s):
            result = await body(run)
    except JobCancelled:
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.cancelled)
    except TimeoutError:
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.failed, error={
            "code": "timeout", "detail": f"the {job.kind} job ran longer than its limit of {timeout_s:.0f} s"})
    except TRANSIENT as exc:
        max_tries = ctx["settings"].job_max_tries
        if attempt < max_tries:
            delay = min(300, 2 ** attempt)
            logger.warning("job %s attempt %d: %s; retrying in %d s", job_id, attempt, exc, delay)
            await catalog.update_job(job_id, progress={**job.progress.model_dump(), "stage": "retrying",
                                                       "message": str(exc)[:500]})
            raise Retry(defer=timedelta(seconds=delay)) from exc
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.failed, error=_error(exc, attempts=attempt))
    except TuplehubError as exc:
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.failed, error=_error(exc))
    except Exception as exc:
        logger.exception("job %s failed unexpectedly", job_id)
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.failed, error={
            "code": "internal", "detail": f"{type(exc).__name__}: {exc}"[:2000]})
    else:
        await catalog.finish_job(job_id, JobStatus.succeeded, result=result)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat


def _error(exc: Exception, **extra: Any) -> dict[str, Any]:
    if isinstance(exc, TuplehubError):
        return {**exc.to_dict(), **extra}
    return {"code": "store-unavailable", "detail": str(exc)[:2000], **extra}


async def _cleanup(cleanup: Cleanup | None, run: JobRun) -> None:
    if cleanup is None:
        return
    try:
        await cleanup(run)
    except Exception:
        logger.exception("cleanup after job %s failed; the sweeper will retry it", run.job.id)


async def _beat(catalog: Catalog, job_id: str, every_s: float, beats: int) -> None:
    """Prove the job is alive while its work runs in a thread; recovery re-runs silent jobs."""
    for _ in range(beats):
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await catalog.update_job(job_id, heartbeat_at=utcnow())
