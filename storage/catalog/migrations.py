"""Catalog schema versions: every migration in one list, each run once, by one process, under a lock.

A catalog records the version of its layout (SQLite: ``PRAGMA user_version`` in the file header;
MongoDB: the ``meta`` collection's ``schema`` document). A catalog written before versions were
recorded reads as 0. Every process that opens the catalog (API replicas, workers) compares it with
:data:`SCHEMA_VERSION` first:

- equal: nothing to do;
- older: the missing migrations run in order, under the catalog's lock (SQLite's write lock,
  ``BEGIN IMMEDIATE``; MongoDB: a lock document with an owner and an expiry), so of replicas that
  start together one runs them and the others wait, then find the catalog current;
- newer: a later release upgraded it; this one refuses to start rather than write records the
  newer code would misread (a downgrade is a restore from backup).

A migration must also be safe on a fresh catalog, which runs them all, and must leave the catalog
usable by the previous release: during a rolling restart its replicas, which checked the version
when they started, keep running on the migrated catalog until they are replaced (add; rename or
remove only in a later release). Add one by appending to :data:`MIGRATIONS` with the next number;
give each backend a step only where it has work to do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuplehub.storage.errors import ConfigError


def _nothing(_: sqlite3.Connection) -> None:
    return None


async def _nothing_async(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Migration:
    """Version ``version``'s change: ``sqlite`` runs inside the migrating write transaction (all
    or nothing); ``mongo`` gets the database and must be idempotent (a lone server has no
    multi-document transaction, so a migration cut short is run again by the next start)."""

    version: int
    purpose: str
    sqlite: Callable[[sqlite3.Connection], None] = _nothing
    mongo: Callable[[Any], Awaitable[None]] = _nothing_async


def _episodes_without_rowid(conn: sqlite3.Connection) -> None:
    """Catalogs made before episode rows dropped their rowid keep a rowid table whose docs repeat
    the segment id and the integer columns (482 against 331 bytes an episode): rebuild it."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'episodes'").fetchone()
    if "WITHOUT ROWID" in sql.upper():
        return
    conn.execute(sql.replace("episodes", "episodes_rebuilt", 1) + " WITHOUT ROWID")
    conn.execute("""INSERT INTO episodes_rebuilt SELECT segment, idx, episode_key, length, return, reward_min,
                    reward_max, first_step, last_step,
                    json_remove(doc, '$.segment', '$.index', '$.length', '$.first_step', '$.last_step')
                    FROM episodes""")
    conn.execute("DROP TABLE episodes")
    conn.execute("ALTER TABLE episodes_rebuilt RENAME TO episodes")
    conn.execute("CREATE INDEX episodes_by_key ON episodes (episode_key, segment)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "record the schema version (catalogs from before it read as 0)"),
    Migration(2, "SQLite episode rows without a rowid and without repeating their columns in the doc",
              sqlite=_episodes_without_rowid),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def pending(found: int, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations a catalog at version ``found`` still needs, in order; refuse a newer catalog."""
    known = migrations[-1].version if migrations else 0
    if found > known:
        raise ConfigError(
            f"the catalog {where} has schema version {found}, newer than this tuplehub understands ({known}): "
            "a later release upgraded it", hint="run that release (or a newer one) again; going back to this "
                                                "one means restoring a backup taken before the upgrade")
    return [migration for migration in migrations if migration.version > found]
