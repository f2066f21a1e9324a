"""The ``metrics`` job: compute a set of quality metrics on one dataset version and keep the results.

One pass over the version's blocks (:mod:`.metric_data`) feeds every requested metric; wide
columns are kept only for a seeded subsample, sized by the most demanding super-linear metric,
and each result says how many rows it used. A Redis lock per version means two jobs never
compute the same version's metrics at once (a user's request and the schedule, say); the second
waits. Progress names the metric being computed.

A metric that cannot be computed on this data (no reference returns for trajectory quality, say)
is reported under ``skipped`` and the others still run; the job fails only if none succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord, space_from_json
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, InvalidRequest, JobCancelled, NotFound
from tuplehub.storage.metrics import (
    AverageQParams,
    BehavioralEntropyParams,
    CoverageParams,
    MetricFrame,
    MetricFrameRecord,
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
from tuplehub.workers.context import AttemptSuperseded, JobRun, WorkerContext, run_job
from tuplehub.workers.jobs.metric_data import Cells, VersionData, scan_version
from tuplehub.workers.metrics import coverage, entropy, quality, returns
from tuplehub.workers.metrics.episodes import episode_returns
from tuplehub.workers.metrics.frame import entropy_points, freeze_frame, split_columns

READ_SHARE = 0.3  # of the progress bar, for reading the version
# Rows kept to freeze a benchmark's frame when no other metric needs a larger sample.
FRAME_SAMPLE_ROWS = 200_000
KNN = (ShannonEntropyParams, BehavioralEntropyParams)
FITTED_Q = (AverageQParams, PolicyValueParams)


async def metrics(ctx: WorkerContext, job_id: str) -> None:
    await run_job(ctx, job_id, _metrics, timeout_s=ctx["settings"].metrics_timeout_s)


async def _metrics(run: JobRun) -> dict[str, Any]:
    params = run.job.params
    request = MetricsCreate.model_validate(params["request"])
    dataset = await run.catalog.get_dataset_by_id(params["dataset_id"])
    if dataset is None:
        raise NotFound(f"dataset {params['dataset']!r} was deleted", name=params["dataset"])
    version = await _version(run, dataset.id, params["version"])

    async def waiting() -> None:
        await run.checkpoint(0.0, "waiting", "another metrics job is computing this version")

    async with run.ctx["queue"].exclusive(f"metrics:{dataset.id}:{version.number}", wait=waiting,
                                          wait_s=run.settings.metrics_timeout_s):
        job = MetricsJob(run, dataset, version, request, await benchmark_of(run.catalog, dataset))
        return await job.compute_all(skip_unavailable=bool(params.get("scheduled")))


async def _version(run: JobRun, dataset_id: str, number: int) -> VersionRecord:
    for version in await run.catalog.list_versions(dataset_id):
        if version.number == number:
            return version
    raise NotFound(f"version {number} is gone", version=number)


async def benchmark_of(catalog: Catalog, dataset: DatasetRecord) -> BenchmarkRecord | None:
    """The benchmark record metrics take references from: one spec may be stored by several owners,
    so the dataset owner's own record first, else the oldest one with reference returns."""
    if dataset.benchmark is None:
        return None
    records, _ = await catalog.find_records("benchmarks", BenchmarkRecord, where={"benchmark_id": dataset.benchmark})
    ranked = sorted(records, key=lambda r: (r.owner != dataset.owner, r.random_return is None, r.created_at))
    return ranked[0] if ranked else None


@dataclass
class Computed:
    result: MetricResult
    benchmark_inputs: dict[str, Any]


