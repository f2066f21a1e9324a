"""Catalog upgrades: the schema version is recorded, migrations run once under a lock, newer is refused.

Each test opens a second catalog on the same storage (a second SQLite connection pool on the file,
a second ``MongoCatalog`` on the database), as another replica starting beside the first would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tuplehub.storage.catalog import Catalog
from tuplehub.storage.catalog import mongo as mongo_module
from tuplehub.storage.catalog.migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from tuplehub.storage.catalog.mongo import MongoCatalog
from tuplehub.storage.catalog.sqlite import SQLiteCatalog
from tuplehub.storage.errors import ConfigError
from tuplehub.storage.models import utcnow

from .factories import episode_record


async def schema_version(catalog: Catalog) -> int:
    if isinstance(catalog, SQLiteCatalog):
        with sqlite3.connect(catalog.path) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
    assert isinstance(catalog, MongoCatalog)
    return await catalog._schema_version()


async def set_schema_version(catalog: Catalog, version: int) -> None:
    if isinstance(catalog, SQLiteCatalog):
        conn = sqlite3.connect(catalog.path, isolation_level=None)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.close()
    else:
        assert isinstance(catalog, MongoCatalog)
        await catalog.db.meta.update_one({"_id": "schema"}, {"$set": {"version": version}}, upsert=True)


async def start_beside(catalog: Catalog) -> Catalog:
    """What another replica's start does to the same catalog: open it and migrate."""
    if isinstance(catalog, SQLiteCatalog):
        return await SQLiteCatalog.connect(f"sqlite:///{catalog.path}")
    assert isinstance(catalog, MongoCatalog)
    replica = MongoCatalog(catalog.db)
    await replica.prepare()
    return replica


@pytest.fixture
async def replicas(catalog: Catalog) -> AsyncIterator[tuple[Catalog, Catalog]]:
    """Two catalogs on one storage, each started (so at the code's version)."""
    first, second = await start_beside(catalog), await start_beside(catalog)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_new_catalog_records_the_code_s_schema_version(catalog: Catalog) -> None:
    assert await schema_version(catalog) == SCHEMA_VERSION
    assert await catalog.migrate() == []  # type: ignore[attr-defined]  # a second start has nothing to do


async def test_two_replicas_starting_together_run_a_migration_exactly_once(
        catalog: Catalog, replicas: tuple[Catalog, Catalog]) -> None:
    ran: list[str] = []

    def count_sqlite(conn: sqlite3.Connection) -> None:
        ran.append("sqlite")
        time.sleep(0.3)  # long enough for the other start to reach the lock
        conn.execute("CREATE TABLE tally (n INTEGER)")  # fails if a second run came after the first
        conn.execute("INSERT INTO tally VALUES (1)")

    async def count_mongo(db: object) -> None:
        ran.append("mongo")
        await asyncio.sleep(0.3)
        await db.tally.insert_one({"n": 1})  # type: ignore[attr-defined]

    upgrade = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "count", sqlite=count_sqlite, mongo=count_mongo))
    first, second = replicas
    applied = await asyncio.gather(first.migrate(upgrade), second.migrate(upgrade))  # type: ignore[attr-defined]
    assert sorted(applied) == [[], [SCHEMA_VERSION + 1]]
    assert len(ran) == 1
    assert await schema_version(catalog) == SCHEMA_VERSION + 1
    if isinstance(catalog, SQLiteCatalog):
        with sqlite3.connect(catalog.path) as conn:
            assert conn.execute("SELECT count(*) FROM tally").fetchone()[0] == 1
    else:
        assert await catalog.db.tally.count_documents({}) == 1  # type: ignore[attr-defined]
    # The code that made it is the code now: a third start under it finds nothing to do.
    assert await first.migrate(upgrade) == []  # type: ignore[attr-defined]


async def test_a_catalog_newer_than_the_code_is_refused(catalog: Catalog) -> None:
    await set_schema_version(catalog, SCHEMA_VERSION + 1)
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this tuplehub") as caught:
        await start_beside(catalog)
    assert "restoring a backup" in caught.value.extra["hint"]
    assert await schema_version(catalog) == SCHEMA_VERSION + 1  # left as the newer release wrote it


async def test_a_catalog_from_before_versions_is_migrated_and_keeps_its_records(catalog: Catalog) -> None:
    episodes = [episode_record("seg1", index, metadata={"policy": "expert"}) for index in range(3)]
    await catalog.put_episodes(episodes)
    if isinstance(catalog, SQLiteCatalog):
        make_pre_version_sqlite(catalog)
    else:
        await catalog.db.meta.delete_many({})  # type: ignore[attr-defined]
    assert await schema_version(catalog) == 0

    started = await start_beside(catalog)
    try:
        assert await schema_version(catalog) == SCHEMA_VERSION
        assert await started.list_episodes("seg1") == episodes
    finally:
        await started.aclose()
    if isinstance(catalog, SQLiteCatalog):  # migration 2 rebuilt the old rowid table and compacted its docs
        with sqlite3.connect(catalog.path) as conn:
            sql, doc = conn.execute("SELECT (SELECT sql FROM sqlite_master WHERE name = 'episodes'), doc "
                                    "FROM episodes LIMIT 1").fetchone()
        assert "WITHOUT ROWID" in sql
        assert '"segment"' not in doc
        assert '"first_step"' not in doc


