"""Restoring a backup of :mod:`tuplehub.storage.backup`: its manifest checked, then the embedded default's.

:func:`read_manifest` and :func:`check_files` serve both kinds; a deployment backup is restored by
:mod:`tuplehub.storage.backup_deployment`, into an empty MongoDB database and object store.

An embedded backup is restored only into a data folder that does not exist or is empty, never over
one in use: a restore that replaced live data could not be undone, so moving the old folder aside is
left to the person.
Every file is copied into a temporary folder beside the target (inside it, when it is an existing
empty folder) and checked against the manifest's size and SHA-256 as it is copied; only when all
match (and the catalog passes SQLite's ``quick_check``) is it put in place. A partial or corrupt backup leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import sqlite3
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from tuplehub.storage.backup import (
    ADMIN,
    BLOCKS,
    CATALOG,
    DEPLOYMENT,
    DOCS,
    DUMPS,
    EMBEDDED,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    OBJECTS,
    SECRETS,
    BackupDamaged,
    backup_kind,
    copy_file,
    digest,
    put_in_place,
    require_empty,
    staging_folder,
)
from tuplehub.storage.errors import ConfigError, Conflict
from tuplehub.storage.paths import SERVE_LOCK, embedded_credentials_file, read_json, write_private
from tuplehub.storage.settings import Settings

_COLLECTION = re.compile(r"(?!system\.)[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")  # what a deployment backup may restore
# kind -> (files it may hold at its top, folders it may hold files under)
_LAYOUT: dict[str, tuple[set[str], tuple[str, ...]]] = {
    EMBEDDED: ({CATALOG, ADMIN, *SECRETS}, (BLOCKS, OBJECTS)),
    DEPLOYMENT: (set(), (DUMPS, OBJECTS)),
}


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of the backup folder ``source``, checked for shape; :class:`BackupDamaged` if unusable."""
    if not source.is_dir():
        raise BackupDamaged(f"{source} is not a backup folder (no such folder)")
    path = source / MANIFEST
    if not path.is_file():
        raise BackupDamaged(f"{source} has no {MANIFEST}: it is not a tuplehub backup, or one that did not finish",
                            hint="take a new backup with `tuplehub backup DEST`")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupDamaged(f"{path} is not valid JSON ({exc}): the backup is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupDamaged(f"{path} is not the manifest of a tuplehub backup")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupDamaged(f"{source} has backup format {version!r}, made by tuplehub "
                            f"{manifest.get('tuplehub_version')}; this tuplehub reads format {FORMAT_VERSION}",
                            hint="restore it with that tuplehub version or a newer one")
    kind = manifest.setdefault("kind", EMBEDDED)  # format 1 had embedded backups only
    if kind not in _LAYOUT:
        raise BackupDamaged(f"{path} names an unknown kind of backup: {kind!r}")
    counts, notes = manifest.get("counts", {}), manifest.get("notes", [])
    if not (isinstance(counts, dict) and all(isinstance(n, int) for n in counts.values())
            and isinstance(notes, list) and all(isinstance(note, str) for note in notes)):
        raise BackupDamaged(f"{path} has counts or notes of the wrong shape: the backup is damaged")
    files: Any = manifest.get("files")  # untrusted JSON: each use below checks its shape
    required = [CATALOG] if kind == EMBEDDED else [f"{DUMPS}/{name}.jsonl" for name in manifest.get("collections", [])]
    if kind == DEPLOYMENT and not (isinstance(manifest.get("collections"), list) and required
                                   and all(isinstance(name, str) and _COLLECTION.fullmatch(name)
                                           for name in manifest["collections"])):
        raise BackupDamaged(f"{path} lists no catalog collections, or names one no catalog has: the backup is damaged")
    listed = {f.get("path") for f in files if isinstance(f, dict)} if isinstance(files, list) else set()
    if missing := [name for name in required if name not in listed]:
        raise BackupDamaged(f"{path} lists no {missing[0]}: the backup is damaged")
    for entry in files:
        if not (isinstance(entry, dict) and _allowed(entry.get("path"), kind) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str)):
            raise BackupDamaged(f"{path} lists a file it may not: {entry!r}")
    return manifest


def _allowed(name: object, kind: str) -> bool:
    """A relative path a backup of ``kind`` may hold: one of its top files, or a file under one of its folders."""
    if not isinstance(name, str) or "\\" in name:
        return False
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "." in parts or not parts:
        return False
    top, folders = _LAYOUT[kind]
    return name in top or (len(parts) > 1 and parts[0] in folders)