class MetricsJob:
    def __init__(self, run: JobRun, dataset: DatasetRecord, version: VersionRecord, request: MetricsCreate,
                 benchmark: BenchmarkRecord | None) -> None:
        self.run = run
        self.dataset = dataset
        self.version = version
        self.request = request
        self.benchmark = benchmark
        self.seed = request.seed
        self.frame: MetricFrame | None = None
        self.frame_warning: list[str] = []

    async def compute_all(self, *, skip_unavailable: bool) -> dict[str, Any]:
        wanted = self.request.metrics
        data = await self._read()
        values: dict[str, float | None] = {}
        skipped: dict[str, str] = {}
        share = (1 - READ_SHARE) / len(wanted)
        for number, params in enumerate(wanted):
            key = result_key(params)
            start = READ_SHARE + number * share
            await self.run.checkpoint(start, key, f"metric {number + 1} of {len(wanted)}")
            try:
                computed = await self._compute(params, data, start, share)
            except InvalidRequest as exc:
                if len(wanted) == 1 and not skip_unavailable:
                    raise
                skipped[key] = exc.detail
                continue
            await self._store(key, params.model_dump(mode="json"), computed)
            values[key] = computed.result.value
        if not values and skipped and not skip_unavailable:
            raise InvalidRequest("no metric could be computed: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                                 field="metrics")
        return {"dataset": self.dataset.name, "version": self.version.number, "results": values, "skipped": skipped}

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
        cells = Cells(self.frame, coverage_bins[0]) if coverage_bins and self.frame is not None else None

        async def report(fraction: float) -> None:
            await self.run.checkpoint(READ_SHARE * fraction, "read", "reading the version")

        data = await scan_version(self.run, self.version, seed=self.seed, sample_rows=sample_rows,
                                  next_observation=any(isinstance(p, FITTED_Q) for p in wanted),
                                  keep_initial=any(isinstance(p, PolicyValueParams) for p in wanted),
                                  cells=cells, report=report)
        if needs_frame and self.frame is None:
            self.frame = await self._freeze(data)
        if coverage_bins and data.cells is None:  # the frame was frozen from this very pass: bin in a second
            data.cells = (await self._binned(self.version, coverage_bins[0], report)).cells
        return data

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
        continuous, _ = split_columns(data.sample["observation"], data.sample["action"])
        low, high = self._space_bounds()
        frame = await asyncio.to_thread(freeze_frame, continuous, low=low, high=high,
                                        source=f"{self.dataset.name}@{self.version.number}")
        if self.dataset.benchmark is None:
            self.frame_warning = ["the dataset has no benchmark: features were scaled and binned on this version's "
                                  "own frame, so the value does not compare across datasets"]
            return frame
        try:
            await self.run.catalog.insert_record("metric_frames", MetricFrameRecord(benchmark_id=self.dataset.benchmark,
                                                                              frame=frame),
                                                 unique=self.dataset.benchmark)
        except Conflict:  # another job froze it first: use theirs, so every dataset stays alike
            stored = await self._stored_frame()
            assert stored is not None
            return stored
        return frame

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
            return self._trajectory_quality(params, data)
        if isinstance(params, ReturnImprovementParams):
            result = quality.estimated_return_improvement(episode_returns(data.episode, data.reward),
                                                          lower_bound=params.lower_bound, n_rows=data.rows)
            return Computed(result, {})
        if isinstance(params, CoverageParams):
            return await self._coverage(params, data)
        if isinstance(params, KNN):
            return await self._entropy(params, data)
        return await self._fitted_q(params, data, start, share)

    def _trajectory_quality(self, params: TrajectoryQualityParams, data: VersionData) -> Computed:
        random_return, expert_return, inputs = params.random_return, params.expert_return, {}
        if self.benchmark is not None and (random_return is None or expert_return is None):
            inputs = {"references": [self.benchmark.random_return, self.benchmark.expert_return]}
            random_return = self.benchmark.random_return if random_return is None else random_return
            expert_return = self.benchmark.expert_return if expert_return is None else expert_return
        result = quality.trajectory_quality(episode_returns(data.episode, data.reward), random_return=random_return,
                                            expert_return=expert_return, seed=self.seed, n_rows=data.rows)
        return Computed(result, inputs)

    def _frame_inputs(self) -> dict[str, Any]:
        assert self.frame is not None
        return {"frame": self.frame.frame_id} if self.dataset.benchmark else {}

    async def _coverage(self, params: CoverageParams, data: VersionData) -> Computed:
        assert data.cells is not None
        cells = data.cells.cells
        request = params.model_dump(mode="json")
        if params.reference is None:
            result = await asyncio.to_thread(coverage.state_action_coverage, cells, params=request,
                                             clipped=data.cells.clipped)
        else:
            reference = await self._reference_version(params)
            binned = await self._binned(reference, params.bins, lambda _: asyncio.sleep(0))
            assert binned.cells is not None
            result = await asyncio.to_thread(
                coverage.coverage_against_reference, cells, data.key, binned.cells.cells, binned.key,
                params=request, clipped=data.cells.clipped, seed=self.seed)
            result.details["reference"] = f"{params.reference}@{reference.number}"
        result.warnings.extend(self.frame_warning)
        return Computed(result, self._frame_inputs())

    async def _reference_version(self, params: CoverageParams) -> VersionRecord:
        try:
            reference = await self.run.catalog.get_dataset(params.reference or "")
        except NotFound as exc:
            raise InvalidRequest(f"the reference dataset {params.reference!r} is gone", field="reference") from exc
        if reference.benchmark != self.dataset.benchmark:
            raise InvalidRequest(f"the reference {params.reference!r} is not of this dataset's benchmark: coverage "
                                 "compares data binned alike", field="reference")
        versions = await self.run.catalog.list_versions(reference.id)
        chosen = [v for v in versions if params.reference_version in (None, v.number)]
        if not chosen:
            raise InvalidRequest(f"{params.reference!r} has no version {params.reference_version or ''}".strip(),
                                 field="reference_version")
        return chosen[-1]

    async def _entropy(self, params: ShannonEntropyParams | BehavioralEntropyParams, data: VersionData) -> Computed:
        assert self.frame is not None
        chosen = data.sampled_below(params.max_points)
        continuous, _ = split_columns(data.sample["observation"][chosen], data.sample["action"][chosen])
        points = entropy_points(self.frame, continuous)
        if isinstance(params, BehavioralEntropyParams):
            result = await asyncio.to_thread(entropy.behavioral_entropy, points, alpha=params.alpha, beta=params.beta,
                                             k=params.k, queries=params.queries, seed=self.seed)
        else:
            result = await asyncio.to_thread(entropy.shannon_entropy, points, k=params.k, queries=params.queries,
                                             seed=self.seed)
        result = _subsampled(result, len(points), data.rows, self.seed)
        result.params.update(max_points=params.max_points)
        result.warnings.extend(self.frame_warning)
        return Computed(result, self._frame_inputs())

    async def _fitted_q(self, params: AverageQParams | PolicyValueParams, data: VersionData, start: float,
                        share: float) -> Computed:
        from tuplehub.workers.metrics import fqe

        if not fqe.torch_available():
            raise InvalidRequest("fitted Q evaluation needs torch on the workers: pip install 'tuplehub[torch]'",
                                 field="metric")
        sample = data.sample
        chosen = data.sampled_below(params.max_rows)
        if isinstance(params, PolicyValueParams):
            chosen |= sample["initial"]
        n_actions, low, high = self._action_space(data)
        arguments: dict[str, Any] = {"n_actions": n_actions, "gamma": params.gamma}
        if params.steps is not None:
            arguments["steps"] = params.steps
        arguments["seeds"] = tuple(range(self.seed, self.seed + (params.seeds or len(fqe.SEEDS))))
        if isinstance(params, PolicyValueParams):
            arguments["policy"] = fqe.load_policy(await self._policy_bytes(params.policy))
            arguments["initial"] = sample["initial"][chosen]
        else:
            arguments["target"] = params.target
            if params.bc_steps is not None:
                arguments["bc_steps"] = params.bc_steps
            if params.target == "sarsa":
                chosen &= sample["next_known"] | sample["terminated"]  # no next action in the data: left out
                arguments["next_action"] = sample["next_action"][chosen]
        if low is not None:
            arguments.update(action_low=low, action_high=high)
        arguments["threads"] = self.run.settings.metrics_threads
        result = await _threaded(self.run, start, share, result_key(params), lambda progress: fqe.average_q_value(
            sample["observation"][chosen], sample["action"][chosen], sample["reward"][chosen],
            sample["next_observation"][chosen], sample["terminated"][chosen], progress=progress, **arguments))
        result = _subsampled(result, int(chosen.sum()), data.rows, self.seed)
        result.params.update(max_rows=params.max_rows)
        return Computed(result, {})

    def _action_space(self, data: VersionData) -> tuple[int | None, np.ndarray | None, np.ndarray | None]:
        """Discrete: the number of actions (from the benchmark, else the data). Continuous: Box bounds if any."""
        spec = self.version.tuple_schema.action
        space = self.benchmark.spec.action_space if self.benchmark is not None else None
        if not spec.is_floating:
            if space is not None and space.get("type") == "Discrete":
                return int(space["n"]), None, None
            return int(data.sample["action"].max()) + 1 if len(data.sample.get("action", [])) else 1, None, None
        if space is not None and space.get("type") == "Box":
            box = space_from_json(space)
            if np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high)):
                return None, box.low.reshape(-1).astype(np.float64), box.high.reshape(-1).astype(np.float64)
        return None, None, None

    async def _policy_bytes(self, artifact_id: str) -> bytes:
        records, _ = await self.run.catalog.find_records("artifacts", ArtifactRecord,
                                                         where={"artifact_id": artifact_id}, limit=1)
        if not records:
            raise InvalidRequest(f"the policy artifact {artifact_id} is gone", field="policy")

        def read() -> bytes:
            with self.run.objects.open_read(records[0].object_key) as handle:
                return handle.read()
        return await asyncio.to_thread(read)

    # --- storing -----------------------------------------------------------------------------
    async def _store(self, key: str, params: dict[str, Any], computed: Computed) -> None:
        catalog = self.run.catalog
        fields = {"params": params, "seed": self.seed, "benchmark_inputs": computed.benchmark_inputs,
                  "job_id": self.run.job.id, "result": computed.result, "created_at": utcnow()}
        existing, _ = await catalog.find_records("metrics", MetricRecord, where={
            "dataset_id": self.dataset.id, "version": self.version.number, "key": key}, limit=1)
        if existing:
            await catalog.update_record("metrics", MetricRecord, existing[0].id, **fields)
            return
        await catalog.insert_record("metrics", MetricRecord(dataset_id=self.dataset.id, version=self.version.number,
                                                            key=key, **fields),
                                    unique=f"{self.dataset.id}:{self.version.number}:{key}")


