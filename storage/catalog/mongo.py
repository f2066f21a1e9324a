"""The deployment catalog: MongoDB through PyMongo's async API (``AsyncMongoClient``).

Nothing here needs a multi-document transaction, so a lone server works as well as a replica
set. Versions become visible through one insert guarded by a unique (dataset, number) index; jobs
change by compare-and-swap on a revision counter; uploads change by a status-guarded update.
Indexes and unique constraints are created at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from tuplehub.storage.access import StoredRecord
from tuplehub.storage.blocks import BlockRecord
from tuplehub.storage.catalog.base import NAMESPACES, M, ReadScope, RecordKind, check_fields
from tuplehub.storage.catalog.jobstate import cancel, claim, created, finish, hand_back, update
from tuplehub.storage.catalog.migrations import MIGRATIONS, Migration, pending
from tuplehub.storage.errors import ConfigError, Conflict, NotFound, StoreUnavailable
from tuplehub.storage.filters.prune import Constraint
from tuplehub.storage.models import (
    DatasetRecord,
    DatasetSummary,
    EpisodeRecord,
    JobKind,
    JobRecord,
    JobStatus,
    UploadRecord,
    UploadStatus,
    VersionRecord,
    utcnow,
)

_OPS = {"lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte", "eq": "$eq"}
logger = logging.getLogger("tuplehub.storage")
_CAS_ATTEMPTS = 50
_ID_CHUNK = 1000
_AFTER = True  # pymongo.ReturnDocument.AFTER, without importing the driver at module load
# The migration lock: held while its owner renews it every third of its life, so a process that
# died migrating frees it within a minute; waiters look again every half second for ten minutes.
_LOCK_TTL_S = 60.0
_LOCK_POLL_S = 0.5
_MIGRATION_WAIT_S = 600.0
# The ``meta`` document ``tuplehub restore`` (storage/backup_deployment.py) writes first and removes last.
RESTORE_MARKER = "restore-unfinished"

# collection -> [(keys, options)]
INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    "datasets": [([("name", 1)], {"unique": True}), ([("tags", 1)], {}), ([("benchmark", 1)], {})],
    "versions": [([("dataset_id", 1), ("number", 1)], {"unique": True}), ([("job_id", 1)], {"unique": True})],
    "blocks": [([("segment", 1), ("seq", 1)], {"unique": True})],
    "episodes": [([("segment", 1), ("index", 1)], {"unique": True}), ([("episode_key", 1), ("segment", 1)], {})],
    "uploads": [([("status", 1), ("expires_at", 1)], {})],
    "jobs": [([("owner", 1), ("created_at", -1)], {}), ([("status", 1)], {}),
             ([("dedup_key", 1)], {"unique": True, "sparse": True})],
    "records": [([("unique_key", 1)], {"unique": True, "sparse": True}), ([("kind", 1), ("created_at", 1)], {}),
                ([("kind", 1), ("user_id", 1)], {}), ([("kind", 1), ("group_id", 1)], {}),
                ([("kind", 1), ("benchmark_id", 1)], {}), ([("kind", 1), ("artifact_id", 1)], {}),
                ([("kind", 1), ("dataset_id", 1), ("version", 1)], {})],
}


def _is_duplicate(exc: Exception) -> bool:
    return type(exc).__name__ == "DuplicateKeyError" or getattr(exc, "code", None) == 11000


def _episode_key(episode_id: int | str) -> str:
    return f"i:{episode_id}" if isinstance(episode_id, int) else f"s:{episode_id}"


def _job_doc(job: JobRecord, rev: int) -> dict[str, Any]:
    doc = job.model_dump(exclude={"dedup_key"} if job.dedup_key is None else set())
    return {"_id": job.id, "_rev": rev, **doc}


class MongoCatalog:
    def __init__(self, database: Any, client: Any | None = None) -> None:
        self.db = database
        self._client = client

    @classmethod
    async def open(cls, url: str) -> MongoCatalog:
        """The database at ``url`` as it is: nothing checked, migrated or indexed (restore writes into it)."""
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=10_000)
        return cls(client.get_default_database(default="tuplehub"), client)

    @classmethod
    async def connect(cls, url: str) -> MongoCatalog:
        catalog = await cls.open(url)
        try:
            await catalog.refuse_unfinished_restore()
            await catalog.prepare()
        except BaseException:
            await catalog.aclose()
            raise
        return catalog

    async def refuse_unfinished_restore(self) -> None:
        """A server must not start on half a restore (``tuplehub restore`` marks the catalog while it writes)."""
        marker = await self.db.meta.find_one({"_id": RESTORE_MARKER})
        if marker is not None:
            raise ConfigError(f"MongoDB database {self.db.name!r} holds a restore that did not finish (of "
                              f"{marker.get('source')}, started {marker.get('started_at')})",
                              hint="run the same `tuplehub restore SRC` again to finish it")

    async def prepare(self) -> None:
        """What every start does: migrate (or refuse a newer catalog), then make sure of the indexes."""
        await self.migrate()
        await self.ensure_indexes()

    async def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
        """Bring the database to the code's schema version; the versions this call applied.

        The version lives in ``meta``'s ``schema`` document. Pending migrations run only while
        this process holds ``meta``'s ``migration-lock`` document, taken by one atomic
        ``find_one_and_update`` (free, or past its expiry); replicas starting together wait for
        the holder and then find the version current. Each migration's version is recorded as
        soon as it is done, so a holder that dies leaves only its unfinished one to run again.
        """
        where = f"MongoDB database {self.db.name!r}"
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        deadline = asyncio.get_running_loop().time() + _MIGRATION_WAIT_S
        while True:
            if not pending(await self._schema_version(), where, migrations):
                return []
            if await self._take_lock(owner):
                break
            if asyncio.get_running_loop().time() > deadline:
                holder = await self.db.meta.find_one({"_id": "migration-lock"}) or {}
                raise StoreUnavailable(f"{where}: {holder.get('owner')} has been migrating the catalog for "
                                       f"over {_MIGRATION_WAIT_S:.0f} s")
            await asyncio.sleep(_LOCK_POLL_S)
        renewing = asyncio.create_task(self._renew_lock(owner))
        try:
            applied = []
            for step in pending(await self._schema_version(), where, migrations):
                await step.mongo(self.db)
                await self.db.meta.update_one({"_id": "schema"}, {"$set": {"version": step.version}}, upsert=True)
                applied.append(step.version)
            return applied
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self.db.meta.update_one({"_id": "migration-lock", "owner": owner}, {"$set": {"owner": None}})

    async def _schema_version(self) -> int:
        doc = await self.db.meta.find_one({"_id": "schema"})
        return 0 if doc is None else int(doc["version"])

    async def _take_lock(self, owner: str) -> bool:
        now = utcnow()
        try:
            doc = await self.db.meta.find_one_and_update(
                {"_id": "migration-lock", "$or": [{"owner": None}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": owner, "expires_at": now + timedelta(seconds=_LOCK_TTL_S)}},
                upsert=True, return_document=_AFTER)
        except Exception as exc:
            if _is_duplicate(exc):  # held: the upsert found the document but not free
                return False
            raise
        return doc is not None and doc["owner"] == owner

    async def _renew_lock(self, owner: str) -> None:
        """Keep the lock while migrating; a renewal that fails (a network blip) is tried again at the
        next third of the lock's life, before it expires: a renewer that gave up at the first error
        would let a second replica take the lock and migrate beside this one."""
        while True:
            await asyncio.sleep(_LOCK_TTL_S / 3)
            try:
                await self.db.meta.update_one({"_id": "migration-lock", "owner": owner}, {
                    "$set": {"expires_at": utcnow() + timedelta(seconds=_LOCK_TTL_S)}})
            except Exception as exc:
                logger.warning("could not renew the migration lock (trying again): %s", exc)

    async def ensure_indexes(self) -> None:
        for collection, indexes in INDEXES.items():
            for keys, options in indexes:
                await self.db[collection].create_index(keys, **options)

    # --- datasets -----------------------------------------------------------------------------
    async def create_dataset(self, record: DatasetRecord) -> DatasetRecord:
        try:
            await self.db.datasets.insert_one({"_id": record.id, **record.model_dump()})
        except Exception as exc:
            if _is_duplicate(exc):
                raise Conflict(f"a dataset named {record.name!r} already exists", name=record.name) from exc
            raise
        return record

    async def get_dataset(self, name: str) -> DatasetRecord:
        doc = await self.db.datasets.find_one({"name": name})
        if doc is None:
            raise NotFound(f"no dataset named {name!r}", name=name)
        return DatasetRecord.model_validate(doc)

    async def get_dataset_by_id(self, dataset_id: str) -> DatasetRecord | None:
        doc = await self.db.datasets.find_one({"_id": dataset_id})
        return None if doc is None else DatasetRecord.model_validate(doc)

    async def list_datasets(self, *, name: str | None, tag: str | None, offset: int, limit: int,
                            readable: ReadScope | None = None, owner: str | None = None,
                            benchmark: str | None = None) -> tuple[list[DatasetSummary], int]:
        query: dict[str, Any] = {}
        if name:
            query["name"] = {"$regex": re.escape(name), "$options": "i"}
        if tag:
            query["tags"] = tag
        if owner:
            query["owner"] = owner
        if benchmark:
            query["benchmark"] = benchmark
        if readable is not None:
            query["$or"] = [{"groups": {"$in": sorted(readable.groups)}}]
            if readable.owner is not None:
                query["$or"].append({"owner": readable.owner})
            if readable.public:
                query["$or"].append({"public": True})
        total = await self.db.datasets.count_documents(query)
        docs = await self.db.datasets.find(query).sort("name", 1).skip(offset).limit(limit).to_list(None)
        summaries = []
        for doc in docs:
            summary = DatasetSummary.model_validate(doc)
            latest = await self.db.versions.find({"dataset_id": summary.id}).sort("number", -1).limit(1).to_list(1)
            if latest:
                version = VersionRecord.model_validate(latest[0])
                summary.latest_version = version.number
                summary.episodes, summary.transitions = version.episodes, version.transitions
            summaries.append(summary)
        return summaries, total

    async def update_dataset(self, dataset_id: str, **fields: Any) -> DatasetRecord:
        check_fields(DatasetRecord, fields, query=False)
        values = DatasetRecord.model_construct(**fields).model_dump(include=set(fields))
        doc = await self.db.datasets.find_one_and_update({"_id": dataset_id}, {"$set": values},
                                                         return_document=_AFTER)
        if doc is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        return DatasetRecord.model_validate(doc)

    async def share_dataset(self, dataset_id: str, *, add_groups: Sequence[str] = (),
                            remove_groups: Sequence[str] = (), public: bool | None = None) -> DatasetRecord:
        # One field cannot take $addToSet and $pull in one update; each update is atomic on its own.
        changes: list[dict[str, Any]] = []
        if add_groups:
            changes.append({"$addToSet": {"groups": {"$each": list(add_groups)}}})
        if remove_groups:
            changes.append({"$pull": {"groups": {"$in": list(remove_groups)}}})
        if public is not None:
            changes.append({"$set": {"public": public}})
        for change in changes:
            await self.db.datasets.update_one({"_id": dataset_id}, change)
        doc = await self.db.datasets.find_one({"_id": dataset_id})
        if doc is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        record = DatasetRecord.model_validate(doc)
        record.groups = sorted(record.groups)
        return record

    async def delete_dataset(self, dataset_id: str) -> None:
        # The dataset first: should the second write never happen, its versions are unreachable.
        await self.db.datasets.delete_one({"_id": dataset_id})
        await self.db.versions.delete_many({"dataset_id": dataset_id})

    # --- versions -----------------------------------------------------------------------------
    async def list_versions(self, dataset_id: str) -> list[VersionRecord]:
        docs = await self.db.versions.find({"dataset_id": dataset_id}).sort("number", 1).to_list(None)
        return [VersionRecord.model_validate(doc) for doc in docs]

    async def insert_version(self, version: VersionRecord) -> bool:
        try:
            await self.db.versions.insert_one(version.model_dump())
        except Exception as exc:
            if _is_duplicate(exc):
                return False
            raise
        return True

    async def find_version_by_job(self, job_id: str) -> VersionRecord | None:
        doc = await self.db.versions.find_one({"job_id": job_id})
        return None if doc is None else VersionRecord.model_validate(doc)

    # --- segments -----------------------------------------------------------------------------
    async def put_blocks(self, blocks: Sequence[BlockRecord]) -> None:
        for block in blocks:
            await self.db.blocks.replace_one({"_id": f"{block.segment}/{block.seq}"},
                                             {"_id": f"{block.segment}/{block.seq}", **block.model_dump()},
                                             upsert=True)

    async def list_blocks(self, segment: str) -> list[BlockRecord]:
        docs = await self.db.blocks.find({"segment": segment}, {"data": 0, "tail": 0}).sort("seq", 1).to_list(None)
        return [BlockRecord.model_validate(doc) for doc in docs]

    async def read_blocks(self, segment: str, seqs: Sequence[int]) -> AsyncIterator[BlockRecord]:
        for seq in seqs:
            doc = await self.db.blocks.find_one({"_id": f"{segment}/{seq}"})
            if doc is None:
                raise NotFound(f"block {seq} of segment {segment} is missing")
            yield BlockRecord.model_validate(doc)

    async def put_episodes(self, episodes: Sequence[EpisodeRecord]) -> None:
        for episode in episodes:
            key = f"{episode.segment}/{episode.index}"
            await self.db.episodes.replace_one({"_id": key}, {
                "_id": key, "episode_key": _episode_key(episode.episode_id), **episode.model_dump()}, upsert=True)

    async def list_episodes(self, segment: str, constraints: Sequence[Constraint] = ()) -> list[EpisodeRecord]:
        query: dict[str, Any] = {"segment": segment}
        for constraint in constraints:
            query.setdefault(constraint.column, {})[_OPS[constraint.op]] = constraint.value
        docs = await self.db.episodes.find(query).sort("index", 1).to_list(None)
        return await asyncio.to_thread(lambda: [EpisodeRecord.model_validate(doc) for doc in docs])

    async def find_shared_episode_id(self, segment: str, others: Sequence[str]) -> int | str | None:
        if not others:
            return None
        # Page through the segment by index (a distinct() over it could pass the 16 MB result cap).
        count = await self.db.episodes.count_documents({"segment": segment})
        for start in range(0, count, _ID_CHUNK):
            docs = await self.db.episodes.find({"segment": segment, "index": {"$gte": start, "$lt": start + _ID_CHUNK}},
                                               {"episode_key": 1}).to_list(None)
            doc = await self.db.episodes.find_one({"segment": {"$in": list(others)},
                                                   "episode_key": {"$in": [d["episode_key"] for d in docs]}})
            if doc is not None:
                return doc["episode_id"]
        return None

    async def delete_segment(self, segment: str) -> None:
        await self.db.blocks.delete_many({"segment": segment})
        await self.db.episodes.delete_many({"segment": segment})

    async def list_segments(self) -> set[str]:
        return set(await self.db.blocks.distinct("segment")) | set(await self.db.episodes.distinct("segment"))

    # --- uploads ------------------------------------------------------------------------------
    async def create_upload(self, record: UploadRecord) -> UploadRecord:
        await self.db.uploads.insert_one({"_id": record.id, **record.model_dump()})
        return record

    async def get_upload(self, upload_id: str) -> UploadRecord:
        doc = await self.db.uploads.find_one({"_id": upload_id})
        if doc is None:
            raise NotFound(f"no upload {upload_id!r}", upload=upload_id)
        return UploadRecord.model_validate(doc)

    async def transition_upload(self, upload_id: str, expected: UploadStatus, new: UploadStatus,
                                **fields: Any) -> bool:
        result = await self.db.uploads.update_one({"_id": upload_id, "status": expected.value},
                                                  {"$set": {**fields, "status": new.value}})
        return result.modified_count == 1

    async def list_uploads(self, status: UploadStatus, *, expires_before: datetime) -> list[UploadRecord]:
        docs = await self.db.uploads.find({"status": status.value, "expires_at": {"$lt": expires_before}}).to_list(None)
        return [UploadRecord.model_validate(doc) for doc in docs]

    async def list_open_uploads(self, dataset_id: str, owner: str, *, expires_after: datetime) -> list[UploadRecord]:
        docs = await self.db.uploads.find({"status": UploadStatus.open.value, "dataset_id": dataset_id,
                                           "owner": owner, "expires_at": {"$gt": expires_after}}
                                          ).sort("created_at", -1).to_list(None)
        return [UploadRecord.model_validate(doc) for doc in docs]

    # --- jobs ---------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> JobRecord:
        record = created(record)
        try:
            await self.db.jobs.insert_one(_job_doc(record, 0))
        except Exception as exc:
            if not _is_duplicate(exc):
                raise
            query = [{"_id": record.id}] + ([{"dedup_key": record.dedup_key}] if record.dedup_key else [])
            existing = await self.db.jobs.find_one({"$or": query})
            if existing is None:  # the holder finished unsuccessfully in between; try once more
                await self.db.jobs.insert_one(_job_doc(record, 0))
                return record
            return JobRecord.model_validate(existing)
        return record

    async def get_job(self, job_id: str) -> JobRecord:
        doc = await self.db.jobs.find_one({"_id": job_id})
        if doc is None:
            raise NotFound(f"no job {job_id!r}", job=job_id)
        return JobRecord.model_validate(doc)

    async def list_jobs(self, *, owner: str | None, status: JobStatus | None, kind: JobKind | None,
                        offset: int, limit: int) -> tuple[list[JobRecord], int]:
        query = {k: v.value if hasattr(v, "value") else v
                 for k, v in (("owner", owner), ("status", status), ("kind", kind)) if v is not None}
        total = await self.db.jobs.count_documents(query)
        docs = await (self.db.jobs.find(query).sort([("created_at", -1), ("_id", 1)]).skip(offset).limit(limit)
                      .to_list(None))
        return [JobRecord.model_validate(doc) for doc in docs], total

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRecord]:
        docs = await self.db.jobs.find({"status": {"$in": [s.value for s in statuses]}}).sort("created_at", 1) \
            .to_list(None)
        return [JobRecord.model_validate(doc) for doc in docs]

    async def _modify_job(self, job_id: str, change: Callable[[JobRecord], JobRecord | None]) -> JobRecord | None:
        """Compare-and-swap on ``_rev``: concurrent writers retry instead of overwriting each other."""
        for _ in range(_CAS_ATTEMPTS):
            doc = await self.db.jobs.find_one({"_id": job_id})
            if doc is None:
                raise NotFound(f"no job {job_id!r}", job=job_id)
            updated = change(JobRecord.model_validate(doc))
            if updated is None:
                return None
            updated.updated_at = utcnow()
            result = await self.db.jobs.replace_one({"_id": job_id, "_rev": doc["_rev"]},
                                                    _job_doc(updated, doc["_rev"] + 1))
            if result.matched_count == 1:
                return updated
        raise StoreUnavailable(f"job {job_id} is changing too fast to update")

    async def claim_job(self, job_id: str, *, worker: str) -> JobRecord | None:
        return await self._modify_job(job_id, lambda job: claim(job, worker=worker))

    async def hand_back_job(self, job_id: str, *, attempt: int) -> bool:
        return await self._modify_job(job_id, lambda job: hand_back(job, attempt=attempt)) is not None

    async def update_job(self, job_id: str, **fields: Any) -> None:
        await self._modify_job(job_id, lambda job: update(job, fields))

    async def finish_job(self, job_id: str, status: JobStatus, *, result: dict[str, Any] | None = None,
                         error: dict[str, Any] | None = None) -> bool:
        return await self._modify_job(job_id, lambda job: finish(job, status, result, error)) is not None

    async def request_cancel(self, job_id: str) -> JobRecord:
        await self._modify_job(job_id, cancel)
        return await self.get_job(job_id)

    # --- access records -------------------------------------------------------------------------
    async def insert_record(self, kind: RecordKind, record: StoredRecord, *, unique: str | None = None) -> None:
        doc = {"_id": f"{kind}/{record.id}", "kind": kind, **record.model_dump()}
        if unique is not None:
            doc["unique_key"] = f"{NAMESPACES[kind]}/{unique}"
        try:
            await self.db.records.insert_one(doc)
        except Exception as exc:
            if _is_duplicate(exc):
                raise Conflict(f"{unique or record.id!r} is taken", name=unique) from exc
            raise

    @staticmethod
    def _query(kind: RecordKind, model: type[BaseModel], equals: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(model, equals)
        query: dict[str, Any] = {"kind": kind}
        for field, value in equals.items():
            query[field] = {"$in": list(value)} if isinstance(value, list | tuple | set | frozenset) else value
        return query

    async def get_record(self, kind: RecordKind, model: type[M], **equals: Any) -> M:
        doc = await self.db.records.find_one(self._query(kind, model, equals))
        if doc is None:
            raise NotFound(f"no {kind[:-1].replace('_', ' ')} matches", kind=kind)
        return model.model_validate(doc)

    async def find_records(self, kind: RecordKind, model: type[M], *, where: Mapping[str, Any] | None = None,
                           since: datetime | None = None, until: datetime | None = None,
                           newest_first: bool = False, offset: int = 0,
                           limit: int | None = None) -> tuple[list[M], int]:
        query = self._query(kind, model, where or {})
        window = {op: bound for op, bound in (("$gte", since), ("$lt", until)) if bound is not None}
        if window:
            query["created_at"] = window
        total = await self.db.records.count_documents(query)
        order = -1 if newest_first else 1
        cursor = self.db.records.find(query).sort([("created_at", order), ("_id", 1)]).skip(offset)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [model.model_validate(doc) for doc in await cursor.to_list(None)], total

    async def update_record(self, kind: RecordKind, model: type[M], record_id: str, *,
                            expected: Mapping[str, Any] | None = None, **changes: Any) -> M | None:
        check_fields(model, changes, query=False)
        query = {**self._query(kind, model, expected or {}), "_id": f"{kind}/{record_id}"}
        fields = model.model_construct(**changes).model_dump(include=set(changes))
        doc = await self.db.records.find_one_and_update(query, {"$set": fields}, return_document=_AFTER)
        return None if doc is None else model.model_validate(doc)

    async def delete_records(self, kind: RecordKind, model: type[BaseModel], **equals: Any) -> int:
        result = await self.db.records.delete_many(self._query(kind, model, equals))
        return result.deleted_count

    # --- lifecycle ----------------------------------------------------------------------------
    async def ping(self) -> None:
        try:
            await self.db.command("ping")
        except Exception as exc:
            raise StoreUnavailable(f"MongoDB catalog: {exc}") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
