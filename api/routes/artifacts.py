"""Artifacts: content-addressed files with metadata, linked to benchmarks and datasets, shared like them.

Bytes arrive through the same upload sessions as datasets (parts through the API or presigned);
completing the session starts an ``artifact`` job that hashes and stores them once per content.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import (
    readable_benchmark,
    readable_dataset,
    require_create,
    require_owner,
)
from tuplehub.api.deps import Caller, CatalogDep, Limit, ObjectsDep, Offset, Reader, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.api.routes.sharing import change_sharing
from tuplehub.api.routes.uploads import check_declared_size, upload_read
from tuplehub.api.streaming import RANGE_RESPONSES, stream_object
from tuplehub.storage import quotas
from tuplehub.storage.access import Publish
from tuplehub.storage.artifacts import MEDIA_TYPE, ArtifactLinks, ArtifactRead, ArtifactRecord, ArtifactUploadCreate
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from tuplehub.storage.models import DownloadURL, Page, UploadMode, UploadRead, UploadRecord, new_id, utcnow
from tuplehub.storage.permissions import Principal, can_read

router = APIRouter(prefix="/artifacts", tags=["artifacts"])
KIND = "artifact"


async def readable_artifact(catalog: Catalog, caller: Principal, artifact_id: str) -> ArtifactRecord:
    records, _ = await catalog.find_records("artifacts", ArtifactRecord, where={"artifact_id": artifact_id})
    readable = sorted((r for r in records if can_read(caller, r, KIND)), key=lambda r: r.owner != caller.id)
    if not readable:
        raise NotFound(f"no artifact {artifact_id!r}", artifact=artifact_id)
    return readable[0]


async def _linked_dataset_ids(catalog: Catalog, caller: Principal, links: ArtifactLinks) -> list[str]:
    """Linking needs read access to every benchmark and dataset named."""
    for benchmark in links.benchmarks:
        await readable_benchmark(catalog, caller, benchmark)
    return [(await readable_dataset(catalog, caller, name)).id for name in links.datasets]


async def _read(catalog: Catalog, caller: Principal, record: ArtifactRecord) -> ArtifactRead:
    """The record as the caller sees it: links to what they may not read are left out."""
    benchmarks = []
    for benchmark in record.benchmarks:
        try:
            benchmarks.append((await readable_benchmark(catalog, caller, benchmark)).benchmark_id)
        except NotFound:
            continue
    return ArtifactRead(id=record.artifact_id, datasets=sorted(await _dataset_names(catalog, caller, record)),
                        benchmarks=benchmarks, **record.model_dump(include={
                            "name", "media_type", "size", "metadata", "owner", "visibility", "created_at"}))


async def _dataset_names(catalog: Catalog, caller: Principal, record: ArtifactRecord) -> list[str]:
    """The linked datasets the caller may read (links to others are not shown)."""
    names = []
    for dataset_id in record.datasets:
        dataset = await catalog.get_dataset_by_id(dataset_id)
        if dataset is not None and can_read(caller, dataset, "dataset"):
            names.append(dataset.name)
    return names


@router.post("/uploads", status_code=201, responses=problems(Forbidden, NotFound, InvalidRequest, PayloadTooLarge))
async def create_artifact_upload(body: ArtifactUploadCreate, caller: Caller, catalog: CatalogDep,
                                 objects: ObjectsDep, settings: SettingsDep) -> UploadRead:
    """Open an upload session for one artifact; send its parts, then complete it like a dataset upload.

    A declared ``size`` is checked against the server's limits as a dataset upload's is, and bounds
    where its parts may write.
    """
    require_create(caller, KIND)
    await quotas.require_bytes(catalog, settings, caller.user_id)
    if body.part_size > settings.max_part_bytes:
        raise InvalidRequest(f"part_size may be at most {settings.max_part_bytes} bytes", field="part_size")
    check_declared_size(body.size, body.part_size, settings)
    dataset_ids = await _linked_dataset_ids(catalog, caller, ArtifactLinks(benchmarks=body.benchmarks,
                                                                           datasets=body.datasets))
    upload_id = new_id()
    key = f"uploads/{upload_id}.bin"
    multipart_id = await asyncio.to_thread(objects.start_multipart, key)
    record = UploadRecord(
        id=upload_id, dataset_id="", dataset="", owner=caller.user_id, mode=UploadMode.replace,
        part_size=body.part_size, object_key=key, multipart_id=multipart_id, size=body.size,
        artifact={**body.model_dump(exclude={"part_size", "size", "datasets"}), "datasets": dataset_ids},
        expires_at=utcnow() + timedelta(seconds=settings.upload_ttl_s))
    return upload_read(await catalog.create_upload(record), objects)


@router.get("")
async def list_artifacts(caller: Reader, catalog: CatalogDep,
                         name: Annotated[str | None, Query(description="Name contains this.")] = None,
                         benchmark: Annotated[str | None, Query(description="Linked to this benchmark.")] = None,
                         dataset: Annotated[str | None, Query(description="Linked to this dataset (name).")] = None,
                         offset: Offset = 0,
                         limit: Limit = 100) -> Page[ArtifactRead]:
    """Readable artifacts, newest first."""
    dataset_id = (await readable_dataset(catalog, caller, dataset)).id if dataset else None
    records, _ = await catalog.find_records("artifacts", ArtifactRecord, newest_first=True)
    seen: set[str] = set()
    matches = []
    for record in sorted(records, key=lambda r: r.owner != caller.id):
        if record.artifact_id in seen or not can_read(caller, record, KIND):
            continue
        unwanted = (name and name.lower() not in record.name.lower()) \
            or (benchmark and benchmark not in record.benchmarks) or (dataset_id and dataset_id not in record.datasets)
        if unwanted:
            continue
        seen.add(record.artifact_id)
        matches.append(record)
    matches.sort(key=lambda r: r.created_at, reverse=True)
    items = [await _read(catalog, caller, r) for r in matches[offset:offset + limit]]
    return Page(items=items, total=len(matches), offset=offset, limit=limit)


@router.get("/{artifact_id}", responses=problems(NotFound))
async def get_artifact(artifact_id: str, caller: Reader, catalog: CatalogDep) -> ArtifactRead:
    return await _read(catalog, caller, await readable_artifact(catalog, caller, artifact_id))


@router.get("/{artifact_id}/url", responses=problems(NotFound))
async def artifact_url(artifact_id: str, request: Request, caller: Reader, catalog: CatalogDep,
                       objects: ObjectsDep, settings: SettingsDep) -> DownloadURL:
    """Where to download the bytes: a presigned URL (S3, after the read check), else the API stream."""
    record = await readable_artifact(catalog, caller, artifact_id)
    url = await asyncio.to_thread(objects.presign_get, record.object_key, settings.presign_ttl_s)
    if url is None:
        return DownloadURL(url=str(request.url_for("download_artifact", artifact_id=artifact_id)), size=record.size)
    return DownloadURL(url=url, size=record.size, expires_at=utcnow() + timedelta(seconds=settings.presign_ttl_s))


@router.get("/{artifact_id}/file", responses={**problems(NotFound), **RANGE_RESPONSES})
async def download_artifact(artifact_id: str, request: Request, caller: Reader, catalog: CatalogDep,
                            objects: ObjectsDep) -> StreamingResponse:
    record = await readable_artifact(catalog, caller, artifact_id)
    # Types are checked on upload; one stored before that check could not go into a header.
    media_type = record.media_type if re.fullmatch(MEDIA_TYPE, record.media_type) else "application/octet-stream"
    return await stream_object(objects, record.object_key, request, filename=record.name, media_type=media_type)


@router.put("/{artifact_id}/links", responses=problems(NotFound, Forbidden))
async def set_links(artifact_id: str, body: ArtifactLinks, caller: Caller, catalog: CatalogDep) -> ArtifactRead:
    """Replace the benchmarks and datasets the caller's artifact is linked to."""
    record = await readable_artifact(catalog, caller, artifact_id)
    require_owner(caller, record, KIND, "write")
    dataset_ids = await _linked_dataset_ids(catalog, caller, body)
    updated = await catalog.update_record("artifacts", ArtifactRecord, record.id, benchmarks=body.benchmarks,
                                          datasets=dataset_ids)
    return await _read(catalog, caller, updated or record)


