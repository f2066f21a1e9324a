"""Upload sessions: open, send parts (presigned for S3, through the API for a local store), complete, abort.

Completing a session turns it into an ``ingest`` job; the catalog record is written before the job
is enqueued, so a job is never lost even if Redis is briefly away (workers re-enqueue it).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter, Request, Response

from tuplehub.api.access.policy import readable_dataset, require_owner
from tuplehub.api.deps import Caller, CatalogDep, ObjectsDep, QueueDep, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.storage import quotas
from tuplehub.storage.access import Right
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, QuotaExceeded
from tuplehub.storage.models import (
    DatasetRecord,
    JobKind,
    JobRead,
    JobRecord,
    JobStatus,
    PartURL,
    PartURLsRequest,
    ReceivedPart,
    UploadComplete,
    UploadCreate,
    UploadedPart,
    UploadMode,
    UploadRead,
    UploadRecord,
    UploadStatus,
    new_id,
    utcnow,
)
from tuplehub.storage.objects import S3_MIN_PART, ObjectStore
from tuplehub.storage.permissions import Principal
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings
from tuplehub.storage.versions import check_appendable

router = APIRouter(tags=["uploads"])
# Bytes gathered from the request stream before one write: few thread hops, bounded memory.
WRITE_CHUNK = 8 * 2**20


def upload_read(record: UploadRecord, objects: ObjectStore) -> UploadRead:
    transport = "presigned" if objects.presigned_uploads else "api"
    return UploadRead(**record.model_dump(), transport=transport)


async def _own_upload(catalog: Catalog, upload_id: str, caller: Principal) -> UploadRecord:
    """The session if the caller owns it (or manages jobs); anyone else's is as absent as a missing one."""
    upload = await catalog.get_upload(upload_id)
    if upload.owner != caller.id and not caller.holds(Right.job_manage):
        raise NotFound(f"no upload {upload_id!r}", upload=upload_id)
    needed = Right.artifact_create if upload.artifact is not None else Right.dataset_create
    if not caller.allows(needed):
        raise Forbidden(f"this API token may not upload this (it lacks {needed})")
    return upload


async def _open_upload(catalog: Catalog, upload_id: str, caller: Principal) -> UploadRecord:
    upload = await _own_upload(catalog, upload_id, caller)
    if upload.status != UploadStatus.open:
        raise Conflict(f"upload {upload_id} is {upload.status}, not open", upload=upload_id,
                       upload_status=upload.status)
    if upload.expires_at <= utcnow():
        raise Conflict(f"upload {upload_id} expired at {upload.expires_at.isoformat()}", upload=upload_id)
    return upload


