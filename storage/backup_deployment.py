"""Backups of a deployment (a MongoDB catalog and an object store, S3 or a folder) and their restore.

The folder is the one :mod:`tuplehub.storage.backup` builds for both kinds (staging folder renamed
at the end, 0700/0600, ``manifest.json`` last with every file's size and SHA-256), holding
``catalog/<collection>.jsonl`` (one document a line, MongoDB Extended JSON in canonical mode, so
ObjectIds, dates, binaries and int/long/double come back as they were) and ``objects/<key>``
(copied through :class:`~tuplehub.storage.objects.ObjectStore`, chunk by chunk). The MongoDB
catalog keeps tuple block payloads in its ``blocks`` collection (each block's Arrow bytes are a
field of its document), so they travel in ``catalog/blocks.jsonl``; the store holds artifacts,
export results and uploads in flight. No secret is in the catalog or the store: the deployment's
``.env`` (the signing key, the admin's, database's and store's credentials) is kept beside it.

Ordering, and why it is consistent without a snapshot. A lone MongoDB server offers no read
across collections at one instant, so the backup relies on how tuplehub writes: what a record
refers to is written before the record and deleted after it. An ingest writes its blocks and
episodes before the version that lists their segment, and the sweeper deletes a segment only once
no version lists it; artifact bytes are stored before their record and deleted after it; an
ingest deletes its upload only after committing its version. So a collection dumped *before*
those it refers to finds every referent still there, unless the referrer was deleted meanwhile.

1. Objects, first pass: every object in the store. An upload that a running ingest still needs
   is there, since the ingest deletes it only after committing.
2. The catalog, one collection after another, referrers first (:data:`DUMP_ORDER`): ``meta`` (the
   schema version), ``jobs``, ``uploads``, ``datasets``, ``versions``, ``episodes``, ``blocks``,
   ``records``, then any other. MongoDB writes a document atomically and each is read whole. A job
   dumped as running whose version commits before ``versions`` is dumped runs again on the
   restored server and finds that version by its job id (ingest is idempotent); one that commits
   later leaves only an unreferenced segment, which the restored sweeper deletes.
3. Objects, second pass: objects new or changed (size, ETag or mtime) since the first pass.
4. The check: every segment of every dumped version has all its episodes and blocks in the dump
   (counts and rows as the version records them), every artifact record, finished export and
   upload a job still needs has its bytes in the backup, and the schema version did not change
   meanwhile. A miss means that a deletion (or an upgrade) raced the dump; steps 2 to 4 run again,
   :data:`~tuplehub.storage.backup.SNAPSHOT_TRIES` times at most. A version whose dataset is not in
   the dump is not a miss: the source has such versions too (a dataset is deleted before its
   versions, and a crash between the two leaves them), unreachable and harmless, and so is one
   committed for a dataset created after ``datasets`` was dumped.

Restore writes only into an empty database and store (a ``meta`` document with the schema version
alone counts as empty), and only after every file has matched the manifest. It marks the catalog
first (:data:`~tuplehub.storage.catalog.mongo.RESTORE_MARKER`; servers refuse to start while it
is there), writes the objects, then the collections, migrates and indexes, and removes the mark:
a restore that stopped midway is finished by running it again, which starts over.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from tuplehub.storage.backup import (
    DOCS,
    DUMPS,
    OBJECTS,
    SNAPSHOT_TRIES,
    BackupDamaged,
    Copied,
    copy_stream,
    hashed,
    private_file,
)
from tuplehub.storage.catalog.migrations import pending
from tuplehub.storage.catalog.mongo import RESTORE_MARKER, MongoCatalog
from tuplehub.storage.errors import ConfigError, Conflict, NotFound, StoreUnavailable, TuplehubError
from tuplehub.storage.models import JobStatus
from tuplehub.storage.objects import ObjectStore, open_object_store
from tuplehub.storage.restore import check_files
from tuplehub.storage.settings import Settings

# Referrers before what they refer to (module docstring, step 2); collections not named here go after, by name.
DUMP_ORDER = ("meta", "jobs", "uploads", "datasets", "versions", "episodes", "blocks", "records")
NOT_DUMPED = {"meta": ["migration-lock", RESTORE_MARKER]}  # documents of one process's life, by _id
JSON = CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)
INSERT_DOCS, INSERT_BYTES = 1000, 8 * 2**20  # one insert_many at most (a block document is up to a few MB)
# The manifest's counts: documents of these collections, and records of these kinds.
COUNTED = ("jobs", "uploads", "datasets", "versions", "episodes", "blocks", "users", "groups", "artifacts",
           "api_tokens")


class RestoreUnfinished(StoreUnavailable):
    """A deployment restore stopped after it began writing; running it again finishes it."""

    code = "restore-unfinished"


def _shown(url: str) -> str:
    """A catalog or store URL without the credentials it may carry."""
    scheme, _, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    return f"{scheme}://{location.rpartition('@')[2]}{slash}{path.split('?')[0]}"


def _describe(settings: Settings) -> str:
    return (f"catalog {_shown(settings.resolved_catalog_url())}, "
            f"objects {_shown(settings.resolved_objects_url())}")


async def _open(settings: Settings, *, restoring: bool = False) -> tuple[MongoCatalog, ObjectStore]:
    """The catalog as it is (no migration: a backup reads, a restore writes into it) and the store, both answering.

    A restore runs before a fresh stack's first start, so the bucket the API would make at that start
    may not exist yet: the restore makes it (as the API does, on any S3)."""
    store = open_object_store(settings.resolved_objects_url(), **settings.object_store_options())
    try:
        if restoring:
            await asyncio.to_thread(store.ensure_bucket)
        await asyncio.to_thread(store.ping)
    except StoreUnavailable as exc:
        raise StoreUnavailable(exc.detail, hint="check TUPLEHUB_OBJECTS_URL and TUPLEHUB_S3_*") from exc
    catalog = await MongoCatalog.open(settings.resolved_catalog_url())
    try:
        await catalog.ping()
    except BaseException:
        await catalog.aclose()
        raise
    return catalog, store


# --- backup -------------------------------------------------------------------------------------------

@dataclass
class References:
    """What the dumped documents refer to, gathered as they pass, and what the dump holds (step 4)."""

    schema: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    wanted_segments: dict[str, tuple[int, int]] = field(default_factory=dict)  # -> episodes, rows
    committed_jobs: set[str] = field(default_factory=set)
    unfinished_jobs: set[str] = field(default_factory=set)
    episodes: Counter[str] = field(default_factory=Counter)
    blocks: dict[str, list[int]] = field(default_factory=dict)  # segment -> [blocks, rows, highest seq]
    objects: dict[str, str] = field(default_factory=dict)  # key -> what needs it
    waiting_uploads: list[tuple[str, str, str]] = field(default_factory=list)  # upload id, job id, key
    open_multipart: int = 0

    def add(self, collection: str, doc: dict[str, Any]) -> None:
        self.counts[collection] += 1
        if collection == "meta" and doc.get("_id") == "schema":
            self.schema = int(doc["version"])
        elif collection == "jobs":
            if not JobStatus(doc["status"]).finished:
                self.unfinished_jobs.add(doc["_id"])
            elif doc.get("status") == "succeeded" and isinstance((doc.get("result") or {}).get("object_key"), str):
                self.objects[doc["result"]["object_key"]] = f"the result of job {doc['_id']}"
        elif collection == "uploads":
            if doc.get("status") == "completed" and doc.get("job_id"):
                self.waiting_uploads.append((doc["_id"], doc["job_id"], doc["object_key"]))
            elif doc.get("status") == "open" and doc.get("multipart_id"):
                self.open_multipart += 1
        elif collection == "versions":
            self.committed_jobs.add(doc["job_id"])
            for segment in doc["segments"]:
                self.wanted_segments[segment["id"]] = (segment["episodes"], segment["transitions"])
        elif collection == "episodes":
            self.episodes[doc["segment"]] += 1
        elif collection == "blocks":
            held = self.blocks.setdefault(doc["segment"], [0, 0, -1])
            held[0], held[1], held[2] = held[0] + 1, held[1] + doc["rows"], max(held[2], doc["seq"])
        elif collection == "records":
            self.counts[doc.get("kind", "")] += 1
            if doc.get("kind") == "artifacts":
                self.objects[doc["object_key"]] = f"artifact {doc.get('artifact_id')}"

    def missing(self, copied: Copied) -> list[str]:
        """What the dump refers to but does not hold (step 4); empty when the backup is consistent."""
        misses = []
        for segment, (episodes, rows) in self.wanted_segments.items():
            blocks, block_rows, highest = self.blocks.get(segment, [0, 0, -1])
            if self.episodes[segment] != episodes or block_rows != rows or blocks != highest + 1:
                misses.append(f"segment {segment} ({self.episodes[segment]} of {episodes} episodes, "
                              f"{block_rows} of {rows} rows)")
        wanted = dict(self.objects)
        for upload, job, key in self.waiting_uploads:
            if job in self.unfinished_jobs and job not in self.committed_jobs:
                wanted[key] = f"upload {upload}, which job {job} still ingests"
        misses += [f"object {key} ({why})" for key, why in sorted(wanted.items())
                   if f"{OBJECTS}/{key}" not in copied.files]
        return misses


def _copy_objects(store: ObjectStore, out: Path, copied: Copied) -> None:
    """Objects not copied yet, or changed since; objects deleted meanwhile are skipped (step 4 sees a needed one)."""
    for key, (size, tag) in sorted(store.listing().items()):
        relative = f"{OBJECTS}/{key}"
        if copied.seen.get(relative) == (size, tag):
            continue
        try:
            with store.open_read(key) as reader:
                copied.files[relative] = copy_stream(reader, out / relative)
        except (NotFound, FileNotFoundError):
            continue
        copied.seen[relative] = (size, tag)


async def _schema_version(db: Any) -> int:
    doc = await db.meta.find_one({"_id": "schema"})
    return 0 if doc is None else int(doc["version"])


async def _dump(db: Any, out: Path, copied: Copied) -> tuple[list[str], References]:
    """Step 2: every collection to ``catalog/<name>.jsonl``, in :data:`DUMP_ORDER`; the names and what they refer to."""
    present = {name for name in await db.list_collection_names() if not name.startswith("system.")}
    names = [*DUMP_ORDER, *sorted(present - set(DUMP_ORDER))]
    references = References()
    for name in names:
        relative = f"{DUMPS}/{name}.jsonl"
        hasher, size = hashlib.sha256(), 0
        with private_file(out / relative) as handle:
            query = {"_id": {"$nin": NOT_DUMPED[name]}} if name in NOT_DUMPED else {}
            async for doc in db[name].find(query).sort("_id", 1):
                line = json_util.dumps(doc, json_options=JSON).encode() + b"\n"
                handle.write(line)
                hasher.update(line)
                size += len(line)
                references.add(name, doc)
            handle.flush()
            os.fsync(handle.fileno())
        copied.files[relative] = (size, hasher.hexdigest())
    return names, references


async def _backup(settings: Settings, out: Path, copied: Copied) -> dict[str, Any]:
    catalog, store = await _open(settings)
    try:
        await asyncio.to_thread(_copy_objects, store, out, copied)
        for _ in range(SNAPSHOT_TRIES):
            names, references = await _dump(catalog.db, out, copied)
            await asyncio.to_thread(_copy_objects, store, out, copied)
            misses = references.missing(copied)
            if (now := await _schema_version(catalog.db)) != references.schema:
                misses.append(f"schema version {references.schema} (it is {now} now: an upgrade ran meanwhile)")
            if not misses:
                break
        else:
            raise ConfigError(f"the catalog refers to data that is missing, in {SNAPSHOT_TRIES} dumps in a row: "
                              f"{'; '.join(misses[:3])}{' …' if len(misses) > 3 else ''}",
                              hint="if nothing is being deleted or upgraded now, the catalog is damaged; "
                                   "otherwise back up again")
    finally:
        await catalog.aclose()
    notes = ["this backup holds no secret: keep the deployment's .env (TUPLEHUB_JWT_SECRET, which signs every "
             "session, and the admin, database and store credentials) beside it, mode 0600"]
    if references.open_multipart:
        notes.append(f"{references.open_multipart} upload session(s) were receiving parts, which the object store "
                     "keeps in multipart uploads a backup cannot copy: a restore marks them expired, and their "
                     "clients upload again")
    counts = {name: references.counts[name] for name in COUNTED}
    return {"source": _describe(settings), "schema_version": references.schema, "collections": names,
            "counts": counts, "notes": notes}


def deployment_backup(settings: Settings, out: Path, copied: Copied) -> dict[str, Any]:
    """Steps 1 to 4 of the module docstring into the staging folder ``out``; the manifest's own fields."""
    return asyncio.run(_backup(settings, out, copied))


