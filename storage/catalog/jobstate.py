"""Job state transitions, shared by every catalog backend so they all agree on them.

Each function takes the stored job and returns the job to write, or None to leave it alone.
"""

from __future__ import annotations

from typing import Any

from tuplehub.storage import logs, tracing
from tuplehub.storage.models import JobKind, JobRecord, JobStatus, utcnow


def created(job: JobRecord) -> JobRecord:
    """A new job as stored: with the trace of the request (or job) creating it, unless it has one
    (and, with traces on, the span creating it)."""
    if job.trace_id is not None:
        return job
    return job.model_copy(update={"trace_id": logs.current("trace_id"), "traceparent": tracing.current_traceparent()})


def update(job: JobRecord, fields: dict[str, Any]) -> JobRecord | None:
    """Progress and heartbeats; a finished job is left as it ended.

    ``progress_at`` moves only when the progress itself changes, so a job that keeps beating
    without getting anywhere is seen as stuck (:func:`stalled`).
    """
    if job.status.finished:
        return None
    updated = JobRecord.model_validate({**job.model_dump(), **fields})
    if updated.progress != job.progress:
        updated.progress_at = utcnow()
    return updated


def claim(job: JobRecord, *, worker: str) -> JobRecord | None:
    """Start the next attempt; the count only grows, whatever the queue's own retry counter says.

    A job still ``running`` under a worker when it is claimed again lost its previous attempt:
    that worker's process died (or stopped answering) before recording any outcome. Those are
    counted in ``lost``, across restarts; an attempt handed back on a clean stop (:func:`hand_back`)
    or deferred for a retry has no worker and is not counted.
    """
    if job.status not in (JobStatus.queued, JobStatus.running) or job.cancel_requested:
        return None
    now = utcnow()
    lost = job.lost + (job.status == JobStatus.running and job.worker is not None)
    return job.model_copy(update={"status": JobStatus.running, "attempts": job.attempts + 1, "worker": worker,
                                  "lost": lost, "started_at": job.started_at or now, "heartbeat_at": now,
                                  "progress_at": now})


def hand_back(job: JobRecord, *, attempt: int) -> JobRecord | None:
    """A worker stopping cleanly returns its running attempt: queued again, not counted as lost."""
    if job.status != JobStatus.running or job.attempts != attempt:
        return None
    progress = job.progress.model_copy(update={"stage": "queued", "message": "its worker stopped; it runs again "
                                                                                "when a worker starts"})
    return job.model_copy(update={"status": JobStatus.queued, "worker": None, "progress": progress})


def stalled(job: JobRecord, *, after_s: float) -> bool:
    """Whether a running job's progress has not changed for ``after_s`` seconds, heartbeat or not."""
    since = job.progress_at or job.started_at
    return job.status == JobStatus.running and since is not None and (utcnow() - since).total_seconds() > after_s


def finish(job: JobRecord, status: JobStatus, result: dict[str, Any] | None,
           error: dict[str, Any] | None) -> JobRecord | None:
    if job.status.finished:
        return None
    update: dict[str, Any] = {"status": status, "result": result, "error": error, "finished_at": utcnow()}
    if status != JobStatus.succeeded or job.kind != JobKind.export:
        # A finished export's key answers identical requests; a failed one's must not, and other
        # kinds' keys only keep two identical jobs from being queued at once.
        update["dedup_key"] = None
    if status == JobStatus.succeeded:
        update["progress"] = job.progress.model_copy(update={"fraction": 1.0, "stage": "done"})
    return JobRecord.model_validate({**job.model_dump(), **update})


def cancel(job: JobRecord) -> JobRecord | None:
    if job.status.finished:
        return None
    if job.status == JobStatus.queued:
        return finish(job, JobStatus.cancelled, None, None)
    return job.model_copy(update={"cancel_requested": True})
