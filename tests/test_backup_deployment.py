"""``tuplehub backup`` and ``restore`` of a deployment (issue 12): a MongoDB catalog and an S3 store.

The servers run in this process against the suite's MongoDB double (mongomock behind the async
API, one in-memory database per URL, shared by the servers and the commands; a real server when
``TUPLEHUB_TEST_MONGODB_URL`` is set) and moto's S3 server over loopback. The commands read their
settings from ``TUPLEHUB_*`` variables, as ``docker compose run --rm api tuplehub backup`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.storage import backup_deployment
from tuplehub.storage.catalog.mongo import MongoCatalog
from tuplehub.storage.errors import ConfigError, NotFound
from tuplehub.storage.models import JobStatus
from tuplehub.storage.settings import Settings

from .conftest import PASSWORD, api, make_settings, s3_server
from .factories import episode_arrays
from .mongo_double import AsyncDatabase, memory_database

ADMIN_PASSWORD = "deploy-Passphrase-9"
JWT_SECRET = "backup-deployment-" + "k" * 40
REAL_MONGODB = os.environ.get("TUPLEHUB_TEST_MONGODB_URL", "").rstrip("/")


@dataclass
class Deployment:
    """Where the servers and commands of this module keep their data."""

    s3: str
    redis_url: str
    root: Path
    databases: dict[str, AsyncDatabase] = field(default_factory=dict)
    client: Any = None  # PyMongo's synchronous client of the real server, if there is one
    names: set[str] = field(default_factory=set)  # the databases this module's settings name

    def settings(self, name: str, bucket: str = "tuplehub", **overrides: Any) -> Settings:
        """A deployment's settings: its own database and bucket prefix, the signing key and admin of its .env."""
        catalog = f"{REAL_MONGODB or 'mongodb://double'}/{name}"
        self.names.add(name)
        return make_settings(self.root / name, self.redis_url, catalog_url=catalog, objects_url=f"s3://{bucket}/{name}",
                             s3_endpoint_url=self.s3, s3_region="us-east-1", s3_access_key_id="testing",
                             s3_secret_access_key="testing", admin_password=ADMIN_PASSWORD, jwt_secret=JWT_SECRET,
                             auto_metrics=False, **overrides)

    def fresh(self, bucket: str = "tuplehub") -> Settings:
        return self.settings(f"tuplehub_restored_{uuid.uuid4().hex[:8]}", bucket, stale_after_s=2, requeue_every_s=1)

    def database(self, settings: Settings) -> Any:
        """The database ``settings`` name, through PyMongo's synchronous API, for looking inside it."""
        name = settings.resolved_catalog_url().rsplit("/", 1)[1]
        return self.client[name] if self.client is not None else self.memory(name)._database

    def memory(self, name: str) -> AsyncDatabase:
        """The double's database called ``name``, made empty on first use."""
        return self.databases.setdefault(name, memory_database(name))


def env_of(settings: Settings) -> dict[str, str]:
    """The ``TUPLEHUB_*`` variables a container with these settings has (its .env)."""
    names = ("catalog_url", "objects_url", "s3_endpoint_url", "s3_region", "s3_access_key_id", "redis_url",
             "admin_password", "jwt_secret", "s3_secret_access_key")
    values = {name: getattr(settings, name) for name in names}
    return {f"TUPLEHUB_{name.upper()}": value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            for name, value in values.items()} | {"TUPLEHUB_DATA_DIR": str(settings.data_dir)}


def tuplehub(settings: Settings, *args: str, code: int = 0) -> dict[str, Any]:
    """``tuplehub ARGS --json`` with ``settings`` in the environment; its JSON output, the exit code checked."""
    result = CliRunner(env=env_of(settings)).invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    with s3_server() as s3, pytest.MonkeyPatch.context() as patch:
        where = Deployment(s3, redis_url, tmp_path_factory.mktemp("deployment"))
        if REAL_MONGODB:
            from pymongo import MongoClient

            where.client = MongoClient(REAL_MONGODB, tz_aware=True)
        else:
            async def in_memory(cls: type[MongoCatalog], url: str) -> MongoCatalog:
                return cls(where.memory(url.rsplit("/", 1)[1]))

            patch.setattr(MongoCatalog, "open", classmethod(in_memory))
        try:
            yield where
        finally:
            if where.client is not None:
                for name in where.names:
                    where.client.drop_database(name)
                where.client.close()