# --- restore ------------------------------------------------------------------------------------------

async def _contents(db: Any) -> dict[str, int]:
    """What the database holds, by collection (records by kind), less ``meta``'s bookkeeping."""
    held: dict[str, int] = {}
    for name in sorted(await db.list_collection_names()):
        if name.startswith("system.") or name == "meta":
            continue
        if name == "records":
            for kind in sorted(await db.records.distinct("kind")):
                held[f"{kind} (records)"] = await db.records.count_documents({"kind": kind})
        elif count := await db[name].count_documents({}):
            held[name] = count
    return held


async def _refuse_not_empty(db: Any, store: ObjectStore, settings: Settings, manifest: dict[str, Any],
                            manifest_sha: str) -> bool:
    """Refuse a target that holds anything; True if what it holds is an unfinished restore of this backup."""
    marker = await db.meta.find_one({"_id": RESTORE_MARKER})
    objects = await asyncio.to_thread(store.listing)
    if marker is not None:
        if marker.get("manifest_sha256") != manifest_sha:
            raise Conflict(f"{_describe(settings)} holds an unfinished restore of another backup "
                           f"({marker.get('source')})", hint="finish that one by running its restore again, or empty "
                                                             "the database and the store before restoring this one")
        if others := sorted(set(objects) - set(_objects_of(manifest))):
            raise Conflict(f"the object store {_shown(settings.resolved_objects_url())} holds {len(others)} objects "
                           f"this backup does not (e.g. {others[0]}): not the store the unfinished restore wrote to",
                           hint="give the settings of that restore (TUPLEHUB_OBJECTS_URL) and run it again")
        return True
    held = await _contents(db)
    if held:
        listed = ", ".join(f"{count} {name}" for name, count in held.items())
        raise Conflict(f"the MongoDB database {db.name!r} is not empty ({listed}): a restore never writes over data",
                       hint="restore into a new, empty database and store, before any server has started on them "
                            f"(a first start creates the admin), see {DOCS}")
    if objects:
        raise Conflict(f"the object store {_shown(settings.resolved_objects_url())} is not empty ({len(objects)} "
                       f"objects, e.g. {min(objects)}): a restore never writes over data",
                       hint=f"restore into a new, empty bucket or prefix, see {DOCS}")
    return False


