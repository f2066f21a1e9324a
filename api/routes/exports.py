"""Exports: request a filtered subset of a version as a job, then download its result.

Results are files in the object store. With S3 the client fetches them through a short-lived
presigned URL; otherwise the API streams them, honouring HTTP ``Range`` so interrupted downloads
resume. The job's ownership is checked again before any byte or URL is handed out.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuplehub.api.access.policy import readable_dataset
from tuplehub.api.deps import Caller, CatalogDep, ObjectsDep, QueueDep, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.api.routes.jobs import own_job
from tuplehub.api.streaming import RANGE_RESPONSES, stream_object
from tuplehub.storage import quotas, versions
from tuplehub.storage.errors import Conflict, InvalidFilter, InvalidRequest, NotFound
from tuplehub.storage.exports import check_export, dedup_key
from tuplehub.storage.models import DownloadURL, ExportCreate, JobKind, JobRead, JobRecord, JobStatus, utcnow
from tuplehub.storage.permissions import Principal

router = APIRouter(tags=["exports"])
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}


@router.post("/datasets/{name}/exports", status_code=202,
             responses=problems(NotFound, InvalidFilter, InvalidRequest))
async def create_export(name: str, body: ExportCreate, caller: Caller, catalog: CatalogDep,
                        queue: QueueDep, settings: SettingsDep) -> JobRead:
    """Start an export job; an identical request on the same version returns the earlier job."""
    dataset = await readable_dataset(catalog, caller, name)
    version = await versions.get_version(catalog, dataset, body.version)
    check_export(version, body, max_leaves=settings.filter_max_leaves)
    job = JobRecord(kind=JobKind.export, owner=caller.user_id,
                    dedup_key=dedup_key(dataset.id, version.number, body, caller.user_id))
    job.params = {"dataset_id": dataset.id, "dataset": dataset.name, "version": version.number,
                  "request": body.model_dump(mode="json"),
                  "object_key": f"exports/{job.id}.{body.format.value}"}
    await quotas.require_job_slot(catalog, settings, caller.user_id)
    stored = await catalog.create_job(job)
    if stored.id == job.id:
        await queue.enqueue(stored)
    return JobRead.from_record(stored)


async def _finished_export(catalog: CatalogDep, job_id: str, caller: Principal) -> dict[str, Any]:
    """The result of the caller's finished export, if they may still read its dataset (access may be withdrawn)."""
    job = await own_job(catalog, job_id, caller)
    if job.kind != JobKind.export:
        raise NotFound(f"job {job_id} is not an export", job=job_id)
    try:
        dataset = await readable_dataset(catalog, caller, job.params["dataset"])
    except NotFound:
        dataset = None
    if dataset is None or dataset.id != job.params["dataset_id"]:
        raise NotFound(f"no job {job_id!r}", job=job_id)
    if job.status != JobStatus.succeeded or job.result is None:
        raise Conflict(f"export {job_id} is {job.status}; its result is ready once it has succeeded",
                       job=job_id, job_status=job.status)
    return job.result


@router.get("/exports/{job_id}/url", responses=problems(NotFound, Conflict))
async def export_url(job_id: str, request: Request, caller: Caller, catalog: CatalogDep, objects: ObjectsDep,
                     settings: SettingsDep) -> DownloadURL:
    """Where to download the result: a presigned URL (S3), else this API's streaming endpoint."""
    result = await _finished_export(catalog, job_id, caller)
    key = result["object_key"]
    url = await asyncio.to_thread(objects.presign_get, key, settings.presign_ttl_s)
    if url is None:
        return DownloadURL(url=str(request.url_for("download_export", job_id=job_id)), size=result["bytes"])
    return DownloadURL(url=url, size=result["bytes"],
                       expires_at=utcnow() + timedelta(seconds=settings.presign_ttl_s))


@router.get("/exports/{job_id}/file", responses={
    **problems(NotFound, Conflict), **RANGE_RESPONSES})
async def download_export(job_id: str, request: Request, caller: Caller, catalog: CatalogDep,
                          objects: ObjectsDep) -> StreamingResponse:
    """Stream the result file; a ``Range: bytes=a-b`` header asks for part of it."""
    result = await _finished_export(catalog, job_id, caller)
    fmt = result["format"]
    return await stream_object(objects, result["object_key"], request, filename=f"{job_id}.{fmt}",
                               media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"))
