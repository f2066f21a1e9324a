"""Job state transitions, shared by every catalog backend so they all agree on them.

Each function takes the stored job and returns the job to write, or None to leave it alone.
"""

from __future__ import annotations

from typing import Any

from tuplehub.storage.models import JobKind, JobRecord, JobStatus, utcnow


def update(job: JobRecord, fields: dict[str, Any]) -> JobRecord | None:
    """Progress and heartbeats; a finished job is left as it ended."""
    return None if job.status.finished else JobRecord.model_validate({**job.model_dump(), **fields})


def claim(job: JobRecord, *, worker: str) -> JobRecord | None:
    """Start the next attempt; the count only grows, whatever the queue's own retry counter says."""
    if job.status not in (JobStatus.queued, JobStatus.running) or job.cancel_requested:
        return None
    now = utcnow()
    return job.model_copy(update={"status": JobStatus.running, "attempts": job.attempts + 1, "worker": worker,
                                  "started_at": job.started_at or now, "heartbeat_at": now})


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
