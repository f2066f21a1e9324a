"""Exports: request a filtered subset of a version as a job, then download its result.

Results are files in the object store. With S3 the client fetches them through a short-lived
presigned URL; otherwise the API streams them, honouring HTTP ``Range`` so interrupted downloads
resume. The job's ownership is checked again before any byte or URL is handed out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuplehub.api.deps import Caller, CatalogDep, ObjectsDep, QueueDep, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.api.routes.jobs import own_job
from tuplehub.storage import versions
from tuplehub.storage.errors import Conflict, InvalidFilter, InvalidRequest, NotFound
from tuplehub.storage.exports import check_export, dedup_key
from tuplehub.storage.models import DownloadURL, ExportCreate, JobKind, JobRead, JobRecord, JobStatus, utcnow
from tuplehub.storage.objects import ObjectStore

router = APIRouter(tags=["exports"])
STREAM_CHUNK = 4 * 2**20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}


@router.post("/datasets/{name}/exports", status_code=202,
             responses=problems(NotFound, InvalidFilter, InvalidRequest))
async def create_export(name: str, body: ExportCreate, caller: Caller, catalog: CatalogDep,
                        queue: QueueDep) -> JobRead:
    """Start an export job; an identical request on the same version returns the earlier job."""
    dataset = await catalog.get_dataset(name)
    version = await versions.get_version(catalog, dataset, body.version)
    check_export(version, body)
    job = JobRecord(kind=JobKind.export, owner=caller.id, dedup_key=dedup_key(dataset.id, version.number, body))
    job.params = {"dataset_id": dataset.id, "dataset": dataset.name, "version": version.number,
                  "request": body.model_dump(mode="json"),
                  "object_key": f"exports/{job.id}.{body.format.value}"}
    stored = await catalog.create_job(job)
    if stored.id == job.id:
        await queue.enqueue(stored)
    return JobRead.from_record(stored)


async def _finished_export(catalog: CatalogDep, job_id: str, caller_id: str) -> JobRecord:
    job = await own_job(catalog, job_id, caller_id)
    if job.kind != JobKind.export:
        raise NotFound(f"job {job_id} is not an export", job=job_id)
    if job.status != JobStatus.succeeded or job.result is None:
        raise Conflict(f"export {job_id} is {job.status}; its result is ready once it has succeeded",
                       job=job_id, job_status=job.status)
    return job


@router.get("/exports/{job_id}/url", responses=problems(NotFound, Conflict))
async def export_url(job_id: str, request: Request, caller: Caller, catalog: CatalogDep, objects: ObjectsDep,
                     settings: SettingsDep) -> DownloadURL:
    """Where to download the result: a presigned URL (S3), else this API's streaming endpoint."""
    job = await _finished_export(catalog, job_id, caller.id)
    key = job.result["object_key"]
    url = await asyncio.to_thread(objects.presign_get, key, settings.presign_ttl_s)
    if url is None:
        return DownloadURL(url=str(request.url_for("download_export", job_id=job_id)), size=job.result["bytes"])
    return DownloadURL(url=url, size=job.result["bytes"],
                       expires_at=utcnow() + timedelta(seconds=settings.presign_ttl_s))


@router.get("/exports/{job_id}/file", responses={
    **problems(NotFound, Conflict), 206: {"description": "The requested byte range."},
    416: {"description": "The range lies outside the file."}})
async def download_export(job_id: str, request: Request, caller: Caller, catalog: CatalogDep,
                          objects: ObjectsDep) -> StreamingResponse:
    """Stream the result file; a ``Range: bytes=a-b`` header asks for part of it."""
    job = await _finished_export(catalog, job_id, caller.id)
    key, fmt = job.result["object_key"], job.result["format"]
    size = await asyncio.to_thread(objects.size, key)
    start, end = _byte_range(request.headers.get("range"), size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start),
               "Content-Disposition": f'attachment; filename="{job_id}.{fmt}"'}
    status = 200
    if request.headers.get("range"):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(_chunks(objects, key, start, end), status_code=status, headers=headers,
                             media_type=MEDIA_TYPES.get(fmt, "application/octet-stream"))


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, end)`` of a single-range header; a range past the end is a 416."""
    if not header:
        return 0, size
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"unsupported Range header {header!r}; use one 'bytes=start-end' range",
                                  size=size)
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header!r} lies outside the {size}-byte file", size=size)
    return start, end


class RangeNotSatisfiable(InvalidRequest):
    code, status = "range-not-satisfiable", 416


def _chunks(objects: ObjectStore, key: str, start: int, end: int) -> Iterator[bytes]:
    """Read ``[start, end)`` in chunks; Starlette runs this in a thread."""
    with objects.open_read(key) as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk
