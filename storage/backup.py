"""Backups, taken safely while the servers run: the folder format, and the embedded default's backup.

Both kinds of backup (``kind`` in the manifest) share one folder format, built here: a staging
folder renamed into place at the end (:func:`staging_folder`, :func:`put_in_place`), private modes
(0700 folders, 0600 files), every file listed in ``manifest.json`` with its size and SHA-256,
written last (:func:`write_manifest`). A *deployment* (MongoDB catalog, S3 store) is backed up by
:mod:`tuplehub.storage.backup_deployment`; this module backs up the *embedded* default.

An embedded backup is a folder laid out like a data folder (``catalog.db``, ``catalog.db.blocks/``,
``objects/``, ``jwt-secret.json``) plus ``config/embedded-admin.json`` (the local admin's password,
kept outside the data folder) and ``manifest.json``, which lists every file with its size and
SHA-256 and is written last. The folder is built under a temporary name beside ``DEST`` and
renamed when complete, so a folder called ``DEST`` is never half a backup (an existing empty
``DEST``, perhaps a mount point, is built inside and filled manifest last: see :func:`staging_folder`).

Ordering, and why it is consistent:

1. Objects, first pass: every file under the object folder. Going first keeps the upload of an
   ingest that is running: the ingest deletes it only after committing its version.
2. The catalog: one SQLite online backup (``Connection.backup``, all pages in one step, a single
   read transaction), so it is the catalog of one instant; writers are not blocked (WAL).
3. Block payloads of the snapshot's block rows. Ingest writes and fsyncs a payload before its row
   commits, and deletion removes rows before payloads; so a payload missing here was deleted after
   the snapshot, and the snapshot is retaken (``SNAPSHOT_TRIES`` times at most).
4. Objects, second pass: files new or changed since the first, i.e. what was written before the
   snapshot but after the first pass. Objects written after the snapshot are carried too; the
   restored catalog does not refer to them.
5. Every artifact record of the snapshot must have its bytes; a record is deleted before its bytes,
   so a miss means a deletion after the snapshot, and the snapshot is retaken.

Files that vanish while they are copied (an export discarded, an upload aborted) are skipped;
what the snapshot refers to is checked by steps 3 and 5.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import unquote, urlparse

from tuplehub.storage.catalog.sqlite import block_dir_of, block_file
from tuplehub.storage.errors import ConfigError, Conflict, TuplehubError
from tuplehub.storage.paths import embedded_credentials_file, read_json, write_private
from tuplehub.storage.settings import Settings

FORMAT = "tuplehub-backup"
FORMAT_VERSION = 2  # 2 added ``kind`` (1 is an embedded backup) and deployment backups
EMBEDDED, DEPLOYMENT = "embedded", "deployment"
MANIFEST = "manifest.json"
CATALOG = "catalog.db"
BLOCKS = CATALOG + ".blocks"
OBJECTS = "objects"
DUMPS = "catalog"  # a deployment backup's collection dumps, ``catalog/<collection>.jsonl``
SECRETS = ("jwt-secret.json",)  # what the data folder holds besides the catalog and objects that a server needs
ADMIN = "config/embedded-admin.json"
SNAPSHOT_TRIES = 3  # a retake is needed only when a deletion commits during the copy; three in a row is damage
CHUNK = 2**20
DOCS = "docs/deployment.md (section 'Backup and restore')"


class BackupDamaged(TuplehubError):
    """A backup folder that is partial, corrupt or of an unknown format; nothing was restored from it."""

    code = "backup-damaged"


@dataclass
class Embedded:
    """Where the embedded default keeps its parts."""

    data_dir: Path
    catalog: Path
    objects: Path

    @property
    def blocks(self) -> Path:
        return block_dir_of(self.catalog)


def backup_kind(settings: Settings) -> str:
    """The kind of backup ``settings`` take and restore into: :data:`EMBEDDED` (an SQLite catalog and a
    local object folder) or :data:`DEPLOYMENT` (a MongoDB catalog, with any object store)."""
    catalog = urlparse(settings.resolved_catalog_url()).scheme
    objects = urlparse(settings.resolved_objects_url()).scheme
    if catalog == "sqlite" and objects == "file":
        return EMBEDDED
    if catalog in ("mongodb", "mongodb+srv"):
        return DEPLOYMENT
    raise ConfigError(f"tuplehub backup and restore handle the embedded default (an SQLite catalog and a local "
                      f"object folder) and a deployment (a MongoDB catalog); these settings name a {catalog} "
                      f"catalog with the object store {settings.resolved_objects_url().split('?')[0]}",
                      hint=f"see {DOCS}")


def embedded_parts(settings: Settings) -> Embedded:
    """The catalog file and object folder of the embedded default ``settings`` name."""
    catalog, objects = urlparse(settings.resolved_catalog_url()), urlparse(settings.resolved_objects_url())
    return Embedded(settings.data_dir, Path(unquote(catalog.netloc + catalog.path)),
                    Path(unquote(objects.netloc + objects.path)))


@dataclass
class Copied:
    """What a backup holds so far: relative path -> (size, sha256), and each object's (size, change tag)
    as the source had it when copied (an mtime, an ETag), so a later pass copies only what changed."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    seen: dict[str, tuple[int, int | str]] = field(default_factory=dict)


