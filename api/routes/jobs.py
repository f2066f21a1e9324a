"""Jobs: read one, list the caller's, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuplehub.api.access.accounts import user_names
from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset
from tuplehub.api.problems import problems
from tuplehub.storage.access import Right
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Forbidden, NotFound
from tuplehub.storage.models import JobKind, JobRead, JobRecord, JobStatus, Page
from tuplehub.storage.permissions import Principal

router = APIRouter(prefix="/jobs", tags=["jobs"])


async def own_job(catalog: Catalog, job_id: str, caller: Principal) -> JobRecord:
    """The job if the caller owns it (or manages jobs); someone else's job is as absent as a missing one."""
    job = await catalog.get_job(job_id)
    if job.owner != caller.id and not caller.holds(Right.job_manage):
        raise NotFound(f"no job {job_id!r}", job=job_id)
    return job


async def job_reads(catalog: Catalog, jobs: list[JobRecord]) -> list[JobRead]:
    """Jobs as their readers see them: with the owner's user name next to the owner's id."""
    names = await user_names(catalog, (job.owner for job in jobs))
    return [JobRead.from_record(job, owner_name=names.get(job.owner)) for job in jobs]


@router.get("", summary="List my jobs", responses=problems(Forbidden))
async def list_jobs(caller: Caller, catalog: CatalogDep, status: JobStatus | None = None, kind: JobKind | None = None,
                    everyone: Annotated[bool, Query(description="Every user's jobs (needs job:manage).")] = False,
                    offset: Offset = 0,
                    limit: Limit = 50) -> Page[JobRead]:
    """The caller's jobs, newest first."""
    if everyone and not caller.holds(Right.job_manage):
        raise Forbidden("listing every user's jobs needs the right job:manage")
    owner = None if everyone else caller.id
    items, total = await catalog.list_jobs(owner=owner, status=status, kind=kind, offset=offset, limit=limit)
    return Page(items=await job_reads(catalog, items), total=total, offset=offset, limit=limit)


@router.get("/{job_id}", responses=problems(NotFound))
async def get_job(job_id: str, caller: Caller, catalog: CatalogDep) -> JobRead:
    """Status, progress, error and result of one job; clients poll this."""
    return (await job_reads(catalog, [await own_job(catalog, job_id, caller)]))[0]


@router.post("/{job_id}/cancel", responses=problems(NotFound, Forbidden))
async def cancel_job(job_id: str, caller: Caller, catalog: CatalogDep) -> JobRead:
    """Cancel a queued job at once, or ask a running one to stop at its next checkpoint."""
    job = await own_job(catalog, job_id, caller)
    needed = Right.dataset_create if job.kind == JobKind.ingest else Right.dataset_read
    if not caller.allows(needed):
        raise Forbidden(f"this API token may not cancel {job.kind} jobs (it lacks {needed})")
    return (await job_reads(catalog, [await catalog.request_cancel(job_id)]))[0]
