"""The metric registry: one table from a metric's name to its algorithm version and compute adapter.

An adapter takes the job's context, the metric's parameters and the version's data, and gives the
result with what it took from the benchmark. The facts the job plans its pass by (framed, sample
size, next observations...) sit on the parameter classes in ``storage.metrics``. Adding a metric is
its parameter class there, its pure function in ``workers/metrics/`` and one row here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tuplehub.storage.access import UserRecord
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord
from tuplehub.storage.errors import MetricUndefined, NotFound
from tuplehub.storage.metrics import (
    ActionEntropyParams,
    AverageQParams,
    BehavioralEntropyParams,
    CoverageParams,
    MetricName,
    MetricResult,
    PolicyValueParams,
    ReturnImprovementParams,
    ReturnsParams,
    ShannonEntropyParams,
    TrajectoryQualityParams,
)
from tuplehub.storage.models import DatasetRecord, VersionRecord
from tuplehub.storage.permissions import can_read, principal_of
from tuplehub.storage.versions import get_version
from tuplehub.workers.context import JobRun
from tuplehub.workers.jobs.metric_data import VersionData, note_subsample
from tuplehub.workers.jobs.metric_fitted_q import action_space, fitted_q
from tuplehub.workers.jobs.metric_frame import FramePolicy
from tuplehub.workers.metrics import actions, coverage, entropy, fqe, quality, returns
from tuplehub.workers.metrics.episodes import episode_returns
from tuplehub.workers.metrics.frame import entropy_points, split_columns


@dataclass
class MetricContext:
    """What every adapter may use besides the data: the job's version, benchmark, seed and frame."""

    run: JobRun
    dataset: DatasetRecord
    version: VersionRecord
    benchmark: BenchmarkRecord | None
    seed: int
    scheduled: bool  # run by the system as the dataset's owner, not asked for by a person
    frames: FramePolicy


class Span(NamedTuple):
    """The metric's part of the job's progress bar."""

    start: float
    share: float


@dataclass
class Computed:
    result: MetricResult
    benchmark_inputs: dict[str, Any] = field(default_factory=dict)


Compute = Callable[[MetricContext, Any, VersionData, Span], Awaitable[Computed]]


@dataclass(frozen=True)
class Metric:
    version: str  # a result computed under another one is stale
    compute: Compute


def benchmark_inputs(ctx: MetricContext, params: Any) -> dict[str, Any]:
    """What a result takes from the benchmark, to tell later whether it went stale."""
    if isinstance(params, TrajectoryQualityParams) and (params.random_return is None
                                                       or params.expert_return is None):
        benchmark = ctx.benchmark
        return {"references": [benchmark.random_return if benchmark else None,
                               benchmark.expert_return if benchmark else None]}
    return ctx.frames.inputs() if params.framed else {}


def undefined(ctx: MetricContext, params: Any, reason: str) -> Computed:
    """What a metric the data cannot give is stored as: no value, and why."""
    return Computed(MetricResult(metric=params.metric, value=None, n_rows_used=0, n_episodes_used=0,
                                 params=params.model_dump(mode="json"), warnings=[reason],
                                 algo_version=METRICS[MetricName(params.metric)].version),
                    benchmark_inputs(ctx, params))


async def owner_reads(run: JobRun, item: DatasetRecord | ArtifactRecord) -> bool:
    """Whether the job's owner may read ``item``, by the API's own rule. The API checked a
    person's request; the sweep re-runs stored requests as the dataset's owner, who may not read
    what someone else named (a reader's own policy), or may no longer."""
    try:
        owner = await run.catalog.get_record("users", UserRecord, id=run.job.owner)
    except NotFound:
        return False
    if not owner.active:
        return False
    kind = "dataset" if isinstance(item, DatasetRecord) else "artifact"
    return can_read(await principal_of(run.catalog, owner), item, kind)


# --- adapters ------------------------------------------------------------------------------------

async def _returns(ctx: MetricContext, params: ReturnsParams, data: VersionData, _: Span) -> Computed:
    return Computed(await asyncio.to_thread(returns.return_statistics, data.episode, data.reward, data.terminated,
                                            data.truncated, gamma=params.gamma, bins=params.bins, seed=ctx.seed))


async def _trajectory_quality(ctx: MetricContext, params: TrajectoryQualityParams, data: VersionData,
                              _: Span) -> Computed:
    random_return, expert_return = params.random_return, params.expert_return
    if ctx.benchmark is not None:
        random_return = ctx.benchmark.random_return if random_return is None else random_return
        expert_return = ctx.benchmark.expert_return if expert_return is None else expert_return
    result = await asyncio.to_thread(quality.trajectory_quality, episode_returns(data.episode, data.reward),
                                     random_return=random_return, expert_return=expert_return, seed=ctx.seed,
                                     n_rows=data.rows)
    return Computed(result, benchmark_inputs(ctx, params))


async def _return_improvement(_: MetricContext, params: ReturnImprovementParams, data: VersionData,
                              __: Span) -> Computed:
    return Computed(quality.estimated_return_improvement(episode_returns(data.episode, data.reward),
                                                         lower_bound=params.lower_bound, n_rows=data.rows))


