"""The ``artifact`` job: hash a completed artifact upload and keep its bytes once per content.

The upload is read once to compute its SHA-256. If the store already holds that content (anyone
uploaded the same bytes), the upload is dropped; otherwise it is copied to ``artifacts/<sha256>``.
The caller's record of the artifact is written last, so a crash in between leaves at worst an
unreferenced object, never a record without bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.errors import Conflict
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


def _copy(objects: ObjectStore, source: str, target: str) -> None:
    with objects.open_read(source) as reader, objects.open_write(target) as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)


async def _store(run: JobRun) -> dict[str, Any]:
    catalog, objects = run.catalog, run.objects
    upload = await catalog.get_upload(run.job.params["upload_id"])
    spec = upload.artifact or {}
    if objects.exists(upload.object_key):
        digest, size = await asyncio.to_thread(_digest, objects, upload.object_key)
        await run.checkpoint(0.5, "store", "hashed")
        key = f"artifacts/{digest}"
        deduplicated = await asyncio.to_thread(objects.exists, key)
        if not deduplicated:
            await asyncio.to_thread(_copy, objects, upload.object_key, key)
        await asyncio.to_thread(objects.delete, upload.object_key)
    else:  # an earlier attempt got this far, then died: its result is in the job's params
        digest, size, deduplicated = run.job.params["sha256"], run.job.params["size"], True
    await catalog.update_job(run.job.id, params={**run.job.params, "sha256": digest, "size": size})
    record = ArtifactRecord(artifact_id=digest, name=spec["name"], media_type=spec["media_type"], size=size,
                            metadata=spec.get("metadata", {}), object_key=f"artifacts/{digest}",
                            benchmarks=spec.get("benchmarks", []), datasets=spec.get("datasets", []),
                            owner=upload.owner)
    with contextlib.suppress(Conflict):  # the owner had uploaded these bytes before: one record is enough
        await catalog.insert_record("artifacts", record, unique=f"{upload.owner}/{digest}")
    return {"artifact_id": digest, "size": size, "deduplicated": deduplicated}
