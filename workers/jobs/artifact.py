"""The ``artifact`` job: hash a completed artifact upload and keep its bytes once per content.

The upload is read once to compute its SHA-256. If the store already holds that content whole
(anyone uploaded the same bytes), the upload is dropped; otherwise it is moved to
``artifacts/<sha256>`` in one step, so that key never holds a partial file. What the hash was is
saved on the job before the upload is deleted, so a retry after a crash picks up from there. The
caller's record is written last: a crash in between leaves at worst an unreferenced object, never
a record without bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.errors import Conflict, NotFound
from tuplehub.storage.objects import ObjectStore
from tuplehub.workers.context import JobRun, WorkerContext, run_job

CHUNK = 8 * 2**20


async def artifact(ctx: WorkerContext, job_id: str) -> None:
    await run_job(ctx, job_id, _store, timeout_s=ctx["settings"].ingest_timeout_s)


def _digest(objects: ObjectStore, key: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with objects.open_read(key) as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _stored_whole(objects: ObjectStore, key: str, size: int) -> bool:
    return objects.exists(key) and objects.size(key) == size


async def _store(run: JobRun) -> dict[str, Any]:
    catalog, objects = run.catalog, run.objects
    upload = await catalog.get_upload(run.job.params["upload_id"])
    spec = upload.artifact or {}
    digest, size = run.job.params.get("sha256"), run.job.params.get("size")
    if digest is None:
        if not await asyncio.to_thread(objects.exists, upload.object_key):
            raise NotFound(f"the bytes of upload {upload.id} are gone (the session expired?)")
        digest, size = await asyncio.to_thread(_digest, objects, upload.object_key)
        await catalog.update_job(run.job.id, params={**run.job.params, "sha256": digest, "size": size})
        await run.checkpoint(0.5, "store", "hashed")
    assert size is not None  # recorded together with the digest
    key = f"artifacts/{digest}"
    if await asyncio.to_thread(objects.exists, upload.object_key):
        if not await asyncio.to_thread(_stored_whole, objects, key, size):
            await asyncio.to_thread(objects.move, upload.object_key, key)
        else:
            await asyncio.to_thread(objects.delete, upload.object_key)
    record = ArtifactRecord(artifact_id=digest, name=spec["name"], media_type=spec["media_type"], size=size,
                            metadata=spec.get("metadata", {}), object_key=key,
                            benchmarks=spec.get("benchmarks", []), datasets=spec.get("datasets", []),
                            owner=upload.owner)
    try:
        await catalog.insert_record("artifacts", record, unique=f"{upload.owner}/{digest}")
    except Conflict:  # the owner had these bytes already: the new name, metadata and links win
        existing, _ = await catalog.find_records("artifacts", ArtifactRecord,
                                                 where={"artifact_id": digest, "owner": upload.owner})
        await catalog.update_record("artifacts", ArtifactRecord, existing[0].id, name=record.name,
                                    media_type=record.media_type, metadata=record.metadata,
                                    benchmarks=record.benchmarks, datasets=record.datasets)
    return {"artifact_id": digest, "size": size}