def make_pre_version_sqlite(catalog: SQLiteCatalog) -> None:
    """Turn the file back into what releases before schema versions wrote: no version, and episode
    rows in a rowid table whose docs hold every field."""
    conn = sqlite3.connect(catalog.path, isolation_level=None)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'episodes'").fetchone()
    conn.execute(sql.replace("episodes", "episodes_old", 1).replace("WITHOUT ROWID", ""))
    conn.execute("""INSERT INTO episodes_old SELECT segment, idx, episode_key, length, return, reward_min, reward_max,
                    first_step, last_step, json_set(doc, '$.segment', segment, '$.index', idx, '$.length', length,
                    '$.first_step', first_step, '$.last_step', last_step) FROM episodes""")
    conn.execute("DROP TABLE episodes")
    conn.execute("ALTER TABLE episodes_old RENAME TO episodes")
    conn.execute("CREATE INDEX episodes_by_key ON episodes (episode_key, segment)")
    conn.execute("PRAGMA user_version = 0")
    conn.close()


async def test_a_migration_lock_left_by_a_dead_process_is_taken_over_after_it_expires(catalog: Catalog) -> None:
    if not isinstance(catalog, MongoCatalog):
        pytest.skip("SQLite's write lock dies with its process")
    await catalog.db.meta.delete_many({})
    await catalog.db.meta.insert_one({"_id": "migration-lock", "owner": "gone:1",
                                      "expires_at": utcnow() - timedelta(seconds=1)})
    assert await catalog.migrate() == [migration.version for migration in MIGRATIONS]
    lock = await catalog.db.meta.find_one({"_id": "migration-lock"})
    assert lock["owner"] is None  # released when done


async def test_a_migration_that_fails_leaves_the_catalog_as_it_was(catalog: Catalog) -> None:
    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (n INTEGER)")
        raise RuntimeError("the disk is full")

    async def half_done_mongo(db: object) -> None:
        raise RuntimeError("the disk is full")

    broken = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "breaks", sqlite=half_done, mongo=half_done_mongo))
    with pytest.raises(RuntimeError, match="the disk is full"):
        await catalog.migrate(broken)  # type: ignore[attr-defined]
    assert await schema_version(catalog) == SCHEMA_VERSION  # the next start runs it again
    if isinstance(catalog, SQLiteCatalog):  # one transaction: its half is gone too
        with sqlite3.connect(catalog.path) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    else:  # the lock is free again for the next start
        assert (await catalog.db.meta.find_one({"_id": "migration-lock"}))["owner"] is None


class _FirstRenewalFails:
    """The database, except that the first renewal of the migration lock raises (a network blip)."""

    def __init__(self, db: Any) -> None:
        self.db, self.name, self.failed = db, db.name, False

    def __getattr__(self, name: str) -> Any:
        collection = getattr(self.db, name)
        if name != "meta":
            return collection
        outer = self

        class Meta:
            def __getattr__(self, method: str) -> Any:
                return getattr(collection, method)

            async def update_one(self, query: dict[str, Any], change: dict[str, Any], **kwargs: Any) -> Any:
                if not outer.failed and "owner" in query and set(change["$set"]) == {"expires_at"}:
                    outer.failed = True
                    raise ConnectionError("network blip")
                return await collection.update_one(query, change, **kwargs)

        return Meta()


async def test_a_failed_lock_renewal_keeps_the_lock(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A renewer that died at its first error let the lock expire while the migration still ran."""
    if not isinstance(catalog, MongoCatalog):
        pytest.skip("SQLite's lock is its write transaction")
    monkeypatch.setattr(mongo_module, "_LOCK_TTL_S", 0.3)
    migrating = MongoCatalog(_FirstRenewalFails(catalog.db))  # type: ignore[arg-type]
    taken_by_other: list[bool] = []

    async def slow(db: object) -> None:
        await asyncio.sleep(1.0)  # three lock lives: renewals at 0.1 (fails), 0.2, 0.3 ...
        taken_by_other.append(await catalog._take_lock("other:2"))  # type: ignore[attr-defined]

    await migrating.migrate((*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "slow", mongo=slow)))
    assert migrating.db.failed  # type: ignore[attr-defined]
    assert taken_by_other == [False]
