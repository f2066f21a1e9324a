"""Dataset versions: committing an ingest's segment, and reading a version's episodes.

A version is the ordered list of segments it is made of. Appending makes a version whose
segments are the parent's plus the new one (the parent's blocks are shared, never copied);
replacing makes one with the new segment only. Commits are optimistic: read the latest version,
build the next, insert it under a unique (dataset, number) key, and start over if another commit
won the race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tuplehub.storage.catalog.base import Catalog
from tuplehub.storage.errors import InvalidUpload, NotFound, StoreUnavailable
from tuplehub.storage.filters.arrow import CompiledFilter, compile_filter, metadata_column
from tuplehub.storage.filters.fields import Kind
from tuplehub.storage.filters.language import FilterNode
from tuplehub.storage.filters.prune import Constraint, narrowing
from tuplehub.storage.models import (
    DatasetRecord,
    EpisodeRead,
    EpisodeRecord,
    Lineage,
    Page,
    SegmentRef,
    UploadMode,
    VersionRecord,
)
from tuplehub.storage.schema import TupleSchema

_COMMIT_ATTEMPTS = 20


def segment_id(job_id: str, attempt: int) -> str:
    """The segment one attempt of an ingest job writes (job ids are hex, so 'x' separates)."""
    return f"{job_id}x{attempt}"


def job_of_segment(segment: str) -> str:
    return segment.partition("x")[0]


async def get_version(catalog: Catalog, dataset: DatasetRecord, number: int | None) -> VersionRecord:
    """Version ``number`` of ``dataset`` (the latest when None), or :class:`NotFound`."""
    versions = await catalog.list_versions(dataset.id)
    if not versions:
        raise NotFound(f"dataset {dataset.name!r} has no versions yet; upload data first", name=dataset.name)
    if number is None:
        return versions[-1]
    for version in versions:
        if version.number == number:
            return version
    raise NotFound(f"dataset {dataset.name!r} has no version {number} (latest is {versions[-1].number})",
                   name=dataset.name, version=number)


async def get_version_by_id(catalog: Catalog, dataset_id: str, number: int | None) -> VersionRecord:
    """:func:`get_version` for jobs, which hold a dataset's id: the dataset or the version may have
    been deleted since the job was queued, and either is :class:`NotFound` naming what is gone."""
    dataset = await catalog.get_dataset_by_id(dataset_id)
    if dataset is None:
        raise NotFound(f"the dataset (id {dataset_id}) was deleted", dataset_id=dataset_id)
    return await get_version(catalog, dataset, number)


async def commit_segment(catalog: Catalog, dataset_id: str, *, mode: UploadMode, segment: SegmentRef,
                         schema: TupleSchema, job_id: str, lineage: Lineage | None = None) -> VersionRecord:
    """Make an ingested segment visible as the dataset's next version, exactly once per job."""
    for _ in range(_COMMIT_ATTEMPTS):
        done = await catalog.find_version_by_job(job_id)
        if done is not None:
            return done
        versions = await catalog.list_versions(dataset_id)
        parent = versions[-1] if versions else None
        segments = [segment]
        if mode == UploadMode.append and parent is not None:
            check_appendable(parent, schema)
            shared = await catalog.find_shared_episode_id(segment.id, [s.id for s in parent.segments])
            if shared is not None:
                raise InvalidUpload(f"episode {shared!r} is already in version {parent.number}; appended "
                                    "episodes need new ids (or upload with mode=replace)",
                                    column="episode_id", reason="duplicate-episode")
            segments = [*parent.segments, segment]
        version = VersionRecord(dataset_id=dataset_id, number=(parent.number + 1) if parent else 1, mode=mode,
                                parent=parent.number if parent else None, segments=segments,
                                tuple_schema=schema, job_id=job_id, lineage=lineage)
        if await catalog.insert_version(version):
            return version
    raise StoreUnavailable("too many concurrent commits to this dataset; the ingest will be retried")


