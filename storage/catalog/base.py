"""The catalog interface: the only view of persistent state that the API and workers have.

Two implementations pass one contract suite (``tests/test_catalog_contract.py``): SQLite for the
embedded default and MongoDB for deployments. Neither needs multi-document transactions: ingest
writes blocks and episodes under a segment id no version references yet, then
:meth:`Catalog.insert_version` makes them visible in one write that a unique index guards.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

from tuplehub.storage.access import StoredRecord
from tuplehub.storage.blocks import BlockRecord
from tuplehub.storage.errors import ConfigError
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
)

M = TypeVar("M", bound=BaseModel)

RecordKind = Literal["users", "groups", "memberships", "roles", "refresh_tokens", "api_tokens", "audit", "benchmarks",
                     "artifacts", "metrics", "metric_frames"]

# Records whose ``unique`` key must not repeat within a namespace. Users and groups share one,
# so nobody can sign up as a group or found a group named after a user.
NAMESPACES: dict[RecordKind, str] = {
    "users": "principal", "groups": "principal", "roles": "role", "refresh_tokens": "refresh",
    "api_tokens": "api-token", "memberships": "membership", "audit": "audit", "benchmarks": "benchmark",
    "artifacts": "artifact", "metrics": "metric", "metric_frames": "metric-frame",
}


@dataclass(frozen=True)
class ReadScope:
    """What a caller may list: its own items, items published to ``groups``, public ones if ``public``."""

    owner: str | None
    groups: frozenset[str]
    public: bool


def sort_stamp(when: datetime) -> str:
    """A timestamp as text that sorts like time (fixed width, always UTC)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def check_fields(model: type[BaseModel], fields: Mapping[str, Any], *, query: bool = True) -> None:
    """Keys come from our code, never from a request, and query values are plain: a mapping would
    read as operators to a document database. This guard keeps it that way."""
    unknown = set(fields) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    if not query:
        return
    nested = sorted(key for key, value in fields.items() if isinstance(value, Mapping))
    if nested:
        raise ValueError(f"query values must be plain, not mappings: {nested}")


