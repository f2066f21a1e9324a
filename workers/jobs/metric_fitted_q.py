"""Fitted-Q metrics in the ``metrics`` job: average Q and a policy artifact's value.

Training runs in a thread for minutes, so progress is relayed from it to the job's checkpoints,
and a cancel (or the job's deadline) stops it at its next progress report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord, space_from_json
from tuplehub.storage.errors import JobCancelled, MetricUndefined, NotFound
from tuplehub.storage.metrics import AverageQParams, MetricResult, PolicyValueParams, result_key
from tuplehub.storage.schema import TupleSchema
from tuplehub.workers.context import AttemptSuperseded, JobRun
from tuplehub.workers.jobs.metric_data import VersionData, note_subsample


async def fitted_q(run: JobRun, params: AverageQParams | PolicyValueParams, data: VersionData, *, seed: int,
               schema: TupleSchema, benchmark: BenchmarkRecord | None, start: float, share: float) -> MetricResult:
    """Average Q (BC, SARSA or FQI) or a policy artifact's value on the version's seeded subsample."""
    from tuplehub.workers.metrics import fqe

    if not fqe.torch_available():
        raise MetricUndefined("fitted Q evaluation needs torch on the workers: pip install 'tuplehub[torch]'",
                              field="metric")
    sample = data.sample
    chosen = data.sampled_below(params.max_rows)
    if isinstance(params, PolicyValueParams):
        chosen |= sample["initial"]
    n_actions, low, high = action_space(schema, benchmark, data)
    arguments: dict[str, Any] = {"n_actions": n_actions, "gamma": params.gamma}
    if params.steps is not None:
        arguments["steps"] = params.steps
    arguments["seeds"] = tuple(range(seed, seed + (params.seeds or len(fqe.SEEDS))))
    if isinstance(params, PolicyValueParams):
        arguments["policy"] = fqe.load_policy(await policy_bytes(run, params.policy))
        arguments["initial"] = sample["initial"][chosen]
    else:
        arguments["target"] = params.target
        if params.policy is not None:  # evaluated like a policy's value, reported as the average over the rows
            arguments["policy"] = fqe.load_policy(await policy_bytes(run, params.policy))
        if params.bc_steps is not None:
            arguments["bc_steps"] = params.bc_steps
        if params.target == "sarsa":
            chosen &= sample["next_known"] | sample["terminated"]  # no next action in the data: left out
            arguments["next_action"] = sample["next_action"][chosen]
    if low is not None:
        arguments.update(action_low=low, action_high=high)
    arguments["threads"] = run.settings.metrics_threads
    columns = data.sampled(chosen, "observation", "action", "reward", "next_observation", "terminated")
    result = await threaded(run, start, share, result_key(params), lambda progress: fqe.average_q_value(
        *columns, progress=progress, report=params.metric, **arguments))
    result = note_subsample(result, int(chosen.sum()), data.rows, seed)
    result.params.update(max_rows=params.max_rows)
    return result


def action_space(schema: TupleSchema, benchmark: BenchmarkRecord | None,
                 data: VersionData) -> tuple[int | None, np.ndarray | None, np.ndarray | None]:
    """Discrete: the number of actions (from the benchmark, else the data). Continuous: Box bounds if any."""
    spec = schema.action
    space = benchmark.spec.action_space if benchmark is not None else None
    if not spec.is_floating:
        if space is not None and space.get("type") == "Discrete":
            return int(space["n"]), None, None
        return int(data.sample["action"].max()) + 1 if len(data.sample.get("action", [])) else 1, None, None
    if space is not None and space.get("type") == "Box":
        box = space_from_json(space)
        if np.all(np.isfinite(box.low)) and np.all(np.isfinite(box.high)):
            return None, box.low.reshape(-1).astype(np.float64), box.high.reshape(-1).astype(np.float64)
    return None, None, None

async def policy_bytes(run: JobRun, artifact_id: str) -> bytes:
    records, _ = await run.catalog.find_records("artifacts", ArtifactRecord,
                                                     where={"artifact_id": artifact_id}, limit=1)
    if not records:
        raise MetricUndefined(f"the policy artifact {artifact_id} is gone", field="policy")

    def read() -> bytes:
        with run.objects.open_read(records[0].object_key) as handle:
            return handle.read()
    try:
        return await asyncio.to_thread(read)
    except NotFound as exc:  # deleted between the lookup and the read
        raise MetricUndefined(f"the policy artifact {artifact_id} is gone", field="policy") from exc


async def threaded(run: JobRun, start: float, share: float, stage: str,
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
