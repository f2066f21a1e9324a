"""The ``export`` job: write the rows of a dataset version that pass the filters to the object store.

Episode filters are answered from episode records; blocks whose episodes were all filtered out,
or whose zone maps rule out the tuple filter, are never read; the rest are decoded one at a time,
filtered exactly by the compiled Arrow expression and appended to the result file, so memory
stays at about one block whatever the size of the export.

Sampling and rebalancing come after the filters, in this order: an episode sample narrows the
episodes before any block is read; rebalancing keeps every row matching its filter and a seeded
fraction of the rest; a row sample keeps a seeded fraction of rows, or exactly ``n`` of them
(which takes a first pass that only computes the rows' keys, 8 bytes a row).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.storage import blocks, sampling
from tuplehub.storage.exports import export_columns, output_schema
from tuplehub.storage.filters.arrow import CompiledFilter, compile_filter
from tuplehub.storage.filters.prune import may_match
from tuplehub.storage.models import ExportCreate, ExportFormat, Rebalance, Sampling, VersionRecord
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.schema import TupleSchema
from tuplehub.storage.versions import SegmentEpisodes, get_version_by_id, select_episodes
from tuplehub.workers.context import JobRun, WorkerContext, run_job


@dataclass
class ExportPlan:
    """What an export request means for one schema: columns out, filters, episode fields needed."""

    schema: TupleSchema
    request: ExportCreate
    where: CompiledFilter
    keep: CompiledFilter | None
    columns: list[str]
    output: pa.Schema

    @classmethod
    def build(cls, schema: TupleSchema, request: ExportCreate) -> ExportPlan:
        columns = export_columns(schema, request)
        where = compile_filter(request.where, "tuple", schema)
        keep = compile_filter(request.rebalance.keep, "tuple", schema) if request.rebalance else None
        return cls(schema, request, where, keep, columns, output_schema(schema, columns))

    @property
    def episode_paths(self) -> set[str]:
        return self.where.columns("episode") | (self.keep.columns("episode") if self.keep else set())

    @property
    def row_sample(self) -> Sampling | None:
        sample = self.request.sample
        return sample if sample is not None and sample.level == "tuple" else None

    def rows(self, block: blocks.BlockRecord, episodes: SegmentEpisodes, lookup: np.ndarray,
             threshold: np.uint64 | None = None) -> pa.Table:
        """The exported rows of one block, in the output schema (``threshold``: see :meth:`keys`)."""
        table = self.filtered(block, episodes, lookup)
        sample = self.row_sample
        if threshold is not None and sample is not None:
            chosen = self._row_keys(table, sample) <= threshold
            table = table.filter(pa.array(~chosen if sample.complement else chosen))
        return table.select(self.columns).cast(self.output)

    def keys(self, block: blocks.BlockRecord, episodes: SegmentEpisodes, lookup: np.ndarray) -> np.ndarray:
        """The sample keys of the rows that pass everything else (first pass of an exact row sample)."""
        return self._row_keys(self.filtered(block, episodes, lookup), self.row_sample)

    @staticmethod
    def _row_keys(table: pa.Table, sample: Sampling | Rebalance | None) -> np.ndarray:
        assert sample is not None
        return sampling.row_keys(table.column("episode_id").to_numpy(zero_copy_only=False),
                                 table.column("step").to_numpy(), sample.seed)

    def filtered(self, block: blocks.BlockRecord, episodes: SegmentEpisodes, lookup: np.ndarray) -> pa.Table:
        """One block's rows that pass the filter, rebalancing and a row fraction; all columns."""
        table = blocks.decode(block.data)
        if "next_observation" in self.columns:
            next_obs = blocks.next_observations(table, blocks.decode(block.tail), self.schema)
            table = table.append_column("next_observation", next_obs)
        rows = lookup[table.column("episode").to_numpy()]
        keep = rows >= 0
        if not keep.all():
            table, rows = table.filter(pa.array(keep)), rows[keep]
        taken = pa.array(rows)
        table = table.append_column("episode_id", episodes.selected.column("episode_id").take(taken))
        for name in self.episode_paths:
            table = table.append_column(name, episodes.selected.column(name).take(taken))
        if self.request.where is not None:
            table = self.where.apply(table)
        rebalance = self.request.rebalance
        if rebalance is not None and self.keep is not None and len(table):
            kept = self.keep.mask(table)
            rest = sampling.below(self._row_keys(table, rebalance), rebalance.rest_fraction)
            table = table.filter(pa.array(kept | rest))
        sample = self.row_sample
        if sample is not None and sample.fraction is not None and len(table):
            chosen = sampling.below(self._row_keys(table, sample), sample.fraction)
            table = table.filter(pa.array(~chosen if sample.complement else chosen))
        return table


def episode_lookup(episodes: SegmentEpisodes) -> np.ndarray:
    """For each episode index of the segment, its row in ``episodes.selected`` (-1: filtered out)."""
    lookup = np.full(episodes.segment.episodes, -1, dtype=np.int64)
    lookup[episodes.selected.column("local").to_numpy()] = np.arange(len(episodes.selected))
    return lookup


