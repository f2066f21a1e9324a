"""What the ``metrics`` job reads from a version: one pass over its blocks, memory bounded.

Every row contributes a few scalars (episode, step, reward, ends, a seeded row key: about 30 bytes)
and, once a frame is known, its coverage cell as one 64-bit key. Observations and actions, the wide columns, are
kept only for a seeded subsample of at most ``sample_rows`` rows (plus every episode's first row
when a policy evaluation needs their values), so memory follows the sample, not the version.

Row keys come from (episode id, step) and the seed, as for exports, so the same seed picks the
same rows however the version was uploaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tuplehub.storage import sampling
from tuplehub.storage.metrics import MetricFrame, MetricResult
from tuplehub.storage.models import ExportCreate, ExportFormat, VersionRecord
from tuplehub.storage.schema import TupleSchema, column_to_numpy
from tuplehub.workers.context import JobRun
from tuplehub.workers.jobs.export import ExportPlan, episode_lookup, plan_blocks
from tuplehub.workers.metrics.coverage import cell_keys
from tuplehub.workers.metrics.frame import coverage_cells, split_columns

SAMPLED = ("observation", "action", "reward", "terminated", "next_observation", "next_action", "next_known",
           "initial", "key")


@dataclass
class Cells:
    """The coverage cell of every row under a frame and a number of bins, as one 64-bit key a row."""

    frame: MetricFrame
    bins: int
    parts: list[np.ndarray] = field(default_factory=list)
    clipped_rows: float = 0.0

    def add(self, observation: np.ndarray, action: np.ndarray) -> None:
        continuous, discrete = split_columns(observation, action)
        cells, clipped = coverage_cells(self.frame, continuous, discrete, self.bins)
        self.parts.append(cell_keys(cells))
        self.clipped_rows += clipped * len(cells)

    @property
    def keys(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.uint64)

    @property
    def clipped(self) -> float:
        rows = sum(len(part) for part in self.parts)
        return self.clipped_rows / rows if rows else 0.0


@dataclass
class VersionData:
    rows: int
    episode: np.ndarray  # int64, one code per episode, rows of an episode contiguous
    step: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    key: np.ndarray  # uint64 seeded row keys
    sample: dict[str, np.ndarray]
    sample_fraction: float
    cells: Cells | None

    def sampled_below(self, rows: int) -> np.ndarray:
        """A mask over the sample: the (nested, seeded) subsample of about ``rows`` of all rows."""
        return sampling.below(self.sample["key"], rows / max(self.rows, 1))

    def sampled(self, chosen: np.ndarray, *names: str) -> list[np.ndarray]:
        """Columns of the sample's ``chosen`` rows; no copy when that is all of them (the usual case)."""
        every = bool(chosen.all())
        return [self.sample[name] if every else self.sample[name][chosen] for name in names]


