"""Per-user quotas: stored bytes, datasets and concurrent jobs, checked before work starts.

Each limit is a setting (``TUPLEHUB_QUOTA_STORED_BYTES``, ``TUPLEHUB_QUOTA_DATASETS``,
``TUPLEHUB_QUOTA_CONCURRENT_JOBS``); unset means no limit, the default, since on a researcher's own
embedded server the only user is its owner. A refusal is a 403 :class:`QuotaExceeded` naming
the quota, the usage and the limit, raised when an upload session opens or takes a part, a
dataset is created or a job is submitted, so nothing is half-done when it comes.

Usage is counted from the catalog, so it never drifts from what is stored: a user's stored bytes
are the decoded size of every distinct segment of the versions of their datasets (rows times
row width, whatever the compression on disk) plus the size of each artifact they own; their
datasets are those they own; their concurrent jobs those they submitted that are queued or
running. Jobs the server starts on its own (the cheap metrics after an ingest) are neither
refused nor counted.
"""

from __future__ import annotations

from tuplehub.storage.access import Usage
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import QuotaExceeded
from tuplehub.storage.models import DatasetRecord, JobStatus
from tuplehub.storage.settings import Settings

_PAGE = 1000


async def stored_bytes(catalog: Catalog, user_id: str) -> int:
    """Decoded bytes of the user's distinct dataset segments plus the bytes of their artifacts."""
    segments: dict[str, int] = {}
    offset = 0
    while True:
        page, total = await catalog.list_datasets(name=None, tag=None, offset=offset, limit=_PAGE, owner=user_id)
        for dataset in page:
            for version in await catalog.list_versions(dataset.id):
                width = version.tuple_schema.row_bytes()
                segments.update({segment.id: segment.transitions * width for segment in version.segments})
        offset += len(page)
        if not page or offset >= total:
            break
    artifacts, _ = await catalog.find_records("artifacts", ArtifactRecord, where={"owner": user_id})
    return sum(segments.values()) + sum(artifact.size for artifact in artifacts)


async def dataset_count(catalog: Catalog, user_id: str) -> int:
    _, total = await catalog.list_datasets(name=None, tag=None, offset=0, limit=1, owner=user_id)
    return total


async def active_jobs(catalog: Catalog, user_id: str) -> int:
    """The user's own jobs queued or running; those the server scheduled on their data do not count."""
    count = 0
    for status in (JobStatus.queued, JobStatus.running):
        jobs, _ = await catalog.list_jobs(owner=user_id, status=status, kind=None, offset=0, limit=_PAGE)
        count += sum(1 for job in jobs if not job.params.get("scheduled"))
    return count


async def usage(catalog: Catalog, settings: Settings, user_id: str) -> Usage:
    """What the user uses, and the limits that apply (None: no limit)."""
    return Usage(stored_bytes=await stored_bytes(catalog, user_id), datasets=await dataset_count(catalog, user_id),
                 concurrent_jobs=await active_jobs(catalog, user_id),
                 limits={"stored_bytes": settings.quota_stored_bytes, "datasets": settings.quota_datasets,
                         "concurrent_jobs": settings.quota_concurrent_jobs})


async def require_bytes(catalog: Catalog, settings: Settings, user_id: str, incoming: int = 0) -> None:
    """Refuse when the user's stored bytes plus ``incoming`` would pass the limit (or already reach it)."""
    limit = settings.quota_stored_bytes
    if limit is None:
        return
    used = await stored_bytes(catalog, user_id)
    if used + incoming > limit or used >= limit:
        extra = f" and {incoming} more bytes would not fit" if incoming and used < limit else ""
        raise QuotaExceeded(f"your storage quota is used up: {used} of {limit} bytes stored{extra}; "
                            "delete versions, datasets or artifacts, or ask an administrator for more",
                            quota="stored_bytes", usage=used, limit=limit, incoming=incoming or None)


async def require_dataset_slot(catalog: Catalog, settings: Settings, user_id: str) -> None:
    """Refuse a new dataset when the user owns as many as the limit allows."""
    limit = settings.quota_datasets
    if limit is None:
        return
    owned = await dataset_count(catalog, user_id)
    if owned >= limit:
        raise _too_many_datasets(owned, limit)


async def settle_dataset_slot(catalog: Catalog, settings: Settings, user_id: str, created: DatasetRecord) -> None:
    """Undo a dataset just created past the limit: concurrent creations all passed the check before it.

    Every creation that finds the user over the limit removes its own dataset, so the limit holds
    whatever the timing (racing creations may all be refused; a retry gets a free slot).
    """
    limit = settings.quota_datasets
    if limit is None:
        return
    owned = await dataset_count(catalog, user_id)
    if owned > limit:
        await catalog.delete_dataset(created.id)
        raise _too_many_datasets(owned - 1, limit)


def _too_many_datasets(owned: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(f"you own {owned} datasets, the most this server allows per user ({limit}); "
                         "delete one first, or ask an administrator for more",
                         quota="datasets", usage=owned, limit=limit)


async def require_job_slot(catalog: Catalog, settings: Settings, user_id: str) -> None:
    """Refuse a new job while the user has as many queued or running as the limit allows."""
    limit = settings.quota_concurrent_jobs
    if limit is None:
        return
    running = await active_jobs(catalog, user_id)
    if running >= limit:
        raise QuotaExceeded(f"you have {running} jobs queued or running, the most this server allows per user "
                            f"({limit}); wait for one to finish or cancel one",
                            quota="concurrent_jobs", usage=running, limit=limit)