class ResultWriter:
    """Appends tables to one Parquet or Arrow IPC stream object."""

    def __init__(self, objects: ObjectStore, key: str, fmt: ExportFormat, schema: pa.Schema) -> None:
        self.handle = objects.open_write(key)
        if fmt == ExportFormat.parquet:
            # Uncompressed and without dictionaries for floats: this file only travels once, over a
            # fast link, and perf-floor.md shows compression costs more time than it saves.
            self.writer: Any = pq.ParquetWriter(self.handle, schema, compression="none",
                                                use_dictionary=["episode_id"])
        else:
            self.writer = pa.ipc.new_stream(self.handle, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if len(table):
            self.writer.write_table(table)
            self.rows += len(table)

    def close(self) -> None:
        self.writer.close()
        self.handle.close()


async def export(ctx: WorkerContext, job_id: str) -> None:
    await run_job(ctx, job_id, _export, timeout_s=ctx["settings"].export_timeout_s, cleanup=_discard)


async def _export(run: JobRun) -> dict[str, Any]:
    catalog, params = run.catalog, run.job.params
    version = await get_version_by_id(catalog, params["dataset_id"], params["version"])
    request = ExportCreate.model_validate(params["request"])
    plan = ExportPlan.build(version.tuple_schema, request)
    await run.checkpoint(0.0, "plan", "selecting episodes and blocks")
    work = await plan_blocks(run, version, plan)
    total = sum(len(seqs) for _, seqs in work)
    threshold = await row_sample_threshold(run, plan, work)
    writer = await asyncio.to_thread(ResultWriter, run.objects, params["object_key"], request.format, plan.output)
    done, episodes = 0, set()
    try:
        for episodes_of_segment, seqs in work:
            lookup = episode_lookup(episodes_of_segment)
            async for block in catalog.read_blocks(episodes_of_segment.segment.id, seqs):
                table = await asyncio.to_thread(plan.rows, block, episodes_of_segment, lookup, threshold)
                await asyncio.to_thread(writer.write, table)
                if "episode_id" in table.column_names:
                    episodes.update(table.column("episode_id").unique().to_pylist())
                done += 1
                await run.checkpoint(0.98 * done / max(total, 1), "export", f"block {done} of {total}")
    finally:
        await asyncio.to_thread(writer.close)
    size = await asyncio.to_thread(run.objects.size, params["object_key"])
    return {"object_key": params["object_key"], "format": request.format.value, "rows": writer.rows,
            "bytes": size, "episodes": len(episodes) if "episode_id" in plan.columns else None,
            "columns": plan.columns, "blocks_read": total, "version": version.number}


BlockPlan = list[tuple[SegmentEpisodes, list[int]]]


async def row_sample_threshold(run: JobRun, plan: ExportPlan, work: BlockPlan) -> np.uint64 | None:
    """For an exact row sample: the largest key among the ``n`` rows to keep (a first, key-only pass)."""
    sample = plan.row_sample
    if sample is None or sample.n is None:
        return None
    keys = []
    for episodes_of_segment, seqs in work:
        lookup = episode_lookup(episodes_of_segment)
        async for block in run.catalog.read_blocks(episodes_of_segment.segment.id, seqs):
            keys.append(await asyncio.to_thread(plan.keys, block, episodes_of_segment, lookup))
        await run.checkpoint(0.0, "sample", "choosing the rows")
    every = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    if sample.n >= len(every):
        return np.uint64(2**64 - 1)
    return np.partition(every, sample.n - 1)[sample.n - 1]


def _sample_episodes(selected: list[SegmentEpisodes], sample: Sampling | None,
                     schema: TupleSchema) -> list[SegmentEpisodes]:
    """An episode sample over every segment at once: the same episodes whatever the layout."""
    if sample is None or sample.level != "episode":
        return selected
    kind = np.int64 if schema.episode_id == "int" else object  # an empty segment's column has no type
    ids = [np.asarray(part.selected.column("episode_id").to_pylist(), dtype=kind) for part in selected]
    every = np.concatenate(ids) if ids else np.zeros(0, dtype=kind)
    keys = sampling.episode_keys(every, sample.seed)
    wanted = sample.n if sample.n is not None else round((sample.fraction or 0) * len(every))
    chosen = sampling.smallest(keys, wanted)
    if sample.complement:
        chosen = ~chosen
    out, start = [], 0
    for part, part_ids in zip(selected, ids, strict=True):
        mask = chosen[start:start + len(part_ids)]
        start += len(part_ids)
        out.append(replace(part, selected=part.selected.filter(pa.array(mask))))
    return out


async def plan_blocks(run: JobRun, version: VersionRecord, plan: ExportPlan) -> BlockPlan:
    """Blocks to read per segment: those holding a selected episode whose zone maps may match."""
    selected = await select_episodes(run.catalog, version, plan.request.episodes, also=plan.where)
    selected = _sample_episodes(selected, plan.request.sample, plan.schema)
    work = []
    for part in selected:
        if len(part.selected) == 0:
            continue
        locals_ = np.sort(part.selected.column("local").to_numpy())
        seqs = []
        for block in await run.catalog.list_blocks(part.segment.id):
            first = np.searchsorted(locals_, block.first_episode)
            holds_selected = first < len(locals_) and locals_[first] <= block.last_episode
            if holds_selected and may_match(plan.request.where, block.zones, plan.schema):
                seqs.append(block.seq)
        work.append((part, seqs))
    return work


async def _discard(run: JobRun) -> None:
    await asyncio.to_thread(run.objects.delete, run.job.params["object_key"])