def _objects_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The objects of a backup: key -> its manifest entry."""
    return {entry["path"][len(OBJECTS) + 1:]: entry for entry in manifest["files"]
            if entry["path"].startswith(f"{OBJECTS}/")}


def _put_objects(store: ObjectStore, source: Path, manifest: dict[str, Any]) -> None:
    """Every object of the backup into the store, streamed, checked against the manifest again as it is read."""
    for key, entry in _objects_of(manifest).items():
        with (source / entry["path"]).open("rb") as reader, store.open_write(key) as writer:
            measured = hashed(reader, writer)
        if measured != (entry["size"], entry["sha256"]):
            raise BackupDamaged(f"{source / entry['path']} changed while it was restored")


async def _load(db: Any, name: str, path: Path) -> int:
    """One collection's dump into the database, in batches; the upload sessions it marked expired."""
    expired, batch, size = 0, [], 0
    collection = db[name]
    await collection.delete_many({"_id": {"$ne": RESTORE_MARKER}})  # a restore run again starts over
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                doc = json_util.loads(line, json_options=JSON)
            except (ValueError, TypeError) as exc:
                raise BackupDamaged(f"{path}, line {number}, is not a MongoDB document: {exc}") from exc
            if name in NOT_DUMPED and doc.get("_id") in NOT_DUMPED[name]:
                continue
            if name == "uploads" and doc.get("status") == "open" and doc.get("multipart_id"):
                doc["status"] = "expired"  # its parts were in the old store's multipart upload (see the notes)
                expired += 1
            batch.append(doc)
            size += len(line)
            if len(batch) >= INSERT_DOCS or size >= INSERT_BYTES:
                await collection.insert_many(batch, ordered=True)
                batch, size = [], 0
    if batch:
        await collection.insert_many(batch, ordered=True)
    return expired


