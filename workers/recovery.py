"""Keeping the queue honest: jobs the catalog knows but Redis lost, and leftovers of dead work.

The catalog is the source of truth. A ``queued`` job missing from Redis is enqueued again; a
``running`` job whose heartbeat stopped belonged to a worker that died, so its Arq in-progress
mark is released and a live worker runs it again (ingest and export are idempotent); the worker
that ``tuplehub serve`` supervises does this at once when it starts, as it is the only one. Expired
upload sessions are aborted, and segments that no version references are deleted once their
job has ended.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from tuplehub.storage.errors import NotFound
from tuplehub.storage.models import JobStatus, UploadStatus, utcnow
from tuplehub.storage.versions import job_of_segment
from tuplehub.workers.context import WorkerContext

logger = logging.getLogger("tuplehub.workers")


async def requeue_lost_jobs(ctx: WorkerContext, *, sole: bool = False) -> int:
    """Put queued jobs missing from Redis back, and free running jobs whose worker died.

    ``sole``: this worker is starting and is the only one on its queue (``tuplehub serve``
    supervises it), so every running job belonged to a worker process that is gone: it is run
    again at once instead of after ``stale_after_s`` of silence. The next claim counts the lost
    attempt (see :func:`tuplehub.storage.catalog.jobstate.claim`).
    """
    catalog, queue, settings = ctx["catalog"], ctx["queue"], ctx["settings"]
    stale_before = utcnow() - timedelta(seconds=settings.stale_after_s)
    recovered = 0
    for job in await catalog.jobs_with_status([JobStatus.queued, JobStatus.running]):
        if job.status == JobStatus.running:
            if not sole and job.heartbeat_at is not None and job.heartbeat_at > stale_before:
                continue
            logger.warning("job %s lost its worker (silent since %s); running it again", job.id, job.heartbeat_at)
            await queue.release(job.id)
            ctx["monitor"].lost.labels(job.kind).inc()
            recovered += 1
            if not await queue.knows(job.id):  # Redis lost it too
                await queue.enqueue(job)
        elif not await queue.knows(job.id) and await queue.enqueue(job):
            recovered += 1
    return recovered


async def expire_uploads(ctx: WorkerContext) -> int:
    """Free the bytes of upload sessions past their expiry.

    Open sessions are aborted. A completed session's file is normally deleted by its ingest job;
    one whose job ended without doing so (its worker died at the wrong moment) is deleted here.
    """
    catalog, objects = ctx["catalog"], ctx["objects"]
    expired = 0
    for upload in await catalog.list_uploads(UploadStatus.open, expires_before=utcnow()):
        if await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.expired):
            await asyncio.to_thread(objects.abort_multipart, upload.object_key, upload.multipart_id)
            expired += 1
    for upload in await catalog.list_uploads(UploadStatus.completed, expires_before=utcnow()):
        try:
            finished = (await catalog.get_job(upload.job_id or "")).status.finished
        except NotFound:
            finished = True
        if finished and await catalog.transition_upload(upload.id, UploadStatus.completed, UploadStatus.expired):
            await asyncio.to_thread(objects.delete, upload.object_key)
            expired += 1
    return expired


async def sweep_segments(ctx: WorkerContext) -> int:
    """Delete segments no version uses, once the ingest that wrote them has ended."""
    catalog = ctx["catalog"]
    swept = 0
    for segment in await catalog.list_segments():
        job_id = job_of_segment(segment)
        try:
            job = await catalog.get_job(job_id)
        except NotFound:
            job = None
        if job is not None and not job.status.finished:
            continue
        committed = await catalog.find_version_by_job(job_id)
        if committed is None or segment not in {s.id for s in committed.segments}:
            await catalog.delete_segment(segment)
            swept += 1
    return swept


async def maintain(ctx: WorkerContext, *, sole: bool = False) -> None:
    """The periodic pass (an Arq cron job, and once at worker start-up, where ``sole`` may be set)."""
    await requeue_lost_jobs(ctx, sole=sole)
    await expire_uploads(ctx)
    await sweep_segments(ctx)
