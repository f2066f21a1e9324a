"""Arq worker wiring: which functions run, their limits, start-up and shutdown.

``tuplehub worker`` runs this as a separate process in deployments; ``tuplehub serve`` runs the
same worker as a child process it supervises (``python -m tuplehub.workers``, restarted if it
dies) in the embedded default, so a job that kills its process never takes the API with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from arq import cron, func
from arq.worker import Worker

from tuplehub.storage import tracing
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.objects import open_object_store
from tuplehub.storage.queue import Queue, redis_settings
from tuplehub.storage.settings import Settings
from tuplehub.workers.context import WorkerContext
from tuplehub.workers.jobs.artifact import artifact
from tuplehub.workers.jobs.derive import derive
from tuplehub.workers.jobs.export import export
from tuplehub.workers.jobs.ingest import ingest
from tuplehub.workers.jobs.metric_schedule import recompute_metrics
from tuplehub.workers.jobs.metrics import metrics
from tuplehub.workers.monitoring import WorkerMonitor
from tuplehub.workers.recovery import maintain

if TYPE_CHECKING:
    from arq.typing import WorkerCoroutine

logger = logging.getLogger("tuplehub.workers")

# Seconds between queue polls: the latency a client sees between "complete upload" and "running".
POLL_DELAY_S = 0.05
# Arq's own limits back up run_job's, which record the outcome in the catalog first: the catalog
# counts attempts (Arq forgets its count when a job is re-enqueued) and enforces the deadline.
ARQ_TIMEOUT_MARGIN_S = 60
ARQ_EXTRA_TRIES = 5


def _arq(function: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """``function`` as Arq's annotations want it: Arq passes its context as a plain dict, which our functions
    read as the WorkerContext that start-up fills (to a type checker a TypedDict is no ``dict[Any, Any]``)."""
    return cast("WorkerCoroutine", function)


def _every(seconds: int) -> dict[str, Any]:
    """Cron fields for 'every ``seconds``', rounded up to what divides a minute, an hour or a day
    (a day at most)."""
    if seconds <= 30:
        step = next(s for s in (1, 2, 3, 5, 10, 15, 20, 30) if s >= seconds)
        return {"second": set(range(0, 60, step))}
    if seconds <= 1800:
        minutes = -(-seconds // 60)
        step = next(m for m in (1, 2, 3, 5, 10, 15, 20, 30) if m >= minutes)
        return {"minute": set(range(0, 60, step)), "second": 0}
    hours = -(-seconds // 3600)
    step = next((h for h in (1, 2, 3, 4, 6, 8, 12) if h >= hours), 24)
    return {"hour": set(range(0, 24, step)), "minute": 0, "second": 0}


def build_worker(settings: Settings, redis_url: str, *, handle_signals: bool = True, burst: bool = False,
                 sole: bool = False) -> Worker:
    """An Arq worker for ``settings``, talking to Redis at ``redis_url``; ``sole``: no other worker
    serves this queue, so jobs still marked running at start-up lost their worker."""

    async def startup(ctx: WorkerContext) -> None:
        ctx["settings"] = settings
        ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
        ctx["catalog"] = await open_catalog(settings.resolved_catalog_url())
        ctx["objects"] = open_object_store(settings.resolved_objects_url(), **settings.object_store_options())
        ctx["queue"] = await Queue.connect(redis_url, settings.queue_name)
        ctx["tracer"] = tracing.open_tracer(tracing.WORKER_SERVICE)
        ctx["monitor"] = monitor = WorkerMonitor()
        monitor.watch_queue(ctx["queue"], asyncio.get_running_loop())
        monitor.watch_disks([settings.data_dir, Path(tempfile.gettempdir())])
        if settings.worker_metrics_port is not None:
            token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
            monitor.serve(settings.worker_metrics_host, settings.worker_metrics_port, token)
        await maintain(ctx, sole=sole)

    async def shutdown(ctx: WorkerContext) -> None:
        # A worker stopped during its start-up has opened only some of these.
        if "monitor" in ctx:
            ctx["monitor"].close()
        if "queue" in ctx:
            await ctx["queue"].aclose()
        if "catalog" in ctx:
            await ctx["catalog"].aclose()
        if "tracer" in ctx:
            await asyncio.to_thread(ctx["tracer"].close)

    return Worker(
        functions=[
            func(_arq(ingest), name="ingest", timeout=settings.ingest_timeout_s + ARQ_TIMEOUT_MARGIN_S,
                 max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES),
            func(_arq(export), name="export", timeout=settings.export_timeout_s + ARQ_TIMEOUT_MARGIN_S,
                 max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES),
            func(_arq(artifact), name="artifact", timeout=settings.ingest_timeout_s + ARQ_TIMEOUT_MARGIN_S,
                 max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES),
            func(_arq(derive), name="derive",
                 timeout=settings.export_timeout_s + settings.ingest_timeout_s + ARQ_TIMEOUT_MARGIN_S,
                 max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES),
            func(_arq(metrics), name="metrics", timeout=settings.metrics_timeout_s + ARQ_TIMEOUT_MARGIN_S,
                 max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES),
        ],
        cron_jobs=[cron(_arq(maintain), name="maintain", **_every(settings.requeue_every_s), timeout=300)] + (
            [cron(_arq(recompute_metrics), name="recompute_metrics", **_every(settings.metrics_recompute_every_s),
                  timeout=300)] if settings.metrics_recompute_every_s else []),
        redis_settings=redis_settings(redis_url),
        queue_name=settings.queue_name,
        on_startup=_arq(startup),
        on_shutdown=_arq(shutdown),
        ctx={"stopping": asyncio.Event()},
        handle_signals=handle_signals,
        burst=burst,
        max_jobs=settings.max_concurrent_jobs,
        poll_delay=POLL_DELAY_S,
        keep_result=0,
        max_tries=settings.job_max_tries + ARQ_EXTRA_TRIES,
    )


async def drain_worker(worker: Worker, grace_s: float) -> None:
    """Stop a worker gently (SIGTERM): it takes no new job, and each running job finishes its
    current step and hands itself back at its next checkpoint (see ``run_job``). Jobs still
    running after ``grace_s`` are stopped as :func:`stop_worker` stops them (handed back too)."""
    worker.allow_pick_jobs = False
    worker.ctx["stopping"].set()
    running = [task for task in worker.tasks.values() if not task.done()]
    if running:
        logger.info("stopping: waiting up to %.0f s for %d running job(s) to reach a checkpoint", grace_s,
                    len(running))
        await asyncio.wait(running, timeout=grace_s)
    await stop_worker(worker)


async def stop_worker(worker: Worker) -> None:
    """Stop a worker running inside another program's event loop (the embedded server).

    Running jobs are cancelled, which Arq treats as "run again later"; then the worker closes its
    Redis pool and runs ``on_shutdown``. Arq's own ``close`` would re-raise the jobs' cancellation.
    """
    for task in worker.tasks.values():
        task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    worker.tasks.clear()
    await worker.close()
