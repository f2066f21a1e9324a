"""``tuplehub backup`` and ``restore`` (issue 12): a backup taken while a real embedded server works
restores into a fresh server with the same content hashes, users, access and artifact bytes."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage import backup as backup_module
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.errors import Conflict, NotFound

from .conftest import PASSWORD, admin_client, api, make_settings
from .factories import episode_arrays
from .processes import Processes, cli, embedded_client, free_port, isolated_env, start_serve, stop, wait_for_server

PART = 2**16  # the smallest part an upload session takes, so a small file spans several parts


def tuplehub(*args: str, code: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``tuplehub ARGS --json`` in this process; its JSON output, after checking the exit code."""
    result = CliRunner(env=env).invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.output)


@dataclass
class World:
    """What the source server holds before the backup, and how it looked."""

    server: EmbeddedServer
    alice: Client
    alice_token: str
    dataset: str
    artifact_id: str
    artifact_bytes: bytes
    exported: dict[str, np.ndarray]
    hashes: dict[int, str | None] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[World]:
    settings = make_settings(tmp_path_factory.mktemp("source"), redis_url)
    with serve_in_thread(settings) as server, admin_client(server) as admin, ExitStack() as stack:
        for user in ("alice", "bob", "carol"):
            admin.users.create(user, PASSWORD, site_roles=["contributor"])
        admin.groups.create("lab")
        admin.groups.set_member("lab", "bob", ["member"])
        admin.groups.set_member("lab", "alice", ["contributor"])
        with Client(server.url) as signed_in:
            signed_in.login("alice", PASSWORD, remember=False)
            token = signed_in.tokens.create("backup-test").token
        alice = stack.enter_context(Client(server.url, token=token))
        name = f"ds-{uuid.uuid4().hex[:8]}"
        dataset = alice.datasets.create(name)
        dataset.upload(episode_arrays(episodes=4, length=30, seed=1), episode_metadata={0: {"policy": "a"}}).wait()
        dataset.upload(episode_arrays(episodes=3, length=20, seed=2, first_id=10)).wait()
        dataset.publish(groups=["lab"])
        content = os.urandom(300_000)
        artifact = alice.artifacts.upload(content, name="policy.bin")
        exported = dataset.export(version=2).to_numpy()
        world = World(server, alice, token, name, artifact.id, content, exported)
        world.hashes = {v.number: v.content_hash for v in dataset.refresh().record.versions}
        yield world


def _parquet(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table_from_arrays(arrays), buffer, compression="none")
    return buffer.getvalue()


def _put_parts(server: EmbeddedServer, token: str, upload_id: str, data: bytes, numbers: range) -> list[dict]:
    with api(server, token) as http:
        parts = []
        for number in numbers:
            response = http.put(f"/uploads/{upload_id}/parts/{number}", content=data[(number - 1) * PART:number * PART])
            assert response.status_code == 200, response.text
            parts.append(response.json())
        return parts


def _finish_upload(server: EmbeddedServer, token: str, upload_id: str, data: bytes) -> None:
    """Send parts 2.. of ``data``, complete the session and wait for its ingest."""
    count = -(-len(data) // PART)
    _put_parts(server, token, upload_id, data, range(2, count + 1))
    with api(server, token) as http:
        received = http.get(f"/uploads/{upload_id}/parts").json()
        parts = [{"number": p["number"], "etag": p["etag"]} for p in received]
        job = http.post(f"/uploads/{upload_id}/complete", json={"parts": parts})
        assert job.status_code == 202, job.text
    with Client(server.url, token=token) as client:
        client.jobs.get(job.json()["id"]).wait(progress=False)


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if path.is_dir() else "file", stat.S_IMODE(path.stat().st_mode))
            for path in [folder, *folder.rglob("*")]}


