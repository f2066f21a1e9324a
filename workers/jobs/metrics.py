"""The ``metrics`` job: compute a set of quality metrics on one dataset version and keep the results.

One pass over the version's blocks (:mod:`.metric_data`) feeds every requested metric; wide
columns are kept only for a seeded subsample, sized by the most demanding metric's
``sample_rows``, and each result says how many rows it used. Framed metrics read features through
the frame :mod:`.metric_frame` chooses; each metric is computed by its row of
:mod:`.metric_registry`. A Redis lock per version means two jobs never compute the same version's
metrics at once (a user's request and the schedule, say); the second waits. Progress names the
metric being computed.

A metric that cannot be computed on this data (``MetricUndefined``: fewer distinct points than
``k``, a frame that does not fit) is stored as an undefined result saying why, and the others still
run; only a person's request for that one metric alone fails with the error.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tuplehub.storage.benchmarks import BenchmarkRecord, metrics_record
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, MetricUndefined, NotFound
from tuplehub.storage.metrics import CoverageParams, MetricName, MetricRecord, MetricsCreate, result_key
from tuplehub.storage.models import DatasetRecord, VersionRecord, utcnow
from tuplehub.storage.versions import get_version
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.metric_data import Cells, VersionData, scan_version
from tuplehub.workers.jobs.metric_frame import FRAME_SAMPLE_ROWS, FramePolicy
from tuplehub.workers.jobs.metric_registry import METRICS, Computed, MetricContext, Span, undefined

READ_SHARE = 0.3  # of the progress bar, for reading the version
# A job waits this long at most for another one on its version (it holds a worker slot meanwhile).
MAX_LOCK_WAIT_S = 600


async def metrics(ctx: WorkerContext, job_id: str) -> None:
    await run_job(ctx, job_id, _metrics, timeout_s=ctx["settings"].metrics_timeout_s)


async def _metrics(run: JobRun) -> dict[str, Any]:
    params = run.job.params
    request = MetricsCreate.model_validate(params["request"])
    dataset = await run.catalog.get_dataset_by_id(params["dataset_id"])
    if dataset is None:
        raise NotFound(f"dataset {params['dataset']!r} was deleted", name=params["dataset"])
    version = await get_version(run.catalog, dataset, params["version"])

    async def waiting() -> None:
        await run.checkpoint(0.0, "waiting", "another metrics job is computing this version")

    async with run.ctx["queue"].exclusive(f"metrics:{dataset.id}:{version.number}", wait=waiting,
                                          wait_s=min(MAX_LOCK_WAIT_S, run.settings.metrics_timeout_s / 2)):
        job = MetricsJob(run, dataset, version, request, await benchmark_of(run.catalog, dataset),
                         scheduled=bool(params.get("scheduled")))
        try:
            return await job.compute_all()
        finally:
            await job.forget_if_deleted()


async def benchmark_of(catalog: Catalog, dataset: DatasetRecord) -> BenchmarkRecord | None:
    """The record of the dataset's benchmark whose reference returns its metrics use."""
    if dataset.benchmark is None:
        return None
    records, _ = await catalog.find_records("benchmarks", BenchmarkRecord, where={"benchmark_id": dataset.benchmark})
    return metrics_record(records, dataset.owner)