def check_files(source: Path, manifest: dict[str, Any], target: Path | None = None) -> int:
    """Check every listed file (copying it to ``target`` as it is read, if given); the bytes checked."""
    total, inside = 0, source.resolve()
    for entry in manifest["files"]:
        name = entry["path"]
        if (source / name).is_symlink() or not (source / name).resolve().is_relative_to(inside):
            raise BackupDamaged(f"{source / name} is a link: a backup holds plain files only")
        with contextlib.suppress(FileNotFoundError):  # a missing file is named below
            if not stat.S_ISREG((source / name).lstat().st_mode) and not (source / name).is_dir():
                # a named pipe would block the read for ever
                raise BackupDamaged(f"{source / name} is not a plain file: a backup holds plain files only")
        try:
            size, sha = copy_file(source / name, target / name) if target is not None else digest(source / name)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BackupDamaged(f"{source / name} is missing: the backup is incomplete") from exc
        if (size, sha) != (entry["size"], entry["sha256"]):
            raise BackupDamaged(f"{source / name} does not match the manifest ({size} bytes, sha256 {sha[:12]}…; "
                                f"expected {entry['size']} bytes, {entry['sha256'][:12]}…): the backup is damaged")
        total += size
    return total


def _check_sqlite(catalog: Path) -> None:
    """The embedded catalog of a backup must pass SQLite's own check."""
    with contextlib.closing(sqlite3.connect(catalog.as_uri() + "?mode=ro", uri=True)) as conn:
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
    if verdict != "ok":
        raise BackupDamaged(f"the catalog of {catalog.parent} fails SQLite's check: {verdict}")


def _admin(path: Path) -> dict[str, str]:
    """The local admin's name and password from a backup (what :mod:`backup` writes, nothing else)."""
    admin = read_json(path)
    if not (isinstance(admin, dict) and all(isinstance(admin.get(key), str) for key in ("username", "password"))):
        raise BackupDamaged(f"{path.name} in the backup does not hold the local admin's name and password")
    return {"username": admin["username"], "password": admin["password"]}


def _refuse_running(target: Path) -> None:
    """Refuse a data folder whose embedded server runs (it holds the lock file)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), (target / SERVE_LOCK).open("r") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"a tuplehub server is running on {target}; stop it first",
                           hint="restore into a new folder with --data-dir, then serve from it") from None
        fcntl.flock(lock, fcntl.LOCK_UN)


def restore_backup(settings: Settings, source: Path, *, check_only: bool = False) -> dict[str, Any]:
    """Restore ``source`` into what ``settings`` name, which must be new or empty; with ``check_only``,
    only verify it against its manifest (and touch nothing the settings name)."""
    source = source.absolute()
    manifest = read_manifest(source)
    kind = manifest["kind"]
    summary = {"source": str(source), "kind": kind, "files": len(manifest["files"]),
               "created_at": manifest.get("created_at"), "tuplehub_version": manifest.get("tuplehub_version"),
               "counts": manifest.get("counts"), "notes": manifest.get("notes", [])}
    if check_only:
        total = check_files(source, manifest)
        if kind == EMBEDDED:
            _check_sqlite(source / CATALOG)
        return {**summary, "restored": False, "bytes": total}
    if (into := backup_kind(settings)) != kind:
        raise ConfigError(f"{source} is a backup of {'an' if kind == EMBEDDED else 'a'} {kind} server; these "
                          f"settings name {'an' if into == EMBEDDED else 'a'} {into} one, which it cannot be "
                          "restored into", hint=f"restore it with the settings of a {kind} server, see {DOCS}")
    if kind == DEPLOYMENT:
        from tuplehub.storage.backup_deployment import deployment_restore  # imports the MongoDB driver

        return {**summary, **deployment_restore(settings, source, manifest)}
    target = settings.data_dir.absolute()
    _refuse_running(target)
    require_empty(target, "the data folder")
    work = staging_folder(target, "restore")
    try:
        total = check_files(source, manifest, work)
        _check_sqlite(work / CATALOG)
        admin = _admin(work / ADMIN) if (work / ADMIN).exists() else None
        shutil.rmtree(work / ADMIN.split("/")[0], ignore_errors=True)  # it belongs in the config folder
        try:
            put_in_place(work, target)
        except OSError as exc:
            raise Conflict(f"cannot put the restored data at {target}: {exc.strerror}",
                           hint="restore into a new folder that nothing else writes to") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if admin is not None:
        write_private(embedded_credentials_file(target), {**admin, "data_dir": str(target.resolve())})
    return {**summary, "restored": True, "path": str(target), "bytes": total}