class Catalog(Protocol):
    # --- datasets -----------------------------------------------------------------------------
    async def create_dataset(self, record: DatasetRecord) -> DatasetRecord:
        """Store a new dataset; :class:`Conflict` if the name is taken."""

    async def get_dataset(self, name: str) -> DatasetRecord:
        """The dataset called ``name``, or :class:`NotFound` (callers check read access after)."""

    async def get_dataset_by_id(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset with this id, or None (links and lineage refer to datasets by id)."""

    async def list_datasets(self, *, name: str | None, tag: str | None, offset: int, limit: int,
                            readable: ReadScope | None = None, owner: str | None = None,
                            benchmark: str | None = None) -> tuple[list[DatasetSummary], int]:
        """A page of datasets (name substring, exact tag, owner, benchmark) that ``readable`` admits
        (None: all)."""

    async def update_dataset(self, dataset_id: str, **fields: Any) -> DatasetRecord:
        """Set card fields of a dataset (description, tags, authors...); :class:`NotFound` if gone."""

    async def share_dataset(self, dataset_id: str, *, add_groups: Sequence[str] = (),
                            remove_groups: Sequence[str] = (), public: bool | None = None) -> DatasetRecord:
        """Change who a dataset is published to, atomically (two publishes never lose each other's
        groups); ``public`` None leaves public view as it is. :class:`NotFound` if gone."""

    async def delete_dataset(self, dataset_id: str) -> None:
        """Remove a dataset and its versions; their segments become orphans the sweeper removes."""

    # --- versions -----------------------------------------------------------------------------
    async def list_versions(self, dataset_id: str) -> list[VersionRecord]:
        """Every version of a dataset, oldest first."""

    async def insert_version(self, version: VersionRecord) -> bool:
        """Make a version visible; False if its number was taken meanwhile (the caller retries)."""

    async def find_version_by_job(self, job_id: str) -> VersionRecord | None:
        """The version an ingest job committed, so a retried commit returns it instead of a copy."""

    # --- segments: blocks and episodes ----------------------------------------------------------
    async def put_blocks(self, blocks: Sequence[BlockRecord]) -> None:
        """Insert or overwrite blocks by (segment, seq): a retried ingest never duplicates."""

    async def list_blocks(self, segment: str) -> list[BlockRecord]:
        """Every block of a segment in order, without ``data`` and ``tail`` (for pruning)."""

    def read_blocks(self, segment: str, seqs: Sequence[int]) -> AsyncIterator[BlockRecord]:
        """The named blocks with their bytes, in ``seqs`` order, one at a time (bounded memory)."""

    async def put_episodes(self, episodes: Sequence[EpisodeRecord]) -> None:
        """Insert or overwrite episodes by (segment, index)."""

    async def list_episodes(self, segment: str, constraints: Sequence[Constraint] = ()) -> list[EpisodeRecord]:
        """Episodes of a segment in index order that satisfy every constraint."""

    async def find_shared_episode_id(self, segment: str, others: Sequence[str]) -> int | str | None:
        """An episode id of ``segment`` that also occurs in one of ``others``, if any."""

    async def delete_segment(self, segment: str) -> None:
        """Remove a segment's blocks and episodes (a failed or abandoned ingest's leftovers)."""

    async def list_segments(self) -> set[str]:
        """Ids of every segment that has blocks or episodes."""

    # --- uploads --------------------------------------------------------------------------------
    async def create_upload(self, record: UploadRecord) -> UploadRecord: ...

    async def get_upload(self, upload_id: str) -> UploadRecord:
        """The upload session, or :class:`NotFound`."""

    async def transition_upload(self, upload_id: str, expected: UploadStatus, new: UploadStatus,
                                **fields: Any) -> bool:
        """Move an upload from ``expected`` to ``new`` status; False if it was not in ``expected``."""

    async def list_uploads(self, status: UploadStatus, *, expires_before: datetime) -> list[UploadRecord]: ...

    async def list_open_uploads(self, dataset_id: str, owner: str, *, expires_after: datetime) -> list[UploadRecord]:
        """``owner``'s open sessions on a dataset that expire after ``expires_after``, newest first."""

    # --- jobs -----------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> JobRecord:
        """Store a job; return the stored one instead if its id exists or a live job holds its ``dedup_key``."""

    async def get_job(self, job_id: str) -> JobRecord:
        """The job, or :class:`NotFound`."""

    async def list_jobs(self, *, owner: str | None, status: JobStatus | None, kind: JobKind | None,
                        offset: int, limit: int) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and the total that match."""

    async def jobs_with_status(self, statuses: Sequence[JobStatus]) -> list[JobRecord]: ...

    async def claim_job(self, job_id: str, *, worker: str) -> JobRecord | None:
        """Start the job's next attempt (``attempts`` + 1); None if it finished or was cancelled."""

    async def hand_back_job(self, job_id: str, *, attempt: int) -> bool:
        """Queue a running job again whose worker stopped cleanly during ``attempt``; False if it moved on."""

    async def update_job(self, job_id: str, **fields: Any) -> None:
        """Set fields of a job that has not finished (progress, heartbeat)."""

    async def finish_job(self, job_id: str, status: JobStatus, *, result: dict[str, Any] | None = None,
                         error: dict[str, Any] | None = None) -> bool:
        """Record a job's outcome once; False if it had already finished."""

    async def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now, or ask a running one to stop at its next checkpoint."""

    # --- small records: users, groups, memberships, roles, tokens, audit, benchmarks -------------
    async def insert_record(self, kind: RecordKind, record: StoredRecord, *, unique: str | None = None) -> None:
        """Store a new record; :class:`Conflict` if ``unique`` is taken in the kind's namespace."""

    async def get_record(self, kind: RecordKind, model: type[M], **equals: Any) -> M:
        """The one record whose fields equal ``equals``, or :class:`NotFound`."""

    async def find_records(self, kind: RecordKind, model: type[M], *, where: Mapping[str, Any] | None = None,
                           since: datetime | None = None, until: datetime | None = None,
                           newest_first: bool = False, offset: int = 0,
                           limit: int | None = None) -> tuple[list[M], int]:
        """Records whose fields equal ``where`` (a list value means any of), by creation time, and the total."""

    async def update_record(self, kind: RecordKind, model: type[M], record_id: str, *,
                            expected: Mapping[str, Any] | None = None, **changes: Any) -> M | None:
        """Set ``changes`` if the record still matches ``expected`` (compare-and-swap); None otherwise."""

    async def delete_records(self, kind: RecordKind, model: type[BaseModel], **equals: Any) -> int:
        """Remove every record whose fields equal ``equals``; how many went."""

    # --- lifecycle ------------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the catalog cannot answer."""

    async def aclose(self) -> None: ...


_BACKENDS = {
    "sqlite": "tuplehub.storage.catalog.sqlite:SQLiteCatalog",
    "mongodb": "tuplehub.storage.catalog.mongo:MongoCatalog",
    "mongodb+srv": "tuplehub.storage.catalog.mongo:MongoCatalog",
}


async def open_catalog(url: str) -> Catalog:
    """Pick the backend from the URL scheme; its driver is imported only now."""
    scheme = url.partition("://")[0]
    if scheme not in _BACKENDS:
        raise ConfigError(f"catalog URL {url!r}: the scheme must be one of {sorted(_BACKENDS)}")
    module, _, name = _BACKENDS[scheme].partition(":")
    backend = getattr(importlib.import_module(module), name)
    return await backend.connect(url)