async def _coverage(ctx: MetricContext, params: CoverageParams, data: VersionData, _: Span) -> Computed:
    assert data.cells is not None
    keys, inputs = data.cells.keys, benchmark_inputs(ctx, params)
    request = params.model_dump(mode="json")
    episodes = int(data.episode[-1]) + 1 if len(data.episode) else 0
    if params.reference is None:
        result = await asyncio.to_thread(coverage.coverage_of_keys, keys, params=request,
                                         clipped=data.cells.clipped, episodes=episodes)
    else:
        reference, version = await _reference_version(ctx, params)
        binned = await ctx.frames.binned(version, params.bins, lambda _: asyncio.sleep(0))
        assert binned.cells is not None
        result = await asyncio.to_thread(
            coverage.coverage_against_reference, keys, data.key, binned.cells.keys, binned.key,
            params=request, clipped=data.cells.clipped, seed=ctx.seed)
        result.details["reference"] = f"{reference.name}@{version.number}"
        inputs["reference_id"] = reference.id
    result.warnings.extend(ctx.frames.warning)
    return Computed(result, inputs)


async def _reference_version(ctx: MetricContext, params: CoverageParams) -> tuple[DatasetRecord, VersionRecord]:
    try:
        reference = await ctx.run.catalog.get_dataset(params.reference or "")
    except NotFound as exc:
        raise MetricUndefined(f"the reference dataset {params.reference!r} is gone", field="reference") from exc
    if ctx.scheduled and not await owner_reads(ctx.run, reference):
        raise MetricUndefined(f"the reference dataset {params.reference!r} is not readable by the dataset's "
                              "owner", field="reference")
    if reference.benchmark != ctx.dataset.benchmark:
        raise MetricUndefined(f"the reference {params.reference!r} is not of this dataset's benchmark: coverage "
                              "compares data binned alike", field="reference")
    try:
        return reference, await get_version(ctx.run.catalog, reference, params.reference_version)
    except NotFound as exc:
        raise MetricUndefined(str(exc), field="reference_version") from exc


async def _entropy(ctx: MetricContext, params: ShannonEntropyParams | BehavioralEntropyParams, data: VersionData,
                   _: Span) -> Computed:
    frame = ctx.frames.frame
    assert frame is not None
    observation, action = data.sampled(data.sampled_below(params.max_points), "observation", "action")
    points = await asyncio.to_thread(lambda: entropy_points(frame, split_columns(observation, action)[0]))
    if isinstance(params, BehavioralEntropyParams):
        result = await asyncio.to_thread(entropy.behavioral_entropy, points, alpha=params.alpha, beta=params.beta,
                                         k=params.k, queries=params.queries, seed=ctx.seed)
    else:
        result = await asyncio.to_thread(entropy.shannon_entropy, points, k=params.k, queries=params.queries,
                                         seed=ctx.seed)
    result = note_subsample(result, len(points), data.rows, ctx.seed)
    result.params.update(max_points=params.max_points)
    result.warnings.extend(ctx.frames.warning)
    return Computed(result, benchmark_inputs(ctx, params))


async def _fitted_q(ctx: MetricContext, params: AverageQParams | PolicyValueParams, data: VersionData,
                    span: Span) -> Computed:
    if params.policy is not None and ctx.scheduled:
        artifacts, _ = await ctx.run.catalog.find_records("artifacts", ArtifactRecord,
                                                          where={"artifact_id": params.policy})
        if not any([await owner_reads(ctx.run, artifact) for artifact in artifacts]):
            raise MetricUndefined(f"the policy artifact {params.policy} is not readable by the dataset's owner",
                                  field="policy")
    return Computed(await fitted_q(ctx.run, params, data, seed=ctx.seed, schema=ctx.version.tuple_schema,
                                   benchmark=ctx.benchmark, start=span.start, share=span.share))


async def _action_entropy(ctx: MetricContext, params: ActionEntropyParams, data: VersionData, _: Span) -> Computed:
    if ctx.version.tuple_schema.action.is_floating:
        raise MetricUndefined("action entropy needs discrete actions; these are continuous", field="metric")
    chosen = data.sampled_below(params.max_rows)
    result = actions.action_entropy(*data.sampled(chosen, "action"),
                                    n_actions=action_space(ctx.version.tuple_schema, ctx.benchmark, data)[0])
    result = note_subsample(result, int(chosen.sum()), data.rows, ctx.seed)
    result.params.update(max_rows=params.max_rows)
    return Computed(result)


METRICS: dict[MetricName, Metric] = {
    MetricName.returns: Metric(returns.VERSION, _returns),
    MetricName.trajectory_quality: Metric(quality.TQ_VERSION, _trajectory_quality),
    MetricName.return_improvement: Metric(quality.ERI_VERSION, _return_improvement),
    MetricName.state_action_coverage: Metric(coverage.VERSION, _coverage),
    MetricName.shannon_entropy: Metric(entropy.SHANNON_VERSION, _entropy),
    MetricName.behavioral_entropy: Metric(entropy.BEHAVIORAL_VERSION, _entropy),
    MetricName.average_q: Metric(fqe.VERSION, _fitted_q),
    MetricName.policy_value: Metric(fqe.VERSION, _fitted_q),
    MetricName.action_entropy: Metric(actions.VERSION, _action_entropy),
}