@dataclass
class _Scan:
    """Accumulates one version's tables; a table's last row waits for the next table (its successor)."""

    schema: TupleSchema
    threshold: float
    seed: int
    keep_initial: bool
    cells: Cells | None
    scalars: dict[str, list[np.ndarray]] = field(default_factory=lambda: {
        name: [] for name in ("episode", "step", "reward", "terminated", "truncated", "key")})
    sample: dict[str, list[np.ndarray]] = field(default_factory=lambda: {name: [] for name in SAMPLED})
    pending: pa.Table | None = None
    last_id: object = None
    episodes: int = 0

    def feed(self, table: pa.Table) -> None:
        if self.pending is not None:
            table = pa.concat_tables([self.pending, table])
        if len(table) > 1:
            self._take(table, rows=len(table) - 1)
        self.pending = table.slice(len(table) - 1) if len(table) else None

    def close(self) -> None:
        if self.pending is not None:
            self._take(self.pending, rows=1)
            self.pending = None

    def _take(self, table: pa.Table, *, rows: int) -> None:
        """Record the first ``rows`` rows of ``table``; the rest only tell what follows them."""
        ids = table.column("episode_id").combine_chunks()
        steps = table.column("step").to_numpy()
        starts = np.ones(len(table), dtype=bool)
        if len(table) > 1:
            starts[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(table) - 1)).to_numpy(zero_copy_only=False)
        starts[0] = self.last_id is None or ids[0].as_py() != self.last_id
        codes = self.episodes - 1 + np.cumsum(starts)
        follows = np.zeros(len(table), dtype=bool)  # the next row is this episode's next step
        follows[:-1] = ~starts[1:] & (steps[1:] == steps[:-1] + 1)
        keys = sampling.row_keys(ids.to_numpy(zero_copy_only=False), steps, self.seed)
        reward = table.column("reward").to_numpy().astype(np.float64)
        terminated = table.column("terminated").to_numpy(zero_copy_only=False)
        truncated = table.column("truncated").to_numpy(zero_copy_only=False)
        for name, values in (("episode", codes), ("step", steps), ("reward", reward), ("terminated", terminated),
                             ("truncated", truncated), ("key", keys)):
            self.scalars[name].append(values[:rows])
        observation = column_to_numpy(table.column("observation"), self.schema.observation)
        action = column_to_numpy(table.column("action"), self.schema.action)
        if self.cells is not None:
            self.cells.add(observation[:rows], action[:rows])
        chosen = sampling.below(keys, self.threshold)
        if self.keep_initial:
            chosen |= starts
        chosen[rows:] = False
        if chosen.any():
            next_action = np.concatenate([action[1:], action[-1:]])  # meaningful where ``follows``
            picked = {"observation": observation, "action": action, "reward": reward, "terminated": terminated,
                      "next_action": next_action, "next_known": follows, "initial": starts.copy(), "key": keys}
            if "next_observation" in table.column_names:
                picked["next_observation"] = column_to_numpy(table.column("next_observation"),
                                                             self.schema.observation)
            for name, values in picked.items():
                self.sample[name].append(values[chosen])
        self.episodes = int(codes[rows - 1]) + 1
        self.last_id = ids[rows - 1].as_py()

    def result(self, rows: int) -> VersionData:
        joined = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in self.scalars.items()}
        sample = {}
        for name in list(self.sample):  # one column at a time: the blocks' copies go as the whole one comes
            parts = self.sample.pop(name)
            if parts:
                sample[name] = np.concatenate(parts)
            parts.clear()
        return VersionData(rows=rows, sample=sample, sample_fraction=self.threshold, cells=self.cells, **joined)


async def scan_version(run: JobRun, version: VersionRecord, *, seed: int, sample_rows: int,
                       next_observation: bool, keep_initial: bool, cells: Cells | None,
                       report: Callable[[float], Awaitable[None]]) -> VersionData:
    """Read every row of ``version`` once (see the module docstring for what is kept)."""
    plan = ExportPlan.build(version.tuple_schema, ExportCreate(next_observation=next_observation,
                                                               format=ExportFormat.parquet))
    work = await plan_blocks(run, version, plan)
    total = max(sum(len(seqs) for _, seqs in work), 1)
    scan = _Scan(version.tuple_schema, min(1.0, sample_rows / max(version.transitions, 1)), seed, keep_initial,
                 cells)
    done = 0
    for episodes, seqs in work:
        lookup = episode_lookup(episodes)
        async for block in run.catalog.read_blocks(episodes.segment.id, seqs):
            table = await asyncio.to_thread(plan.rows, block, episodes, lookup)
            await asyncio.to_thread(scan.feed, table)
            done += 1
            await report(done / total)
    await asyncio.to_thread(scan.close)
    return scan.result(version.transitions)


def note_subsample(result: MetricResult, used: int, rows: int, seed: int) -> MetricResult:
    """Say in the result that (and how) the metric saw a seeded subsample of the version."""
    if used < rows:
        result.warnings.append(f"computed on a seeded subsample of {used} of {rows} rows (seed {seed})")
    result.details.update(subsample_rows=used, version_rows=rows, subsample_seed=seed)
    return result.model_copy(update={"n_rows_used": used, "seed": seed})