def check_declared_size(size: int | None, part_size: int, settings: Settings) -> None:
    """Refuse a declared upload the server would never take, before anything is allocated for it
    (dataset and artifact sessions alike)."""
    if size is None:
        return
    if size > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload declares {size} bytes; this server takes at most "
                              f"{settings.max_upload_bytes} bytes per upload (TUPLEHUB_MAX_UPLOAD_BYTES)",
                              field="size")
    parts = max(1, -(-size // part_size))
    if parts > settings.max_parts:
        smallest = -(-size // settings.max_parts)
        raise InvalidRequest(f"{size} bytes in parts of {part_size} bytes make {parts} parts; at most "
                             f"{settings.max_parts} are allowed: use a part_size of at least {smallest}",
                             field="part_size")


def _last_part(upload: UploadRecord, settings: Settings) -> int:
    """The highest part number the session may use: what its declared size needs, else the limits'."""
    if upload.size is not None:
        return max(1, -(-upload.size // upload.part_size))
    return max(1, min(settings.max_parts, settings.max_upload_bytes // upload.part_size))


def _part_limit(upload: UploadRecord, number: int, settings: Settings) -> int:
    """The most bytes part ``number`` may hold, so that no write lands past the declared end."""
    if not 1 <= number <= _last_part(upload, settings):
        raise InvalidRequest(f"part {number} is out of range: this upload has parts 1 to "
                             f"{_last_part(upload, settings)}", part=number)
    if upload.size is None:
        return upload.part_size
    return min(upload.part_size, upload.size - (number - 1) * upload.part_size)


async def _check_declared_schema(catalog: Catalog, dataset: DatasetRecord, body: UploadCreate) -> None:
    """An append whose declared schema differs from the latest version's is refused now, not at commit."""
    if body.tuple_schema is None or body.mode != UploadMode.append:
        return
    versions = await catalog.list_versions(dataset.id)
    if versions:
        check_appendable(versions[-1], body.tuple_schema)


@router.post("/datasets/{name}/uploads", status_code=201,
             responses=problems(NotFound, Forbidden, InvalidRequest, PayloadTooLarge))
async def create_upload(name: str, body: UploadCreate, caller: Caller, catalog: CatalogDep, objects: ObjectsDep,
                        settings: SettingsDep) -> UploadRead:
    """Open an upload session for one Parquet file, sent in parts of ``part_size`` bytes.

    A declared ``size`` is checked against the server's limits and a declared ``schema`` against
    the dataset (for an append) here, so a doomed upload fails before its first byte.
    """
    dataset = await readable_dataset(catalog, caller, name)
    require_owner(caller, dataset, "dataset", "write")
    await quotas.require_bytes(catalog, settings, caller.user_id, body.size or 0)
    if objects.presigned_uploads and body.part_size < S3_MIN_PART:
        raise InvalidRequest(f"part_size must be at least {S3_MIN_PART} bytes for an S3 store",
                             field="part_size")
    if body.part_size > settings.max_part_bytes:
        raise InvalidRequest(f"part_size may be at most {settings.max_part_bytes} bytes", field="part_size")
    check_declared_size(body.size, body.part_size, settings)
    await _check_declared_schema(catalog, dataset, body)
    upload_id = new_id()
    key = f"uploads/{upload_id}.parquet"
    multipart_id = await asyncio.to_thread(objects.start_multipart, key)
    record = UploadRecord(id=upload_id, dataset_id=dataset.id, dataset=dataset.name, owner=caller.user_id,
                          mode=body.mode, part_size=body.part_size, object_key=key, multipart_id=multipart_id,
                          episode_metadata=body.episode_metadata, size=body.size, fingerprint=body.fingerprint,
                          expires_at=utcnow() + timedelta(seconds=settings.upload_ttl_s))
    return upload_read(await catalog.create_upload(record), objects)


@router.get("/datasets/{name}/uploads", responses=problems(NotFound, Forbidden))
async def list_open_uploads(name: str, caller: Caller, catalog: CatalogDep, objects: ObjectsDep) -> list[UploadRead]:
    """The caller's open, unexpired sessions on this dataset, newest first: what can be resumed."""
    dataset = await readable_dataset(catalog, caller, name)
    require_owner(caller, dataset, "dataset", "write")
    uploads = await catalog.list_open_uploads(dataset.id, caller.user_id, expires_after=utcnow())
    return [upload_read(upload, objects) for upload in uploads]


@router.get("/uploads/{upload_id}", responses=problems(NotFound, Forbidden))
async def get_upload(upload_id: str, caller: Caller, catalog: CatalogDep, objects: ObjectsDep) -> UploadRead:
    return upload_read(await _own_upload(catalog, upload_id, caller), objects)


@router.get("/uploads/{upload_id}/parts", responses=problems(NotFound, Conflict))
async def received_parts(upload_id: str, caller: Caller, catalog: CatalogDep,
                         objects: ObjectsDep) -> list[ReceivedPart]:
    """The parts the store already holds, with their MD5 etags, so a client resumes by sending the rest."""
    upload = await _open_upload(catalog, upload_id, caller)
    return await asyncio.to_thread(objects.list_parts, upload.object_key, upload.multipart_id)


@router.post("/uploads/{upload_id}/parts", responses=problems(NotFound, Conflict, InvalidRequest))
async def presign_parts(upload_id: str, body: PartURLsRequest, caller: Caller, catalog: CatalogDep,
                        objects: ObjectsDep, settings: SettingsDep) -> list[PartURL]:
    """Presigned PUT URLs for parts (S3 stores); each answers with the ETag to pass to ``complete``."""
    upload = await _open_upload(catalog, upload_id, caller)
    expires_at = utcnow() + timedelta(seconds=settings.presign_ttl_s)
    urls = []
    for number in body.numbers:
        _part_limit(upload, number, settings)
        url = await asyncio.to_thread(objects.presign_part, upload.object_key, upload.multipart_id or "", number,
                                      settings.presign_ttl_s)
        urls.append(PartURL(number=number, url=url, expires_at=expires_at))
    return urls


@router.put("/uploads/{upload_id}/parts/{number}",
            responses=problems(NotFound, Conflict, InvalidRequest, PayloadTooLarge),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_part(upload_id: str, number: int, request: Request, caller: Caller, catalog: CatalogDep,
                   objects: ObjectsDep, settings: SettingsDep) -> UploadedPart:
    """Stream one part through the API (local stores); the body is the part's raw bytes.

    The part's place and size are checked against the session's declared size (or the server's
    limits) before anything is written, so a small request cannot make a huge sparse file.
    """
    upload = await _open_upload(catalog, upload_id, caller)
    limit = _part_limit(upload, number, settings)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"part {number} declares {declared} bytes; it may hold at most {limit}",
                              part=number)
    # A declared size passed the quota when the session opened; else this part's place bounds the rest.
    if upload.size is None:
        length = int(declared) if declared is not None and declared.isdigit() else limit
        await quotas.require_bytes(catalog, settings, caller.user_id, (number - 1) * upload.part_size + length)
    writer = await asyncio.to_thread(objects.open_part, upload.object_key, number, upload.part_size, limit)
    buffer = bytearray()
    try:
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= WRITE_CHUNK:
                await asyncio.to_thread(writer.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(writer.write, bytes(buffer))
    except BaseException:
        writer.abort()
        raise
    etag = await asyncio.to_thread(writer.close)
    return UploadedPart(number=number, etag=etag)


@router.post("/uploads/{upload_id}/complete", status_code=202, responses=problems(NotFound, Conflict, InvalidRequest))
async def complete_upload(upload_id: str, body: UploadComplete, caller: Caller, catalog: CatalogDep,
                          objects: ObjectsDep, queue: QueueDep, settings: SettingsDep) -> JobRead:
    """Assemble the parts and start the ``ingest`` job that turns them into a new version.

    Safe to repeat: completing a completed session answers with its job again, so a client whose
    connection dropped can simply retry.
    """
    upload = await _own_upload(catalog, upload_id, caller)
    if upload.status == UploadStatus.completed and upload.job_id:
        return JobRead.from_record(await _ingest_job(catalog, queue, upload))
    upload = await _open_upload(catalog, upload_id, caller)
    await quotas.require_job_slot(catalog, settings, upload.owner)
    parts = [(part.number, part.etag) for part in sorted(body.parts, key=lambda p: p.number)]
    if upload.size is not None and len(parts) != _last_part(upload, settings):
        raise InvalidRequest(f"the upload declared {upload.size} bytes, which take {_last_part(upload, settings)} "
                             f"parts; {len(parts)} were given", upload=upload_id)
    await asyncio.to_thread(objects.complete_multipart, upload.object_key, upload.multipart_id, parts,
                            upload.part_size, upload.size)
    await _assembled_within_quota(catalog, objects, settings, upload)
    completed = upload.model_copy(update={
        "status": UploadStatus.completed, "job_id": new_id(),
        "episode_metadata": {**upload.episode_metadata, **body.episode_metadata}})
    if not await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.completed,
                                           job_id=completed.job_id, episode_metadata=completed.episode_metadata):
        completed = await catalog.get_upload(upload.id)  # a concurrent complete won: answer with its job
        if completed.status != UploadStatus.completed or completed.job_id is None:
            raise Conflict(f"upload {upload_id} was aborted meanwhile", upload=upload_id)
    return JobRead.from_record(await _ingest_job(catalog, queue, completed))


async def _assembled_within_quota(catalog: Catalog, objects: ObjectStore, settings: Settings,
                                  upload: UploadRecord) -> None:
    """Refuse, and abort, a session whose assembled file would pass its owner's storage quota.

    Each part is checked against what is already stored, not against the session's other parts, and
    parts sent to presigned S3 URLs are not seen at all: only the whole file tells what a session adds.
    """
    if settings.quota_stored_bytes is None:
        return
    size = await asyncio.to_thread(objects.size, upload.object_key)
    try:
        await quotas.require_bytes(catalog, settings, upload.owner, size)
    except QuotaExceeded:
        if await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.aborted):
            await asyncio.to_thread(objects.delete, upload.object_key)
        raise


async def _ingest_job(catalog: Catalog, queue: Queue, upload: UploadRecord) -> JobRecord:
    """The ingest job of a completed upload; created and enqueued here if an earlier call died first.

    The session records the job id before the job exists, so whichever call gets here creates the
    same job (creating a job is idempotent by id, and so is enqueuing it).
    """
    try:
        job = await catalog.get_job(upload.job_id or "")
    except NotFound:
        if upload.artifact is not None:
            record = JobRecord(id=upload.job_id, kind=JobKind.artifact, owner=upload.owner,
                               params={"upload_id": upload.id, "name": upload.artifact["name"]})
        else:
            record = JobRecord(id=upload.job_id, kind=JobKind.ingest, owner=upload.owner, params={
                "upload_id": upload.id, "dataset_id": upload.dataset_id, "dataset": upload.dataset,
                "mode": upload.mode})
        job = await catalog.create_job(record)
    if job.status == JobStatus.queued:
        await queue.enqueue(job)
    return job


@router.delete("/uploads/{upload_id}", status_code=204, responses=problems(NotFound, Conflict))
async def abort_upload(upload_id: str, caller: Caller, catalog: CatalogDep, objects: ObjectsDep) -> Response:
    """Abandon an open session and free its parts."""
    upload = await _open_upload(catalog, upload_id, caller)
    if await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.aborted):
        await asyncio.to_thread(objects.abort_multipart, upload.object_key, upload.multipart_id)
    return Response(status_code=204)