def test_a_backup_taken_while_uploads_run_restores_hashes_access_and_bytes(
        world: World, tmp_path: Path, redis_url: str) -> None:
    server, token = world.server, world.alice_token
    data = _parquet(episode_arrays(episodes=20, length=200, seed=3, first_id=100))
    assert len(data) > 2 * PART
    with api(server, token) as http:
        session = http.post(f"/datasets/{world.dataset}/uploads", json={"part_size": PART, "size": len(data)})
        assert session.status_code == 201, session.text
    upload_id = session.json()["id"]
    _put_parts(server, token, upload_id, data, range(1, 2))  # an upload in flight: one part of several
    other = world.alice.datasets.create(f"busy-{uuid.uuid4().hex[:6]}")
    busy = threading.Thread(target=lambda: other.upload(episode_arrays(episodes=8, length=200, seed=4)).wait())
    busy.start()  # a whole upload and its ingest, running while the backup is taken
    try:
        summary = tuplehub("backup", str(tmp_path / "backup"), "--data-dir", str(server.settings.data_dir))
    finally:
        busy.join(120)
    _finish_upload(server, token, upload_id, data)  # the live server goes on: version 3
    hashes = {v.number: v.content_hash for v in world.alice.datasets.get(world.dataset).record.versions}
    assert list(hashes) == [1, 2, 3]
    assert {k: hashes[k] for k in (1, 2)} == world.hashes

    assert summary["counts"]["versions"] >= 2
    assert summary["counts"]["users"] == 4
    assert _modes(tmp_path / "backup") <= {("dir", 0o700), ("file", 0o600)}
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert (manifest["format_version"], manifest["kind"]) == (2, "embedded")
    assert manifest["tuplehub_version"]
    assert {"catalog.db", "jwt-secret.json", "config/embedded-admin.json"} <= {f["path"] for f in manifest["files"]}

    restored = tuplehub("restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "restored"))
    assert restored["restored"]
    assert restored["files"] == summary["files"]
    with serve_in_thread(make_settings(tmp_path / "restored", redis_url)) as copy:
        with Client(copy.url, token=token) as alice:  # an API token of before the backup still works
            assert alice.whoami().name == "alice"
            dataset = alice.datasets.get(world.dataset)
            assert {v.number: v.content_hash for v in dataset.record.versions} == world.hashes
            out = dataset.export(version=2).to_numpy()
            assert out.keys() == world.exported.keys()
            for column, values in world.exported.items():
                np.testing.assert_array_equal(out[column], values)
            assert alice.artifacts.get(world.artifact_id).read() == world.artifact_bytes
            busy_copy = {d.name: d for d in alice.datasets.list().items}.get(other.name)
            if busy_copy is not None and busy_copy.latest_version:  # ingested before the snapshot: the same hash
                assert alice.datasets.get(other.name).record.versions[0].content_hash == \
                    world.alice.datasets.get(other.name).record.versions[0].content_hash
        # the upload in flight at the backup resumes on the restored server and gives the same version 3
        _finish_upload(copy, token, upload_id, data)
        with Client(copy.url, token=token) as alice:
            assert alice.datasets.get(world.dataset).record.versions[2].content_hash == hashes[3]
        with Client(copy.url) as bob:  # passwords and group access
            bob.login("bob", PASSWORD, remember=False)
            assert bob.datasets.get(world.dataset).latest_version == 3
        with Client(copy.url) as carol:
            carol.login("carol", PASSWORD, remember=False)
            with pytest.raises(NotFound):
                carol.datasets.get(world.dataset)
        with admin_client(copy) as admin:  # the local admin's password came along
            assert {"alice", "bob", "carol"} <= {u.name for u in admin.users.list().items}


def _backup(world: World, folder: Path) -> Path:
    tuplehub("backup", str(folder), "--data-dir", str(world.server.settings.data_dir))
    return folder


def _siblings(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.parent.iterdir() if path.name.startswith(f".{folder.name}."))


def test_restore_refuses_damaged_partial_and_unknown_backups_and_leaves_nothing(world: World, tmp_path: Path) -> None:
    good = _backup(world, tmp_path / "good")
    assert tuplehub("restore", str(good), "--check", "--data-dir", str(tmp_path / "unused"))["restored"] is False
    assert not (tmp_path / "unused").exists()
    manifest = json.loads((good / "manifest.json").read_text())
    block = next(f["path"] for f in manifest["files"] if f["path"].startswith("catalog.db.blocks/"))
    target = tmp_path / "target"

    def damaged(change: Any) -> Path:
        copy = tmp_path / f"bad-{uuid.uuid4().hex[:6]}"
        shutil.copytree(good, copy)
        change(copy)
        return copy

    def flip(copy: Path) -> None:
        raw = bytearray((copy / block).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (copy / block).write_bytes(bytes(raw))

    def newer(copy: Path) -> None:
        (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))

    def escaping(copy: Path) -> None:
        files = [*manifest["files"], {"path": "../outside", "size": 1, "sha256": "0" * 64}]
        (copy / "manifest.json").write_text(json.dumps({**manifest, "files": files}))

    def listed_admin(copy: Path) -> None:  # a crafted backup: its admin file is no object (was a TypeError)
        (copy / "config" / "embedded-admin.json").write_text("[]")
        files = [{**f, "size": 2, "sha256": hashlib.sha256(b"[]").hexdigest()} if f["path"].startswith("config/")
                 else f for f in manifest["files"]]
        (copy / "manifest.json").write_text(json.dumps({**manifest, "files": files}))

    def linked(copy: Path) -> None:
        (copy / block).unlink()
        (copy / block).symlink_to(tmp_path / "elsewhere")

    def piped(copy: Path) -> None:  # reading a named pipe waited for a writer for ever
        (copy / block).unlink()
        os.mkfifo(copy / block)

    def miscounted(copy: Path) -> None:  # printing these counts and notes was a TypeError traceback
        (copy / "manifest.json").write_text(json.dumps({**manifest, "counts": 5, "notes": 7}))

    cases = [(miscounted, "wrong shape"), (flip, "does not match the manifest"), (linked, "is a link"),
             (piped, "not a plain file"),
             (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
             (lambda c: (c / block).unlink(), "is missing"), (newer, "backup format 99"),
             (lambda c: (c / "manifest.json").write_text("{"), "not valid JSON"), (escaping, "lists a file"),
             (listed_admin, "local admin's name and password")]
    for change, words in cases:
        error = tuplehub("restore", str(damaged(change)), "--data-dir", str(target), code=1)["error"]
        assert error["code"] == "backup-damaged", error
        assert words in error["detail"], error
        assert not target.exists()
        assert _siblings(target) == []
    result = CliRunner().invoke(app, ["restore", str(damaged(flip)), "--data-dir", str(target)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert block in result.output


def test_restore_refuses_a_folder_in_use_or_not_empty(world: World, tmp_path: Path) -> None:
    good = _backup(world, tmp_path / "good")
    running = world.server.settings.data_dir
    error = tuplehub("restore", str(good), "--data-dir", str(running), code=1)["error"]
    assert "server is running" in error["detail"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    error = tuplehub("restore", str(good), "--data-dir", str(tmp_path / "full"), code=1)["error"]
    assert "not an empty folder" in error["detail"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert tuplehub("restore", str(good), "--data-dir", str(tmp_path / "empty"))["restored"]
    assert (tmp_path / "empty" / "catalog.db").is_file()
    assert _siblings(tmp_path / "empty") == []


def test_backup_and_restore_into_an_empty_mount_point(world: World, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``tuplehub backup /media/usb``: the folder's parent is another file system, where a folder
    built beside it cannot be renamed onto it (EXDEV). Both used to build there and then fail."""
    rename = os.replace

    def across_file_systems(source: Any, target: Any) -> None:
        if Path(source).is_dir() and Path(target).exists():
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source))
        rename(source, target)

    monkeypatch.setattr(os, "replace", across_file_systems)
    disk, fresh = tmp_path / "usb", tmp_path / "fresh"
    disk.mkdir()
    fresh.mkdir()
    _backup(world, disk)
    assert (disk / "manifest.json").is_file()
    assert [path.name for path in disk.iterdir() if path.name.startswith(".")] == []
    assert tuplehub("restore", str(disk), "--check", "--data-dir", str(tmp_path / "unused"))["restored"] is False
    assert tuplehub("restore", str(disk), "--data-dir", str(fresh))["restored"]
    assert (fresh / "catalog.db").is_file()
    assert [path.name for path in fresh.iterdir() if path.name.startswith(".")] == []
    assert _siblings(disk) == _siblings(fresh) == []


def test_backup_refuses_what_it_cannot_do_safely(world: World, tmp_path: Path) -> None:
    data_dir = str(world.server.settings.data_dir)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert "not an empty folder" in tuplehub("backup", str(tmp_path / "taken"), "--data-dir", data_dir,
                                             code=1)["error"]["detail"]
    inside = tuplehub("backup", str(Path(data_dir) / "bk"), "--data-dir", data_dir, code=1)["error"]
    assert "inside the data folder" in inside["detail"]
    empty = tuplehub("backup", str(tmp_path / "b1"), "--data-dir", str(tmp_path / "nothing"), code=1)["error"]
    assert "no catalog" in empty["detail"]
    mixed = tuplehub("backup", str(tmp_path / "b2"), "--data-dir", data_dir, code=1,
                     env={"TUPLEHUB_OBJECTS_URL": "s3://tuplehub/data"})["error"]  # an SQLite catalog, S3 objects
    assert "a sqlite catalog with the object store s3://tuplehub/data" in mixed["detail"]
    assert "docs/deployment.md" in mixed["hint"]
    assert not (tmp_path / "b1").exists()
    assert not (tmp_path / "b2").exists()
    assert _siblings(tmp_path / "b1") == []


def test_backup_refuses_a_folder_inside_an_object_folder_kept_outside_the_data_folder(tmp_path: Path) -> None:
    """It used to copy itself into itself there (a 10-byte object made a 4.7 MB backup)."""
    objects = tmp_path / "objects"
    (objects / "uploads").mkdir(parents=True)
    (objects / "uploads" / "a").write_bytes(b"x" * 10)
    settings = make_settings(tmp_path / "data", "redis://127.0.0.1:9", objects_url=objects.as_uri())
    asyncio.run(_create_catalog(settings.resolved_catalog_url()))
    with pytest.raises(Conflict, match="inside the object folder"):
        backup_module.create_backup(settings, objects / "bk")
    assert sorted(path.name for path in objects.iterdir()) == ["uploads"]
    assert backup_module.create_backup(settings, tmp_path / "bk")["files"] == 2  # the catalog and the object


async def _create_catalog(url: str) -> None:
    await (await open_catalog(url)).aclose()


def test_a_deletion_committed_during_the_copy_retakes_the_snapshot(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment deleted after the snapshot (rows first, then payloads, as the catalog does) is not a damaged
    backup: the snapshot is taken again and no longer refers to it."""
    source = tmp_path / "offline"
    tuplehub("restore", str(_backup(world, tmp_path / "first")), "--data-dir", str(source))
    import sqlite3

    taken = []
    snapshot = backup_module._snapshot

    def snapshot_then_delete(catalog: Path, target: Path) -> None:
        snapshot(catalog, target)
        taken.append(target)
        if len(taken) == 1:
            with sqlite3.connect(catalog) as conn:
                segment = conn.execute("SELECT segment FROM blocks LIMIT 1").fetchone()[0]
                conn.execute("DELETE FROM blocks WHERE segment = ?", (segment,))
            shutil.rmtree(catalog.with_name("catalog.db.blocks") / segment)
            deleted.append(segment)

    deleted: list[str] = []
    monkeypatch.setattr(backup_module, "_snapshot", snapshot_then_delete)
    tuplehub("backup", str(tmp_path / "second"), "--data-dir", str(source))
    assert len(taken) == 2
    files = {f["path"] for f in json.loads((tmp_path / "second" / "manifest.json").read_text())["files"]}
    assert not any(name.startswith(f"catalog.db.blocks/{deleted[0]}/") for name in files)
    assert tuplehub("restore", str(tmp_path / "second"), "--check", "--data-dir", str(tmp_path / "x"))["files"]


@pytest.mark.e2e
@pytest.mark.slow
def test_backup_and_restore_as_commands_beside_a_real_serve(tmp_path: Path, running: Processes) -> None:
    """``tuplehub serve`` (bundled Redis, worker process) backed up by a ``tuplehub backup`` process while it
    serves; the restored folder serves the same versions to the same local admin."""
    env = isolated_env(tmp_path / "config")
    source, log = tmp_path / "source", tmp_path / "serve.log"
    server = running.add(start_serve(source, free_port(), env=env, log=log))
    wait_for_server(source, server, log)
    with embedded_client(source, env) as hub:
        dataset = hub.datasets.create("kept")
        dataset.upload(episode_arrays(episodes=3, length=40, seed=7)).wait(timeout=60)
        before = [v.content_hash for v in dataset.refresh().record.versions]
    backup = subprocess.run(cli("backup", str(tmp_path / "bk"), "--data-dir", str(source), "--json"), env=env,
                            capture_output=True, text=True, timeout=120)
    assert backup.returncode == 0, backup.stderr
    refused = subprocess.run(cli("restore", str(tmp_path / "bk"), "--data-dir", str(source)), env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: a tuplehub server is running on"), refused.stderr
    assert stop(server) == 0

    restored = tmp_path / "restored"
    done = subprocess.run(cli("restore", str(tmp_path / "bk"), "--data-dir", str(restored)), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"tuplehub serve --data-dir {restored}" in done.stdout
    server = running.add(start_serve(restored, free_port(), env=env, log=log))
    wait_for_server(restored, server, log)
    with embedded_client(restored, env) as hub:  # the local admin's saved password signs in
        assert [v.content_hash for v in hub.datasets.get("kept").record.versions] == before
    assert stop(server) == 0


def test_an_object_deleted_while_it_is_copied_is_skipped(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export result discarded during the copy is not an error; an artifact of the snapshot still is kept."""
    objects = world.server.settings.data_dir / "objects"
    doomed = next(p for p in sorted(objects.rglob("*")) if p.is_file() and "artifacts" not in p.parts)
    copy_file = backup_module.copy_file

    def vanishing(source: Path, target: Path) -> tuple[int, str]:
        if source == doomed:
            raise FileNotFoundError(source)  # as if deleted between listing and opening
        return copy_file(source, target)

    monkeypatch.setattr(backup_module, "copy_file", vanishing)
    tuplehub("backup", str(tmp_path / "bk"), "--data-dir", str(world.server.settings.data_dir))
    files = {f["path"] for f in json.loads((tmp_path / "bk" / "manifest.json").read_text())["files"]}
    assert f"objects/{doomed.relative_to(objects).as_posix()}" not in files
    assert f"objects/artifacts/{world.artifact_id}" in files


def test_a_backup_of_format_1_still_restores_and_the_kinds_do_not_mix(world: World, tmp_path: Path) -> None:
    """Format 1 (before deployment backups) had no ``kind``: it is an embedded backup. An embedded backup
    is never restored into a deployment's MongoDB."""
    old = _backup(world, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["kind"]
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert tuplehub("restore", str(old), "--data-dir", str(tmp_path / "restored"))["kind"] == "embedded"
    error = tuplehub("restore", str(old), code=1, env={"TUPLEHUB_CATALOG_URL": "mongodb://127.0.0.1:9/tuplehub"})
    assert "a backup of an embedded server; these settings name a deployment one" in error["error"]["detail"]