class MetricsJob:
    """One job's run: read the version once, compute each metric by its registry row, store each result."""

    def __init__(self, run: JobRun, dataset: DatasetRecord, version: VersionRecord, request: MetricsCreate,
                 benchmark: BenchmarkRecord | None, *, scheduled: bool) -> None:
        self.run = run
        self.request = request
        frames = FramePolicy(run, dataset, version, benchmark, seed=request.seed)
        self.ctx = MetricContext(run, dataset, version, benchmark, request.seed, scheduled, frames)

    async def compute_all(self) -> dict[str, Any]:
        """Each metric in turn; one that the data cannot give is kept as an undefined result saying
        why (so the sweep does not retry it until something changes), unless it was the only one
        asked for by a person, who gets the error."""
        ctx, wanted = self.ctx, self.request.metrics
        data = await self._read()
        computed_keys: list[str] = []
        skipped: dict[str, str] = {}
        share = (1 - READ_SHARE) / len(wanted)
        for number, params in enumerate(wanted):
            key = result_key(params)
            start = READ_SHARE + number * share
            await self.run.checkpoint(start, key, f"metric {number + 1} of {len(wanted)}")
            try:
                if params.framed and ctx.frames.frame is None:
                    raise MetricUndefined(ctx.frames.problem, field="frame")
                computed = await METRICS[MetricName(params.metric)].compute(ctx, params, data, Span(start, share))
            except MetricUndefined as exc:
                if len(wanted) == 1 and not ctx.scheduled:
                    raise
                skipped[key] = exc.detail
                computed = undefined(ctx, params, exc.detail)
            await self._store(key, params.model_dump(mode="json"), computed)
            computed_keys.append(key)
        # Keys only: a policy's value is for readers of the policy, and the job's owner may not be one.
        return {"dataset": ctx.dataset.name, "version": ctx.version.number,
                "computed": [k for k in computed_keys if k not in skipped], "skipped": skipped}

    async def _read(self) -> VersionData:
        """The one pass, planned by the metrics' facts; the frame is chosen (or frozen from it) on the way."""
        wanted, frames = self.request.metrics, self.ctx.frames
        sample_rows = max(params.sample_rows for params in wanted)
        coverage_bins = [p.bins for p in wanted if isinstance(p, CoverageParams)]
        freeze = False
        if any(params.framed for params in wanted):
            freeze = await frames.start()
            if freeze:
                sample_rows = max(sample_rows, FRAME_SAMPLE_ROWS)
        cells = Cells(frames.frame, coverage_bins[0]) if coverage_bins and frames.frame is not None else None

        async def report(fraction: float) -> None:
            await self.run.checkpoint(READ_SHARE * fraction, "read", "reading the version")

        data = await scan_version(self.run, self.ctx.version, seed=self.ctx.seed, sample_rows=sample_rows,
                                  next_observation=any(params.next_observation for params in wanted),
                                  keep_initial=any(params.episode_starts for params in wanted),
                                  cells=cells, report=report)
        if freeze:
            await frames.freeze_from(data)
        if coverage_bins and data.cells is None and frames.frame is not None:  # frozen from this very pass
            data.cells = (await frames.binned(self.ctx.version, coverage_bins[0], report)).cells
        return data

    async def _store(self, key: str, params: dict[str, Any], computed: Computed) -> None:
        catalog, dataset, version = self.run.catalog, self.ctx.dataset, self.ctx.version
        fields: dict[str, Any] = {"params": params, "seed": self.ctx.seed,
                                  "benchmark_inputs": computed.benchmark_inputs, "job_id": self.run.job.id,
                                  "result": computed.result, "created_at": utcnow()}
        where = {"dataset_id": dataset.id, "version": version.number, "key": key}
        for _ in range(2):  # a concurrent first insert (a lock lost to a stalled worker) turns into an update
            existing, _ = await catalog.find_records("metrics", MetricRecord, where=where, limit=1)
            if existing:
                await catalog.update_record("metrics", MetricRecord, existing[0].id, **fields)
                return
            with contextlib.suppress(Conflict):
                await catalog.insert_record("metrics", MetricRecord(
                    dataset_id=dataset.id, version=version.number, key=key, **fields),
                    unique=f"{dataset.id}:{version.number}:{key}")
                return

    async def forget_if_deleted(self) -> None:
        """A dataset deleted while its metrics were computed must not keep the results stored since."""
        dataset_id = self.ctx.dataset.id
        if await self.run.catalog.get_dataset_by_id(dataset_id) is None:
            await self.run.catalog.delete_records("metrics", MetricRecord, dataset_id=dataset_id)