def check_appendable(parent: VersionRecord, schema: TupleSchema) -> None:
    """An append must have the parent's columns and types, or blocks could not be read together."""
    old = parent.tuple_schema
    for name in ("episode_id", "observation", "action", "reward", "info"):
        before, after = getattr(old, name), getattr(schema, name)
        if before != after:
            def show(value: Any) -> str:
                return value.describe() if hasattr(value, "describe") else str(value)
            raise InvalidUpload(f"is {show(after)} in the upload but {show(before)} in version {parent.number}; "
                                "append needs the same schema (or upload with mode=replace)",
                                column=name, reason="schema-mismatch")


def episode_table(records: Sequence[EpisodeRecord], first_index: int,
                  metadata_paths: Mapping[str, Kind | None]) -> pa.Table:
    """Episode records as an Arrow table, with a column per metadata path a filter reads.

    ``metadata_paths`` maps each path to the kind of value the filter compares it with.
    """
    columns: dict[str, Any] = {
        "segment": pa.array([r.segment for r in records], pa.string()),
        "local": pa.array([r.index for r in records], pa.int32()),
        "index": pa.array([first_index + r.index for r in records], pa.int64()),
        "episode_id": pa.array([r.episode_id for r in records]),
        "length": pa.array([r.length for r in records], pa.int64()),
        "return": pa.array([r.return_ for r in records], pa.float64()),
        "reward_min": pa.array([r.reward_min for r in records], pa.float64()),
        "reward_max": pa.array([r.reward_max for r in records], pa.float64()),
        "first_step": pa.array([r.first_step for r in records], pa.int64()),
        "last_step": pa.array([r.last_step for r in records], pa.int64()),
        "terminated": pa.array([r.terminated for r in records], pa.bool_()),
        "truncated": pa.array([r.truncated for r in records], pa.bool_()),
        "termination": pa.array(["terminated" if r.terminated else "truncated" if r.truncated else "none"
                                 for r in records], pa.string()),
    }
    for path, kind in sorted(metadata_paths.items()):
        columns[path] = metadata_column([_lookup(r.metadata, path.split(".")[1:]) for r in records], kind)
    return pa.table(columns)


def _lookup(metadata: dict[str, Any], keys: list[str]) -> Any:
    value: Any = metadata
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass
class SegmentEpisodes:
    """One segment's episode records and, as a table, those that pass the episode filter."""

    segment: SegmentRef
    first_index: int
    records: list[EpisodeRecord]
    selected: pa.Table


async def select_episodes(catalog: Catalog, version: VersionRecord, node: FilterNode | None,
                          *, also: CompiledFilter | None = None) -> list[SegmentEpisodes]:
    """Per segment of ``version``, the episodes that pass the episode filter.

    The tables carry every metadata column that the episode filter or ``also`` (a tuple filter) reads.
    """
    compiled = compile_filter(node, "episode", version.tuple_schema)
    constraints: list[Constraint] = narrowing(node, "episode", version.tuple_schema)
    paths: dict[str, Kind | None] = {}
    for source in (compiled, also) if also is not None else (compiled,):
        for ref in source.fields:
            if ref.column.startswith("metadata."):
                paths[ref.column] = source.metadata_kinds.get(ref.column, paths.get(ref.column))
    out, offset = [], 0
    for segment in version.segments:
        records = await catalog.list_episodes(segment.id, constraints)
        table = await asyncio.to_thread(episode_table, records, offset, paths)  # CPU-bound for big segments
        if node is not None:
            table = await asyncio.to_thread(compiled.apply, table)
        out.append(SegmentEpisodes(segment, offset, records, table))
        offset += segment.episodes
    return out


async def list_episodes(catalog: Catalog, version: VersionRecord, node: FilterNode | None, *,
                        offset: int, limit: int) -> Page[EpisodeRead]:
    """A page of the version's episodes that pass ``node``, in version order."""
    selected = await select_episodes(catalog, version, node)
    total = sum(len(part.selected) for part in selected)
    items: list[EpisodeRead] = []
    skip = offset
    for part in selected:
        wanted = part.selected.slice(skip, max(0, limit - len(items))).column("local").to_pylist()
        skip = max(0, skip - len(part.selected))
        by_index = {record.index: record for record in part.records}
        items += [EpisodeRead.model_validate({**by_index[local].model_dump(), "index": part.first_index + local})
                  for local in wanted]
    return Page(items=items, total=total, offset=offset, limit=limit)
