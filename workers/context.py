"""What every job gets, and the one wrapper that runs a job against its catalog record.

:func:`run_job` claims the catalog record, keeps its heartbeat, turns the outcome into a status
(``succeeded``, ``failed`` with an error naming the problem, ``cancelled``) and decides what is
worth retrying: an unreachable store is retried with backoff, bad input never is. A worker that is
stopping (SIGTERM) lets each job finish the step it is in: the job's next checkpoint hands the
attempt back to the queue, where another worker runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

from arq import Retry

from tuplehub.storage import logs, tracing
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.catalog.jobstate import stalled
from tuplehub.storage.errors import JobCancelled, NotFound, TuplehubError, is_unavailable
from tuplehub.storage.models import JobRecord, JobStatus, utcnow
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings
from tuplehub.workers.monitoring import WorkerMonitor

logger = logging.getLogger("tuplehub.workers")


class AttemptSuperseded(Exception):
    """A newer attempt claimed the job (this one's heartbeat went stale): stop, touch nothing shared."""


class WorkerStopping(Exception):
    """The worker is stopping: the job hands its attempt back at this checkpoint, between two steps."""


class WorkerContext(TypedDict, total=False):
    """Filled by ``on_startup``; Arq adds ``job_id`` and ``job_try`` (unused: the catalog counts attempts)."""

    stopping: asyncio.Event  # set when the worker drains (see tuplehub.workers.settings.drain_worker)
    settings: Settings
    catalog: Catalog
    objects: ObjectStore
    queue: Queue
    monitor: WorkerMonitor
    tracer: tracing.Tracer  # traces off unless OTEL_* ask for them (storage/tracing.py)
    worker_id: str
    job_id: str
    job_try: int


class JobRun:
    """A running job's handle: progress reports double as cancellation checkpoints."""

    def __init__(self, ctx: WorkerContext, job: JobRecord, span: tracing.JobSpan | None = None) -> None:
        self.ctx = ctx
        self.job = job
        self.span = span or tracing.JobSpan()
        self.catalog = ctx["catalog"]
        self.objects = ctx["objects"]
        self.settings = ctx["settings"]
        self.stuck = False  # set by the heartbeat when progress stalled past ``stuck_after_s``

    async def checkpoint(self, fraction: float, stage: str, message: str = "") -> None:
        """Record progress; raise :class:`JobCancelled` if someone asked the job to stop, and
        :class:`WorkerStopping` if its worker is stopping (the step before this one is done)."""
        if "stopping" in self.ctx and self.ctx["stopping"].is_set():
            raise WorkerStopping(f"its worker stopped at {fraction:.0%} ({stage})")
        current = await self.catalog.get_job(self.job.id)
        if current.attempts != self.job.attempts:
            raise AttemptSuperseded(f"attempt {current.attempts} took over")
        if current.cancel_requested or current.status == JobStatus.cancelled:
            raise JobCancelled("cancelled on request")
        self.span.step(stage)
        await self.catalog.update_job(self.job.id, progress={
            "fraction": round(min(max(fraction, 0.0), 1.0), 4), "stage": stage, "message": message},
            heartbeat_at=utcnow())


Body = Callable[[JobRun], Coroutine[Any, Any, dict[str, Any]]]
Cleanup = Callable[[JobRun], Awaitable[None]]


async def run_job(ctx: WorkerContext, job_id: str, body: Body, *, timeout_s: float,
                  cleanup: Cleanup | None = None) -> None:
    """Run ``body`` for the catalog job ``job_id`` and record how it ended.

    Attempts are counted in the catalog (each claim adds one), so a job whose worker keeps dying
    (killed for memory, say) fails after ``job_max_tries`` claims instead of looping for ever.
    Every line logged meanwhile carries the job's id, its owner and the trace id of the request that
    started it; with traces on, the attempt is a span, child of that request's; each attempt is
    counted once in the worker's metrics, when it ends.
    """
    catalog = ctx["catalog"]
    with logs.log_context(job_id=job_id):
        try:
            job = await catalog.claim_job(job_id, worker=ctx["worker_id"])
        except NotFound:
            logger.warning("job %s is not in the catalog; dropping it", job_id)
            return
        if job is None:  # finished, or cancelled before this attempt could start
            current = await catalog.get_job(job_id)
            if current.status == JobStatus.cancelled or current.cancel_requested:
                await _cleanup(cleanup, JobRun(ctx, current))
                await catalog.finish_job(job_id, JobStatus.cancelled)
            return
        with ctx.get("tracer", tracing.OFF).job(job) as span:
            logs.annotate(trace_id=span.trace_id or job.trace_id or logs.new_trace_id(), user=job.owner)
            monitor = ctx["monitor"]
            monitor.started(job.kind)
            logger.info("job started", extra={"kind": job.kind.value, "attempt": job.attempts})
            started = time.monotonic()
            ending = _Ending()
            try:
                await _attempt(JobRun(ctx, job, span), body, timeout_s, cleanup, ending)
            finally:
                seconds = time.monotonic() - started
                monitor.ended(job.kind, ending.outcome, seconds, ending.result)
                span.ended(ending.outcome, ending.error)
                logger.info("job ended", extra={"kind": job.kind.value, "attempt": job.attempts,
                                                "outcome": ending.outcome, "duration_s": round(seconds, 3),
                                                **({"error": ending.error} if ending.error else {})})


@dataclass
class _Ending:
    """How an attempt ended; "failed" until a branch says otherwise (the catalog went away, say)."""

    outcome: str = "failed"
    result: dict[str, Any] | None = None
    error: str | None = None  # the failed job's error code


async def _attempt(run: JobRun, body: Body, timeout_s: float, cleanup: Cleanup | None, ending: _Ending) -> None:
    job, catalog, settings = run.job, run.catalog, run.settings
    job_id = job.id
    if job.lost >= settings.job_max_tries:
        await _cleanup(cleanup, run)
        ending.error = "max-attempts"
        await catalog.finish_job(job_id, JobStatus.failed, error={
            "code": "max-attempts", "attempts": job.attempts - 1,
            "detail": f"the worker process died while running this job {job.lost} times; it is not run again"})
        return
    work = asyncio.create_task(body(run))
    every_s = settings.heartbeat_s
    heartbeat = asyncio.create_task(_beat(run, work, every_s, beats=int(timeout_s / every_s) + 1))
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            result = await work
    except JobCancelled:
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.cancelled)
        ending.outcome = "cancelled"
    except AttemptSuperseded as exc:
        logger.warning("job %s attempt %d stops: %s", job_id, job.attempts, exc)  # the sweep drops its segment
        ending.outcome = "superseded"
    except WorkerStopping as exc:
        # Left in Arq's queue (Retry), so another worker takes it at once; the sweep drops its segment.
        logger.info("job %s attempt %d handed back at a checkpoint: %s", job_id, job.attempts, exc)
        await _hand_back(run, ending)
        raise Retry() from exc
    except asyncio.CancelledError:
        if not run.stuck:  # the worker is stopping: hand the attempt back, it runs again later
            await _hand_back(run, ending)
            raise
        run.ctx["monitor"].stuck.labels(job.kind).inc()
        ending.error = "stuck"
        await _cleanup(cleanup, run)
        await catalog.finish_job(job_id, JobStatus.failed, error={
            "code": "stuck", "stage": run.job.progress.stage,
            "detail": f"the job made no progress for {settings.stuck_after_s:.0f} s (TUPLEHUB_STUCK_AFTER_S) "
                      "and was stopped"})
    except Exception as exc:
        try:
            ending.error = await _failed(run, exc, timed_out=deadline.expired(), timeout_s=timeout_s,
                                         cleanup=cleanup)
        except Retry:
            ending.outcome = "retrying"
            raise
    else:
        await catalog.finish_job(job_id, JobStatus.succeeded, result=result)
        ending.outcome, ending.result = "succeeded", result
    finally:
        heartbeat.cancel()
        work.cancel()
        await asyncio.gather(heartbeat, work, return_exceptions=True)


