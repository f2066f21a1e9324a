"""The ``metrics`` job: compute a set of quality metrics on one dataset version and keep the results.

One pass over the version's blocks (:mod:`.metric_data`) feeds every requested metric; wide
columns are kept only for a seeded subsample, sized by the most demanding super-linear metric,
and each result says how many rows it used. A Redis lock per version means two jobs never
compute the same version's metrics at once (a user's request and the schedule, say); the second
waits. Progress names the metric being computed.

A metric that cannot be computed on this data (fewer distinct points than ``k``, a frame that
does not fit) is stored as an undefined result saying why, and the others still run; only a
person's request for that one metric alone fails with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuplehub.storage.access import UserRecord
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord, continuous_widths, metrics_record, space_from_json
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, InvalidRequest, NotFound
from tuplehub.storage.metrics import (
    AverageQParams,
    BehavioralEntropyParams,
    CoverageParams,
    MetricFrame,
    MetricFrameRecord,
    MetricName,
    MetricRecord,
    MetricResult,
    MetricsCreate,
    PolicyValueParams,
    ReturnImprovementParams,
    ReturnsParams,
    ShannonEntropyParams,
    TrajectoryQualityParams,
    result_key,
)
from tuplehub.storage.models import DatasetRecord, VersionRecord, utcnow
from tuplehub.storage.permissions import can_read, principal_of
from tuplehub.storage.versions import get_version
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.metric_data import Cells, VersionData, note_subsample, scan_version
from tuplehub.workers.jobs.metric_fitted_q import fitted_q
from tuplehub.workers.metrics import coverage, entropy, quality, returns
from tuplehub.workers.metrics.episodes import episode_returns
from tuplehub.workers.metrics.frame import entropy_points, freeze_frame, split_columns
from tuplehub.workers.metrics.versions import ALGORITHM_VERSIONS

READ_SHARE = 0.3  # of the progress bar, for reading the version
# Rows kept to freeze a benchmark's frame when no other metric needs a larger sample.
FRAME_SAMPLE_ROWS = 200_000
KNN = (ShannonEntropyParams, BehavioralEntropyParams)
FITTED_Q = (AverageQParams, PolicyValueParams)
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


@dataclass
class Computed:
    result: MetricResult
    benchmark_inputs: dict[str, Any]


class MetricsJob:
    def __init__(self, run: JobRun, dataset: DatasetRecord, version: VersionRecord, request: MetricsCreate,
                 benchmark: BenchmarkRecord | None, *, scheduled: bool) -> None:
        self.run = run
        self.scheduled = scheduled  # run by the system as the dataset's owner, not asked for by a person
        self.dataset = dataset
        self.version = version
        self.request = request
        self.benchmark = benchmark
        self.seed = request.seed
        self.frame: MetricFrame | None = None
        self.frame_problem = "no metric frame"
        self.rejected_frame: str | None = None  # the benchmark's frame, when it does not fit this data
        self.frame_warning: list[str] = []

    async def compute_all(self) -> dict[str, Any]:
        """Each metric in turn; one that the data cannot give is kept as an undefined result saying
        why (so the sweep does not retry it until something changes), unless it was the only one
        asked for by a person, who gets the error."""
        wanted = self.request.metrics
        data = await self._read()
        computed_keys: list[str] = []
        skipped: dict[str, str] = {}
        share = (1 - READ_SHARE) / len(wanted)
        for number, params in enumerate(wanted):
            key = result_key(params)
            start = READ_SHARE + number * share
            await self.run.checkpoint(start, key, f"metric {number + 1} of {len(wanted)}")
            try:
                computed = await self._compute(params, data, start, share)
            except InvalidRequest as exc:
                if len(wanted) == 1 and not self.scheduled:
                    raise
                skipped[key] = exc.detail
                computed = Computed(_undefined(params, exc.detail), self._inputs_of(params))
            await self._store(key, params.model_dump(mode="json"), computed)
            computed_keys.append(key)
        # Keys only: a policy's value is for readers of the policy, and the job's owner may not be one.
        return {"dataset": self.dataset.name, "version": self.version.number,
                "computed": [k for k in computed_keys if k not in skipped], "skipped": skipped}

    # --- reading -----------------------------------------------------------------------------
    async def _read(self) -> VersionData:
        wanted = self.request.metrics
        sample_rows = max([p.max_points for p in wanted if isinstance(p, KNN)]
                          + [p.max_rows for p in wanted if isinstance(p, FITTED_Q)] + [0])
        coverage_bins = [p.bins for p in wanted if isinstance(p, CoverageParams)]
        needs_frame = bool(coverage_bins) or any(isinstance(p, KNN) for p in wanted)
        if needs_frame:
            self.frame = await self._stored_frame()
            if self.frame is None:
                sample_rows = max(sample_rows, FRAME_SAMPLE_ROWS)
            elif (problem := self._frame_problem(self.frame)) is not None:
                self.rejected_frame, self.frame, self.frame_problem = self.frame.frame_id, None, problem
                needs_frame = False
        cells = Cells(self.frame, coverage_bins[0]) if coverage_bins and self.frame is not None else None

        async def report(fraction: float) -> None:
            await self.run.checkpoint(READ_SHARE * fraction, "read", "reading the version")

        data = await scan_version(self.run, self.version, seed=self.seed, sample_rows=sample_rows,
                                  next_observation=any(isinstance(p, FITTED_Q) for p in wanted),
                                  keep_initial=any(isinstance(p, PolicyValueParams) for p in wanted),
                                  cells=cells, report=report)
        if needs_frame and self.frame is None:
            try:
                self.frame = await self._freeze(data)
            except InvalidRequest as exc:
                self.frame_problem = exc.detail
        if coverage_bins and data.cells is None and self.frame is not None:  # frozen from this very pass
            data.cells = (await self._binned(self.version, coverage_bins[0], report)).cells
        return data

    def _frame_problem(self, frame: MetricFrame) -> str | None:
        """Why ``frame`` cannot describe this version's data, if it cannot."""
        width = self._continuous_width()
        if width != len(frame.mean):
            return (f"the benchmark's metric frame has {len(frame.mean)} continuous dimensions, this version "
                    f"{width}: the data does not match its benchmark")
        return None

    def _continuous_widths(self) -> tuple[int, int]:
        """Float dimensions of the observations and of the actions."""
        schema = self.version.tuple_schema
        observation, action = (max(spec.size, 1) if spec.is_floating else 0 for spec in (schema.observation,
                                                                                          schema.action))
        return observation, action

    def _continuous_width(self) -> int:
        return sum(self._continuous_widths())

    async def _binned(self, version: VersionRecord, bins: int, report: Callable[[float], Any]) -> VersionData:
        """A pass that only bins every row of ``version`` (and keys it, for same-size comparisons)."""
        assert self.frame is not None
        return await scan_version(self.run, version, seed=self.seed, sample_rows=0, next_observation=False,
                                  keep_initial=False, cells=Cells(self.frame, bins), report=report)

    async def _stored_frame(self) -> MetricFrame | None:
        if self.dataset.benchmark is None:
            return None
        with contextlib.suppress(NotFound):
            stored = await self.run.catalog.get_record("metric_frames", MetricFrameRecord,
                                                       benchmark_id=self.dataset.benchmark)
            return stored.frame
        return None

    async def _freeze(self, data: VersionData) -> MetricFrame:
        """Freeze a frame from a seeded sample of this version; store it on the benchmark if the data
        matches the benchmark's spaces (otherwise it would bin everyone else's data wrongly)."""
        chosen = data.sampled_below(FRAME_SAMPLE_ROWS)  # the same rows whatever else the request holds
        continuous, _ = split_columns(*data.sampled(chosen, "observation", "action"))
        low, high = self._space_bounds()
        try:
            frame = await asyncio.to_thread(freeze_frame, continuous, low=low, high=high, source=(
                f"frozen from a seeded sample of {int(chosen.sum())} rows"))
        except ValueError as exc:  # a frame model refusing what the data gave (beyond its limits)
            raise InvalidRequest(f"no metric frame fits this data: {exc}", field="version") from exc
        reason = await self._why_not_shared()
        if reason is not None:
            self.frame_warning = [f"features were scaled and binned on this version's own frame ({reason}), so the "
                                  "value does not compare across datasets"]
            return frame
        try:
            await self.run.catalog.insert_record("metric_frames", MetricFrameRecord(
                benchmark_id=self.dataset.benchmark, frame=frame), unique=self.dataset.benchmark)
        except Conflict:  # another job froze it first: use theirs, so every dataset stays alike
            stored = await self._stored_frame()
            if stored is None or self._frame_problem(stored) is not None:
                raise InvalidRequest("the benchmark's metric frame changed while this job ran; run it again",
                                     field="frame") from None
            return stored
        return frame

    async def _why_not_shared(self) -> str | None:
        """Why a frame frozen from this version must not become the benchmark's, if so.

        The frame is shared by everyone's datasets of the benchmark and shows statistics of the data
        it came from, so only data that fits the spaces, and that is public or belongs to the
        benchmark's first owner, may set it.
        """
        if self.dataset.benchmark is None or self.benchmark is None:
            return "the dataset has no benchmark"
        if continuous_widths(self.benchmark.spec) != self._continuous_widths():
            return "the data does not match its benchmark's spaces"
        records, _ = await self.run.catalog.find_records("benchmarks", BenchmarkRecord,
                                                         where={"benchmark_id": self.dataset.benchmark})
        first = min(records, key=lambda r: r.created_at) if records else None
        if not self.dataset.public and (first is None or first.owner != self.dataset.owner):
            return ("the benchmark has no frame yet and this dataset may not set it: only public data or the "
                    "benchmark's first owner's does")
        return None

    def _space_bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The benchmark's Box bounds of the continuous columns, in feature order (None if not all Box)."""
        if self.benchmark is None:
            return None, None
        lows, highs = [], []
        schema = self.version.tuple_schema
        for spec, space in ((schema.observation, self.benchmark.spec.observation_space),
                            (schema.action, self.benchmark.spec.action_space)):
            if not spec.is_floating:
                continue
            if space.get("type") != "Box":
                return None, None
            box = space_from_json(space)
            if box.low.size != max(spec.size, 1):
                return None, None
            lows.append(box.low.reshape(-1).astype(np.float64))
            highs.append(box.high.reshape(-1).astype(np.float64))
        if not lows:
            return None, None
        return np.concatenate(lows), np.concatenate(highs)

    # --- metrics -----------------------------------------------------------------------------
    async def _compute(self, params: Any, data: VersionData, start: float, share: float) -> Computed:
        if isinstance(params, ReturnsParams):
            result = await asyncio.to_thread(returns.return_statistics, data.episode, data.reward, data.terminated,
                                             data.truncated, gamma=params.gamma, bins=params.bins, seed=self.seed)
            return Computed(result, {})
        if isinstance(params, TrajectoryQualityParams):
            return await asyncio.to_thread(self._trajectory_quality, params, data)
        if isinstance(params, ReturnImprovementParams):
            result = quality.estimated_return_improvement(episode_returns(data.episode, data.reward),
                                                          lower_bound=params.lower_bound, n_rows=data.rows)
            return Computed(result, {})
        if self.frame is None and isinstance(params, CoverageParams | ShannonEntropyParams
                                             | BehavioralEntropyParams):
            raise InvalidRequest(self.frame_problem, field="frame")
        if isinstance(params, CoverageParams):
            return await self._coverage(params, data)
        if isinstance(params, KNN):
            return await self._entropy(params, data)
        if isinstance(params, PolicyValueParams | AverageQParams) and params.policy is not None and self.scheduled:
            artifacts, _ = await self.run.catalog.find_records("artifacts", ArtifactRecord,
                                                               where={"artifact_id": params.policy})
            if not any([await self._owner_reads(artifact) for artifact in artifacts]):
                raise InvalidRequest(f"the policy artifact {params.policy} is not readable by the dataset's owner",
                                     field="policy")
        return Computed(await fitted_q(self.run, params, data, seed=self.seed, schema=self.version.tuple_schema,
                                       benchmark=self.benchmark, start=start, share=share), {})

    def _trajectory_quality(self, params: TrajectoryQualityParams, data: VersionData) -> Computed:
        random_return, expert_return = params.random_return, params.expert_return
        inputs = self._inputs_of(params)
        if self.benchmark is not None and (random_return is None or expert_return is None):
            random_return = self.benchmark.random_return if random_return is None else random_return
            expert_return = self.benchmark.expert_return if expert_return is None else expert_return
        result = quality.trajectory_quality(episode_returns(data.episode, data.reward), random_return=random_return,
                                            expert_return=expert_return, seed=self.seed, n_rows=data.rows)
        return Computed(result, inputs)

    def _inputs_of(self, params: Any) -> dict[str, Any]:
        """What a result takes from the benchmark, to tell later whether it went stale."""
        if isinstance(params, TrajectoryQualityParams) and (params.random_return is None
                                                           or params.expert_return is None):
            benchmark = self.benchmark
            return {"references": [benchmark.random_return if benchmark else None,
                                   benchmark.expert_return if benchmark else None]}
        if isinstance(params, CoverageParams | ShannonEntropyParams | BehavioralEntropyParams):
            inputs: dict[str, Any] = {"benchmark": self.dataset.benchmark, "frame": (
                self.frame.frame_id if self.frame is not None and not self.frame_warning else None)}
            if self.rejected_frame is not None:
                inputs["rejected_frame"] = self.rejected_frame
            return inputs
        return {}

    async def _coverage(self, params: CoverageParams, data: VersionData) -> Computed:
        assert data.cells is not None
        keys, inputs = data.cells.keys, self._inputs_of(params)
        request = params.model_dump(mode="json")
        episodes = int(data.episode[-1]) + 1 if len(data.episode) else 0
        if params.reference is None:
            result = await asyncio.to_thread(coverage.coverage_of_keys, keys, params=request,
                                             clipped=data.cells.clipped, episodes=episodes)
        else:
            reference, version = await self._reference_version(params)
            binned = await self._binned(version, params.bins, lambda _: asyncio.sleep(0))
            assert binned.cells is not None
            result = await asyncio.to_thread(
                coverage.coverage_against_reference, keys, data.key, binned.cells.keys, binned.key,
                params=request, clipped=data.cells.clipped, seed=self.seed)
            result.details["reference"] = f"{reference.name}@{version.number}"
            inputs["reference_id"] = reference.id
        result.warnings.extend(self.frame_warning)
        return Computed(result, inputs)

    async def _reference_version(self, params: CoverageParams) -> tuple[DatasetRecord, VersionRecord]:
        try:
            reference = await self.run.catalog.get_dataset(params.reference or "")
        except NotFound as exc:
            raise InvalidRequest(f"the reference dataset {params.reference!r} is gone", field="reference") from exc
        if self.scheduled and not await self._owner_reads(reference):
            raise InvalidRequest(f"the reference dataset {params.reference!r} is not readable by the dataset's "
                                 "owner", field="reference")
        if reference.benchmark != self.dataset.benchmark:
            raise InvalidRequest(f"the reference {params.reference!r} is not of this dataset's benchmark: coverage "
                                 "compares data binned alike", field="reference")
        try:
            return reference, await get_version(self.run.catalog, reference, params.reference_version)
        except NotFound as exc:
            raise InvalidRequest(str(exc), field="reference_version") from exc

    async def _owner_reads(self, item: DatasetRecord | ArtifactRecord) -> bool:
        """Whether the job's owner may read ``item``, by the API's own rule. The API checked a
        person's request; the sweep re-runs stored requests as the dataset's owner, who may not read
        what someone else named (a reader's own policy), or may no longer."""
        catalog = self.run.catalog
        try:
            owner = await catalog.get_record("users", UserRecord, id=self.run.job.owner)
        except NotFound:
            return False
        if not owner.active:
            return False
        kind = "dataset" if isinstance(item, DatasetRecord) else "artifact"
        return can_read(await principal_of(catalog, owner), item, kind)

    async def _entropy(self, params: ShannonEntropyParams | BehavioralEntropyParams, data: VersionData) -> Computed:
        frame = self.frame
        assert frame is not None
        observation, action = data.sampled(data.sampled_below(params.max_points), "observation", "action")
        points = await asyncio.to_thread(lambda: entropy_points(frame, split_columns(observation, action)[0]))
        if isinstance(params, BehavioralEntropyParams):
            result = await asyncio.to_thread(entropy.behavioral_entropy, points, alpha=params.alpha, beta=params.beta,
                                             k=params.k, queries=params.queries, seed=self.seed)
        else:
            result = await asyncio.to_thread(entropy.shannon_entropy, points, k=params.k, queries=params.queries,
                                             seed=self.seed)
        result = note_subsample(result, len(points), data.rows, self.seed)
        result.params.update(max_points=params.max_points)
        result.warnings.extend(self.frame_warning)
        return Computed(result, self._inputs_of(params))

    # --- storing -----------------------------------------------------------------------------
    async def _store(self, key: str, params: dict[str, Any], computed: Computed) -> None:
        catalog = self.run.catalog
        fields: dict[str, Any] = {"params": params, "seed": self.seed, "benchmark_inputs": computed.benchmark_inputs,
                  "job_id": self.run.job.id, "result": computed.result, "created_at": utcnow()}
        where = {"dataset_id": self.dataset.id, "version": self.version.number, "key": key}
        for _ in range(2):  # a concurrent first insert (a lock lost to a stalled worker) turns into an update
            existing, _ = await catalog.find_records("metrics", MetricRecord, where=where, limit=1)
            if existing:
                await catalog.update_record("metrics", MetricRecord, existing[0].id, **fields)
                return
            with contextlib.suppress(Conflict):
                await catalog.insert_record("metrics", MetricRecord(
                    dataset_id=self.dataset.id, version=self.version.number, key=key, **fields),
                    unique=f"{self.dataset.id}:{self.version.number}:{key}")
                return

    async def forget_if_deleted(self) -> None:
        """A dataset deleted while its metrics were computed must not keep the results stored since."""
        if await self.run.catalog.get_dataset_by_id(self.dataset.id) is None:
            await self.run.catalog.delete_records("metrics", MetricRecord, dataset_id=self.dataset.id)


def _undefined(params: Any, reason: str) -> MetricResult:
    """What a metric the data cannot give is stored as: no value, and why."""
    return MetricResult(metric=params.metric, value=None, n_rows_used=0, n_episodes_used=0,
                        params=params.model_dump(mode="json"), warnings=[reason],
                        algo_version=ALGORITHM_VERSIONS[MetricName(params.metric)])