@dataclass
class World:
    """What the source deployment holds before the backup."""

    settings: Settings
    server: EmbeddedServer
    alice: Client
    alice_token: str
    dataset: str
    artifact_id: str
    artifact_bytes: bytes
    exported: dict[str, np.ndarray]
    hashes: dict[int, str | None]


@pytest.fixture(scope="module")
def world(deployment: Deployment) -> Iterator[World]:
    """Two users and a third, a group share, a dataset with two ingested versions, an artifact."""
    settings = deployment.settings(f"tuplehub_source_{uuid.uuid4().hex[:8]}")
    with serve_in_thread(settings) as server, Client(server.url) as admin, ExitStack() as stack:
        admin.login("admin", ADMIN_PASSWORD, remember=False)
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
        hashes = {v.number: v.content_hash for v in dataset.refresh().record.versions}
        yield World(settings, server, alice, token, name, artifact.id, content, exported, hashes)


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if path.is_dir() else "file", stat.S_IMODE(path.stat().st_mode))
            for path in [folder, *folder.rglob("*")]}


def _documents(database: Any, collection: str) -> list[dict[str, Any]]:
    return list(database[collection].find({}).sort("_id", 1))


async def _version_numbers(url: str, dataset: str) -> set[int]:
    """The versions of ``dataset`` in the catalog at ``url``, opened as a server opens it."""
    catalog = await MongoCatalog.connect(url)
    try:
        return {v.number for v in await catalog.list_versions((await catalog.get_dataset(dataset)).id)}
    finally:
        await catalog.aclose()


def test_a_deployment_restores_into_a_fresh_catalog_and_bucket_with_hashes_access_and_bytes(
        world: World, deployment: Deployment, tmp_path: Path) -> None:
    with api(world.server, world.alice_token) as http:  # an upload session whose parts S3 holds, in flight
        session = http.post(f"/datasets/{world.dataset}/uploads", json={"part_size": 5 * 2**20, "size": 6 * 2**20})
        assert session.status_code == 201, session.text
    summary = tuplehub(world.settings, "backup", str(tmp_path / "backup"))
    assert summary["kind"] == "deployment"
    assert summary["counts"]["versions"] == 2
    assert summary["counts"]["users"] == 4
    assert "testing" not in json.dumps(summary)  # no credential of the URLs or the store in the manifest
    assert _modes(tmp_path / "backup") <= {("dir", 0o700), ("file", 0o600)}
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    files = {f["path"] for f in manifest["files"]}
    assert {"catalog/blocks.jsonl", "catalog/versions.jsonl", "catalog/records.jsonl",
            f"objects/artifacts/{world.artifact_id}"} <= files
    assert manifest["collections"][:2] == ["meta", "jobs"]
    assert any(".env" in note for note in manifest["notes"])
    assert any("1 upload session(s) were receiving parts" in note for note in manifest["notes"])
    checked = tuplehub(world.settings, "restore", str(tmp_path / "backup"), "--check")
    assert checked["restored"] is False

    target = deployment.fresh()
    restored = tuplehub(target, "restore", str(tmp_path / "backup"))
    assert restored["restored"]
    assert restored["kind"] == "deployment"
    assert restored["expired_uploads"] == 1
    source_db, target_db = deployment.database(world.settings), deployment.database(target)
    for collection in ("datasets", "versions", "blocks", "episodes"):  # ObjectIds, dates and bytes as they were
        assert _documents(target_db, collection) == _documents(source_db, collection), collection
    with serve_in_thread(target) as copy:
        with Client(copy.url, token=world.alice_token) as alice:  # an API token of before the backup still works
            assert alice.whoami().name == "alice"
            dataset = alice.datasets.get(world.dataset)
            assert {v.number: v.content_hash for v in dataset.record.versions} == world.hashes
            out = dataset.export(version=2).to_numpy()
            for column, values in world.exported.items():
                np.testing.assert_array_equal(out[column], values)
            assert alice.artifacts.get(world.artifact_id).read() == world.artifact_bytes
        with api(copy, world.alice_token) as http:  # its parts were in the old store: the client starts again
            assert http.get(f"/uploads/{session.json()['id']}").json()["status"] == "expired"
        with Client(copy.url) as bob:  # the other user: password and group access
            bob.login("bob", PASSWORD, remember=False)
            assert bob.datasets.get(world.dataset).latest_version == 2
        with Client(copy.url) as carol:
            carol.login("carol", PASSWORD, remember=False)
            with pytest.raises(NotFound):
                carol.datasets.get(world.dataset)