async def _hand_back(run: JobRun, ending: _Ending) -> None:
    """Return a stopping worker's attempt: queued in the catalog, and not one of Arq's tries."""
    ending.outcome = "handed_back"
    with contextlib.suppress(Exception):  # unrecorded, the next claim counts this attempt as lost
        await run.catalog.hand_back_job(run.job.id, attempt=run.job.attempts)
    with contextlib.suppress(Exception):  # Redis away: the try stays counted, as before
        await run.ctx["queue"].uncount_try(run.job.id)


async def _failed(run: JobRun, exc: Exception, *, timed_out: bool, timeout_s: float,
                  cleanup: Cleanup | None) -> str:
    """Retry what a backend outage caused; record everything else as the job's error, and return its code."""
    job, catalog = run.job, run.catalog
    error: dict[str, Any]
    if timed_out:
        error = {"code": "timeout", "detail": f"the {job.kind} job ran longer than its limit of {timeout_s:.0f} s"}
    elif is_unavailable(exc):
        if job.attempts < run.settings.job_max_tries:
            delay = min(300, 2 ** job.attempts)
            logger.warning("job %s attempt %d: %s; retrying in %d s", job.id, job.attempts, exc, delay)
            await catalog.update_job(job.id, worker=None, progress={**job.progress.model_dump(), "stage": "retrying",
                                                                    "message": str(exc)[:500]})
            raise Retry(defer=timedelta(seconds=delay)) from exc
        error = {"code": "store-unavailable", "detail": str(exc)[:2000], "attempts": job.attempts}
    elif isinstance(exc, TuplehubError):
        error = exc.to_dict()
    else:
        logger.exception("job %s failed unexpectedly", job.id)
        error = {"code": "internal", "detail": f"{type(exc).__name__}: {exc}"[:2000]}
    await _cleanup(cleanup, run)
    await catalog.finish_job(job.id, JobStatus.failed, error=error)
    return str(error.get("code", "internal"))


async def _cleanup(cleanup: Cleanup | None, run: JobRun) -> None:
    if cleanup is None:
        return
    try:
        await cleanup(run)
    except Exception:
        logger.exception("cleanup after job %s failed; the periodic sweep removes what it left", run.job.id)


async def _beat(run: JobRun, work: asyncio.Task[Any], every_s: float, beats: int) -> None:
    """Prove the job is alive while its work runs in a thread (recovery re-runs silent jobs), and
    stop the work when its progress has not moved for ``stuck_after_s``: a fresh heartbeat only
    says the process lives, not that the job gets anywhere."""
    for _ in range(beats):
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await run.catalog.update_job(run.job.id, heartbeat_at=utcnow())
            current = await run.catalog.get_job(run.job.id)
            if stalled(current, after_s=run.settings.stuck_after_s):
                logger.warning("job %s made no progress since %s; stopping it", run.job.id, current.progress_at)
                run.stuck = True
                run.job = current
                work.cancel()
                return