async def _restore(settings: Settings, source: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    schema = manifest.get("schema_version")
    if not isinstance(schema, int):
        raise BackupDamaged(f"{source}'s manifest records no schema version: the backup is damaged")
    pending(schema, f"backed up in {source}")  # a newer catalog than this code knows is refused here
    manifest_sha = hashlib.sha256((source / "manifest.json").read_bytes()).hexdigest()
    catalog, store = await _open(settings, restoring=True)
    try:
        again = await _refuse_not_empty(catalog.db, store, settings, manifest, manifest_sha)
        total = await asyncio.to_thread(check_files, source, manifest)  # nothing is written from a damaged backup
        if not again:
            await catalog.db.meta.insert_one({"_id": RESTORE_MARKER, "source": str(source),
                                              "manifest_sha256": manifest_sha,
                                              "started_at": datetime.now(UTC).isoformat()})
        try:
            await asyncio.to_thread(_put_objects, store, source, manifest)
            expired = 0
            for name in manifest["collections"]:
                expired += await _load(catalog.db, name, source / DUMPS / f"{name}.jsonl")
            await catalog.prepare()  # migrations from the backup's schema version, and the indexes
            await catalog.db.meta.delete_one({"_id": RESTORE_MARKER})
        except Exception as exc:
            detail = exc.detail if isinstance(exc, TuplehubError) else f"{type(exc).__name__}: {exc}"
            raise RestoreUnfinished(f"the restore into {_describe(settings)} stopped midway ({detail}); servers "
                                    "refuse to start on what it wrote", hint="fix the cause, then run the same "
                                    "`tuplehub restore` again: it starts over") from exc
    finally:
        await catalog.aclose()
    notes = [f"{expired} upload session(s) that were receiving parts are marked expired: upload them again"] \
        if expired else []
    return {"restored": True, "path": _describe(settings), "bytes": total, "again": again, "expired_uploads": expired,
            "notes": [*manifest.get("notes", []), *notes]}


def deployment_restore(settings: Settings, source: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Restore the checked ``manifest``'s backup ``source`` into the empty catalog and store ``settings`` name."""
    return asyncio.run(_restore(settings, source, manifest))
