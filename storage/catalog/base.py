"""The catalog interface: the only view of persistent state that the API and workers have.

Two implementations pass one contract suite (``tests/test_catalog_contract.py``): SQLite for the
embedded default and MongoDB for deployments. Neither needs multi-document transactions: ingest
writes blocks and episodes under a segment id no version references yet, then
:meth:`Catalog.insert_version` makes them visible in one write that a unique index guards.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Protocol

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


class Catalog(Protocol):
    # --- datasets -----------------------------------------------------------------------------
    async def create_dataset(self, record: DatasetRecord) -> DatasetRecord:
        """Store a new dataset; :class:`Conflict` if the name is taken."""

    async def get_dataset(self, name: str) -> DatasetRecord:
        """The dataset called ``name``, or :class:`NotFound`."""

    async def list_datasets(self, *, name: str | None, tag: str | None, offset: int,
                            limit: int) -> tuple[list[DatasetSummary], int]:
        """A page of datasets (name substring, exact tag) and the total number that match."""

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

    async def read_blocks(self, segment: str, seqs: Sequence[int]) -> AsyncIterator[BlockRecord]:
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

    async def update_job(self, job_id: str, **fields: Any) -> None:
        """Set fields of a job that has not finished (progress, heartbeat)."""

    async def finish_job(self, job_id: str, status: JobStatus, *, result: dict[str, Any] | None = None,
                         error: dict[str, Any] | None = None) -> bool:
        """Record a job's outcome once; False if it had already finished."""

    async def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now, or ask a running one to stop at its next checkpoint."""

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