def _subsampled(result: MetricResult, used: int, rows: int, seed: int) -> MetricResult:
    """Say in the result that (and how) the metric saw a seeded subsample of the version."""
    if used < rows:
        result.warnings.append(f"computed on a seeded subsample of {used} of {rows} rows (seed {seed})")
    result.details.update(subsample_rows=used, version_rows=rows, subsample_seed=seed)
    return result.model_copy(update={"n_rows_used": used, "seed": seed})


async def _threaded(run: JobRun, start: float, share: float, stage: str,
                    work: Callable[[Callable[[float], None]], MetricResult]) -> MetricResult:
    """Run ``work`` in a thread, turning its progress calls into checkpoints; a cancel stops it there."""
    state: dict[str, Any] = {"fraction": 0.0, "stop": None}

    def progress(fraction: float) -> None:
        if state["stop"] is not None:
            raise state["stop"]
        state["fraction"] = fraction

    task = asyncio.ensure_future(asyncio.to_thread(work, progress))
    try:
        for _ in range(int(run.settings.metrics_timeout_s / 2) + 1):
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if done:
                break
            try:
                await run.checkpoint(start + share * state["fraction"], stage, f"{state['fraction']:.0%}")
            except (JobCancelled, AttemptSuperseded) as exc:
                state["stop"] = exc
        return await task
    finally:
        if not task.done() and state["stop"] is None:  # timed out: a thread cannot be killed, so it stops itself
            state["stop"] = JobCancelled("the job ran out of time")