@router.post("/{artifact_id}/publish", responses=problems(NotFound, Forbidden))
async def publish_artifact(artifact_id: str, body: Publish, caller: Caller, catalog: CatalogDep) -> ArtifactRead:
    record = await readable_artifact(catalog, caller, artifact_id)
    return await _read(catalog, caller, await change_sharing(catalog, caller, record, body, action="publish",
                                                             target_id=artifact_id, label=record.name))


@router.post("/{artifact_id}/unpublish", responses=problems(NotFound, Forbidden))
async def unpublish_artifact(artifact_id: str, body: Publish, caller: Caller, catalog: CatalogDep) -> ArtifactRead:
    record = await readable_artifact(catalog, caller, artifact_id)
    return await _read(catalog, caller, await change_sharing(catalog, caller, record, body, action="unpublish",
                                                             target_id=artifact_id, label=record.name))


@router.delete("/{artifact_id}", status_code=204, responses=problems(NotFound, Forbidden))
async def delete_artifact(artifact_id: str, caller: Caller, catalog: CatalogDep, objects: ObjectsDep) -> Response:
    """Delete the caller's record; the bytes go when no record of anyone refers to them any more."""
    record = await readable_artifact(catalog, caller, artifact_id)
    require_owner(caller, record, KIND, "delete")
    await catalog.delete_records("artifacts", ArtifactRecord, id=record.id)
    _, others = await catalog.find_records("artifacts", ArtifactRecord, where={"artifact_id": artifact_id}, limit=1)
    if not others:
        await asyncio.to_thread(objects.delete, record.object_key)
    await audit(catalog, caller, "artifact.delete", KIND, artifact_id, record.name)
    return Response(status_code=204)