def copy_file(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to a new private file ``target``; its size and the SHA-256 of the bytes written."""
    with source.open("rb") as reader:
        return copy_stream(reader, target)


def copy_stream(reader: IO[bytes], target: Path) -> tuple[int, str]:
    """Write what ``reader`` holds to a new private file ``target``, chunk by chunk, fsynced; size and SHA-256."""
    with private_file(target) as writer:
        measured = hashed(reader, writer)
        writer.flush()
        os.fsync(writer.fileno())
    return measured


def hashed(reader: IO[bytes], writer: IO[bytes] | None = None) -> tuple[int, str]:
    """Read ``reader`` to its end (writing each chunk to ``writer``, if given); the size and SHA-256 read."""
    hasher, size = hashlib.sha256(), 0
    while chunk := reader.read(CHUNK):
        hasher.update(chunk)
        if writer is not None:
            writer.write(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()


def private_file(path: Path) -> BinaryIO:
    """A new 0600 file at ``path`` (its folders made 0700) to write a backup's file into."""
    _private_folders(path.parent)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _private_folders(folder: Path) -> None:
    """``folder`` and any missing folder above it, each 0700 (``mkdir(parents=True)`` gives parents the umask's)."""
    if not folder.is_dir():
        _private_folders(folder.parent)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def _regular_files(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder``, links not followed."""
    for root, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            path = Path(root, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path


def _copy_objects(parts: Embedded, out: Path, copied: Copied) -> None:
    """Object files not copied yet, or changed since; files that vanish meanwhile are skipped."""
    for path in _regular_files(parts.objects):
        relative = f"{OBJECTS}/{path.relative_to(parts.objects).as_posix()}"
        try:
            info = path.stat()
            if copied.seen.get(relative) == (info.st_size, info.st_mtime_ns):
                continue
            copied.files[relative] = copy_file(path, out / relative)
        except FileNotFoundError:
            continue
        copied.seen[relative] = (info.st_size, info.st_mtime_ns)


def _snapshot(catalog: Path, target: Path) -> None:
    """One consistent copy of the live catalog, as a self-contained file (no WAL beside it)."""
    if not catalog.is_file():
        raise ConfigError(f"there is no catalog at {catalog}: nothing to back up",
                          hint="check --data-dir (or TUPLEHUB_DATA_DIR); `tuplehub serve` creates the catalog")
    target.unlink(missing_ok=True)
    source = sqlite3.connect(catalog, timeout=30)
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)  # pages=-1: every page under one read transaction
            destination.execute("PRAGMA journal_mode = DELETE")
        finally:
            destination.close()
    finally:
        source.close()
    os.chmod(target, 0o600)


def _references(snapshot: Path) -> tuple[list[tuple[str, int]], list[str], dict[str, int]]:
    """The snapshot's block rows, artifact object keys and record counts (reads storage/catalog/sqlite.py's schema)."""
    with contextlib.closing(sqlite3.connect(snapshot.as_uri() + "?mode=ro", uri=True)) as conn:
        blocks = conn.execute("SELECT segment, seq FROM blocks ORDER BY segment, seq").fetchall()
        keys = [key for (key,) in conn.execute(
            "SELECT json_extract(doc, '$.object_key') FROM records WHERE kind = 'artifacts'")]
        counts = {"datasets": conn.execute("SELECT count(*) FROM datasets").fetchone()[0],
                  "versions": conn.execute("SELECT count(*) FROM versions").fetchone()[0],
                  "blocks": len(blocks)}
        for kind in ("users", "groups", "artifacts", "api_tokens"):
            counts[kind] = conn.execute("SELECT count(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0]
    return blocks, keys, counts


def _copy_snapshot(parts: Embedded, out: Path, copied: Copied) -> dict[str, int] | None:
    """Steps 2 to 5 of the module docstring once; the record counts, or None if the snapshot must be retaken."""
    _snapshot(parts.catalog, out / CATALOG)
    copied.files[CATALOG] = digest(out / CATALOG)
    blocks, artifact_keys, counts = _references(out / CATALOG)
    wanted = {block_file(Path(BLOCKS), segment, seq).as_posix(): (segment, seq) for segment, seq in blocks}
    for stale in [name for name in copied.files if name.startswith(BLOCKS + "/") and name not in wanted]:
        (out / stale).unlink()
        del copied.files[stale]
    for relative, (segment, seq) in wanted.items():
        if relative in copied.files:  # a committed payload never changes
            continue
        try:
            copied.files[relative] = copy_file(block_file(parts.blocks, segment, seq), out / relative)
        except FileNotFoundError:
            return None
    _copy_objects(parts, out, copied)
    if any(f"{OBJECTS}/{key}" not in copied.files for key in artifact_keys):
        return None
    return counts


def digest(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of the file at ``path``."""
    with path.open("rb") as handle:
        return hashed(handle)


def _copy_secrets(parts: Embedded, settings: Settings, out: Path, copied: Copied) -> list[str]:
    """The embedded signing key and local admin; notes on secrets that live elsewhere (environment, key files)."""
    notes = []
    for name in SECRETS:
        with contextlib.suppress(FileNotFoundError):
            copied.files[name] = copy_file(parts.data_dir / name, out / name)
    if settings.jwt_secret is not None or settings.jwt_private_key_file is not None:
        notes.append("tokens are signed with TUPLEHUB_JWT_SECRET or a key file, which this backup does not hold: "
                     "give the restored server the same setting")
    admin = read_json(embedded_credentials_file(parts.data_dir))
    if admin is not None:
        write_private(out / ADMIN, {key: admin[key] for key in ("username", "password") if key in admin})
        copied.files[ADMIN] = digest(out / ADMIN)
    return notes


def staging_folder(target: Path, purpose: str) -> Path:
    """A new empty 0700 folder on ``target``'s file system to build its content in (see :func:`put_in_place`).

    Beside ``target`` when it does not exist. Inside it when it is an existing empty folder: that
    may be a disk's mount point (``tuplehub backup /media/usb``), whose parent is another file
    system, where a finished folder could not be renamed onto it (and would fill the wrong disk).
    """
    name = f".{target.name}.{purpose}-{os.getpid()}-{time.time_ns()}"
    if target.is_dir():
        folder = target / name
    else:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = target.with_name(name)
    folder.mkdir(mode=0o700)
    return folder


def put_in_place(folder: Path, target: Path, *, last: str | None = None) -> None:
    """Make the :func:`staging_folder` ``folder``'s content ``target``'s: one rename when it was built
    beside ``target``, else entry by entry, ``last`` last (the manifest: until it is there, the
    folder reads as a backup that did not finish)."""
    if folder.parent != target:
        os.replace(folder, target)  # a non-empty target (raced in) fails
        return
    for name in sorted(os.listdir(folder), key=lambda entry: entry == last):
        if (target / name).exists():
            raise FileExistsError(errno.EEXIST, "something else wrote into the folder meanwhile", str(target / name))
        os.rename(folder / name, target / name)
    folder.rmdir()
    with contextlib.suppress(OSError):  # a folder the user does not own keeps its mode; the files are 0600
        target.chmod(0o700)


def require_empty(target: Path, what: str) -> None:
    """Refuse a ``target`` that exists and holds anything (an empty folder is fine)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"{what} {target} already exists and is not an empty folder",
                       hint="name a new folder, or move that one aside first (nothing is ever overwritten)")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` into the staging ``folder``, fsynced: the last file of a backup."""
    descriptor = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _embedded_backup(settings: Settings, out: Path, copied: Copied) -> dict[str, Any]:
    """The embedded default into the staging folder ``out`` (module docstring); the manifest's own fields."""
    parts = embedded_parts(settings)
    _copy_objects(parts, out, copied)
    for _ in range(SNAPSHOT_TRIES):
        counts = _copy_snapshot(parts, out, copied)
        if counts is not None:
            break
    else:
        raise ConfigError(f"the catalog {parts.catalog} refers to block payloads or artifact bytes that are "
                          f"missing, in {SNAPSHOT_TRIES} snapshots in a row: the data folder is damaged",
                          hint="run `tuplehub serve` once to let it clean up, then back up again")
    notes = _copy_secrets(parts, settings, out, copied)
    return {"source": str(parts.data_dir.resolve()), "counts": counts, "notes": notes}


def _refuse_inside(settings: Settings, kind: str, dest: Path) -> None:
    """The object folder and the blocks may live outside the data folder (TUPLEHUB_OBJECTS_URL,
    TUPLEHUB_CATALOG_URL), and a deployment may keep its objects in a folder; a backup inside any of
    them would copy itself while it is written."""
    objects = urlparse(settings.resolved_objects_url())
    folders = [("the object folder", Path(unquote(objects.netloc + objects.path)))] if objects.scheme == "file" else []
    if kind == EMBEDDED:
        parts = embedded_parts(settings)
        folders += [("the data folder", parts.data_dir), ("the block folder", parts.blocks)]
    for what, folder in folders:
        if dest.resolve().is_relative_to(folder.resolve()):
            raise Conflict(f"{dest} is inside {what} {folder}; a backup there copies itself and is lost with it",
                           hint="write the backup to another folder, ideally another disk")


def create_backup(settings: Settings, dest: Path) -> dict[str, Any]:
    """Back up what ``settings`` name into the new folder ``dest``; its manifest, less the file list."""
    started = time.monotonic()
    kind = backup_kind(settings)
    dest = dest.absolute()
    _refuse_inside(settings, kind, dest)
    require_empty(dest, "the backup folder")
    out = staging_folder(dest, "backup")
    try:
        copied = Copied()
        if kind == EMBEDDED:
            details = _embedded_backup(settings, out, copied)
        else:
            from tuplehub.storage.backup_deployment import deployment_backup  # imports the MongoDB driver

            details = deployment_backup(settings, out, copied)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                    "tuplehub_version": importlib.metadata.version("tuplehub"),
                    "created_at": datetime.now(UTC).isoformat(), **details,
                    "files": [{"path": name, "size": size, "sha256": sha}
                              for name, (size, sha) in sorted(copied.files.items())]}
        write_manifest(out, manifest)
        put_in_place(out, dest, last=MANIFEST)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    summary = {key: value for key, value in manifest.items() if key != "files"}
    return {**summary, "path": str(dest), "files": len(manifest["files"]),
            "bytes": sum(size for size, _ in copied.files.values()), "seconds": round(time.monotonic() - started, 3)}