def test_a_backup_taken_while_an_ingest_commits_is_consistent(
        world: World, deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst moment: every block of the new segment written, its version not yet committed. The
    restored server runs the job again and commits the same version, with the same content hash."""
    source = world.settings.resolved_catalog_url().rsplit("/", 1)[1]
    committing, go_on = threading.Event(), threading.Event()
    insert_version = MongoCatalog.insert_version

    async def held(self: MongoCatalog, version: Any) -> bool:
        if self.db.name == source and not go_on.is_set():
            committing.set()
            await asyncio.to_thread(go_on.wait, 60)
        return await insert_version(self, version)

    monkeypatch.setattr(MongoCatalog, "insert_version", held)
    dataset = world.alice.datasets.get(world.dataset)
    job = dataset.upload(episode_arrays(episodes=5, length=40, seed=5, first_id=50))
    try:
        assert committing.wait(60), "the ingest never reached its commit"
        summary = tuplehub(world.settings, "backup", str(tmp_path / "busy"))
    finally:
        go_on.set()
    job.wait(timeout=60)
    number = job.record.result["version"]
    hashes = {v.number: v.content_hash for v in world.alice.datasets.get(world.dataset).record.versions}
    assert summary["counts"]["versions"] == number - 1  # the backup holds the versions before it

    target = deployment.fresh()
    tuplehub(target, "restore", str(tmp_path / "busy"))
    with serve_in_thread(target) as copy, Client(copy.url, token=world.alice_token) as alice:
        again = alice.jobs.get(job.id)
        again.wait(timeout=60)  # it was running at the backup: the restored workers run it again
        assert again.record.status == JobStatus.succeeded
        restored = {v.number: v.content_hash for v in alice.datasets.get(world.dataset).record.versions}
        assert restored == hashes


def test_restore_refuses_a_target_that_holds_anything_and_the_other_kind(
        world: World, deployment: Deployment, tmp_path: Path) -> None:
    tuplehub(world.settings, "backup", str(tmp_path / "backup"))
    error = tuplehub(world.settings, "restore", str(tmp_path / "backup"), code=1)["error"]
    assert error["code"] == "conflict"
    assert "is not empty" in error["detail"]
    assert "users (records)" in error["detail"], error
    assert "before any server has started" in error["hint"]
    # an empty database beside a bucket prefix that holds objects
    target = deployment.fresh().model_copy(update={"objects_url": world.settings.objects_url})
    error = tuplehub(target, "restore", str(tmp_path / "backup"), code=1)["error"]
    assert "the object store s3://tuplehub/tuplehub_source_" in error["detail"], error
    assert deployment.database(target).list_collection_names() == []  # nothing was written
    embedded = make_settings(tmp_path / "embedded", deployment.redis_url)
    result = CliRunner(env={"TUPLEHUB_DATA_DIR": str(embedded.data_dir)}).invoke(
        app, ["restore", str(tmp_path / "backup"), "--json"])
    assert result.exit_code == 1
    assert "a backup of a deployment server; these settings name an embedded one" in result.output
    assert not embedded.data_dir.exists()


def test_a_damaged_backup_is_refused_by_check_and_writes_nothing(
        world: World, deployment: Deployment, tmp_path: Path) -> None:
    good = tmp_path / "backup"
    tuplehub(world.settings, "backup", str(good))
    for changed in ("catalog/blocks.jsonl", f"objects/artifacts/{world.artifact_id}"):
        bad = tmp_path / f"bad-{uuid.uuid4().hex[:6]}"
        shutil.copytree(good, bad)
        raw = bytearray((bad / changed).read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one changed byte
        (bad / changed).write_bytes(bytes(raw))
        target = deployment.fresh()
        for extra in (["--check"], []):
            error = tuplehub(target, "restore", str(bad), *extra, code=1)["error"]
            assert error["code"] == "backup-damaged", error
            assert changed in error["detail"]
            assert "does not match the manifest" in error["detail"]
        assert deployment.database(target).list_collection_names() == []
    crafted = tmp_path / "crafted"  # a manifest that would have restore write into a system collection
    shutil.copytree(good, crafted)
    manifest = json.loads((crafted / "manifest.json").read_text())
    (crafted / "catalog" / "system.users.jsonl").write_bytes(b"")
    manifest["collections"].append("system.users")
    manifest["files"].append({"path": "catalog/system.users.jsonl", "size": 0, "sha256": hashlib.sha256().hexdigest()})
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    error = tuplehub(deployment.fresh(), "restore", str(crafted), code=1)["error"]
    assert "names one no catalog has" in error["detail"], error


def test_a_restore_that_stops_midway_is_finished_by_running_it_again(
        world: World, deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tuplehub(world.settings, "backup", str(tmp_path / "backup"))
    target = deployment.fresh()
    load = backup_deployment._load

    async def broken(db: Any, name: str, path: Path) -> int:
        if name == "versions":
            raise OSError("the connection to the catalog dropped")
        return await load(db, name, path)

    monkeypatch.setattr(backup_deployment, "_load", broken)
    error = tuplehub(target, "restore", str(tmp_path / "backup"), code=1)["error"]
    assert error["code"] == "restore-unfinished"
    assert "connection to the catalog dropped" in error["detail"]
    assert "run the same `tuplehub restore` again" in error["hint"]
    with pytest.raises(ConfigError, match="holds a restore that did not finish"):  # no server starts on it
        asyncio.run(_version_numbers(target.resolved_catalog_url(), world.dataset))
    monkeypatch.setattr(backup_deployment, "_load", load)
    assert tuplehub(target, "restore", str(tmp_path / "backup"))["again"] is True
    assert asyncio.run(_version_numbers(target.resolved_catalog_url(), world.dataset)) >= set(world.hashes)


def test_a_deletion_during_the_dump_makes_it_dump_again(
        world: World, deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset deleted after its version was dumped and before its blocks were (the dataset and versions
    first, then the sweeper's blocks and episodes, as the servers do) is not a damaged catalog: the dump is
    taken again, and no longer holds it."""
    doomed = world.alice.datasets.create(f"doomed-{uuid.uuid4().hex[:6]}")
    doomed.upload(episode_arrays(episodes=2, length=10, seed=9)).wait()
    db = deployment.database(world.settings)
    dataset_id = db.datasets.find_one({"name": doomed.name})["_id"]
    segments = [segment["id"] for version in db.versions.find({"dataset_id": dataset_id})
                for segment in version["segments"]]
    add, dump, dumps = backup_deployment.References.add, backup_deployment._dump, []

    def deleting(self: backup_deployment.References, collection: str, doc: dict[str, Any]) -> None:
        if collection == "episodes" and len(dumps) == 1 and db.datasets.find_one({"_id": dataset_id}):
            db.datasets.delete_one({"_id": dataset_id})
            db.versions.delete_many({"dataset_id": dataset_id})
            for name in ("blocks", "episodes"):
                db[name].delete_many({"segment": {"$in": segments}})
        add(self, collection, doc)

    async def counted(*args: Any) -> Any:
        dumps.append(1)
        return await dump(*args)

    monkeypatch.setattr(backup_deployment.References, "add", deleting)
    monkeypatch.setattr(backup_deployment, "_dump", counted)
    tuplehub(world.settings, "backup", str(tmp_path / "backup"))
    assert len(dumps) == 2
    assert doomed.name not in (tmp_path / "backup" / "catalog" / "datasets.jsonl").read_text()
    assert not any(segment in (tmp_path / "backup" / "catalog" / "versions.jsonl").read_text() for segment in segments)
    assert tuplehub(world.settings, "restore", str(tmp_path / "backup"), "--check")["restored"] is False


def test_a_restore_makes_the_bucket_a_fresh_stack_has_not_made_yet(
        world: World, deployment: Deployment, tmp_path: Path) -> None:
    """A fresh stack is restored before its first start, and the bucket is made at that start: the
    restore makes it itself."""
    hashes = {v.number: v.content_hash for v in world.alice.datasets.get(world.dataset).record.versions}
    tuplehub(world.settings, "backup", str(tmp_path / "backup"))
    target = deployment.fresh(bucket=f"restored-{uuid.uuid4().hex[:8]}")
    assert tuplehub(target, "restore", str(tmp_path / "backup"))["restored"]
    with serve_in_thread(target) as copy, Client(copy.url, token=world.alice_token) as alice:
        assert alice.artifacts.get(world.artifact_id).read() == world.artifact_bytes
        assert {v.number: v.content_hash for v in alice.datasets.get(world.dataset).record.versions} == hashes
