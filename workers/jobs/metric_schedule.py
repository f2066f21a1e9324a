"""Metrics nobody asked for: the cheap set after every ingest, and a sweep for missing or stale ones.

A result is stale when its metric's algorithm changed (its ``algo_version``), or what it took from
the benchmark changed (the frozen frame, the reference returns). A new version is missing the
results its dataset's earlier versions had, which the sweep computes with the same parameters.
Only each dataset's latest version is kept fresh. Jobs the sweep queues carry a per-version
``dedup_key``, so a slow job is never queued twice, and the job's own lock keeps it from running
beside a user's request on the same version.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from tuplehub.storage.benchmarks import BenchmarkRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import NotFound
from tuplehub.storage.metrics import (
    CHEAP_METRICS,
    MAX_METRICS_PER_REQUEST,
    PARAMS,
    MetricFrameRecord,
    MetricName,
    MetricRecord,
    MetricsCreate,
    metrics_job,
)
from tuplehub.storage.models import DatasetRecord
from tuplehub.storage.queue import Queue
from tuplehub.workers.context import WorkerContext
from tuplehub.workers.jobs.metric_registry import METRICS
from tuplehub.workers.jobs.metrics import benchmark_of
from tuplehub.workers.metrics import fqe

logger = logging.getLogger("tuplehub.workers")

PAGE = 500
MAX_DATASETS = 1_000_000


async def queue_cheap_metrics(catalog: Catalog, queue: Queue, dataset: DatasetRecord, version: int) -> None:
    """After an ingest: the cheap metrics of the new version, in the background."""
    benchmark = await benchmark_of(catalog, dataset)
    request = MetricsCreate.model_validate({"metrics": _cheap(benchmark), "seed": 0})
    await queue.enqueue(await catalog.create_job(metrics_job(dataset, version, request, owner=dataset.owner,
                                                             scheduled=True)))


def _cheap(benchmark: BenchmarkRecord | None) -> list[dict[str, Any]]:
    chosen = [{"metric": metric.value} for metric in CHEAP_METRICS]
    if benchmark is not None and benchmark.random_return is not None and benchmark.expert_return is not None:
        chosen.append({"metric": MetricName.trajectory_quality.value})
    return chosen


async def recompute_metrics(ctx: WorkerContext) -> int:
    """The sweep: queue a job for every dataset whose latest version lacks fresh results; how many."""
    catalog, queue = ctx["catalog"], ctx["queue"]
    queued = 0
    for offset in range(0, MAX_DATASETS, PAGE):
        page, total = await catalog.list_datasets(name=None, tag=None, offset=offset, limit=PAGE)
        for summary in page:
            if summary.latest_version is None:
                continue
            try:
                for request in await stale_requests(catalog, summary, summary.latest_version):
                    job = await catalog.create_job(metrics_job(summary, summary.latest_version, request,
                                                               owner=summary.owner, scheduled=True))
                    queued += await queue.enqueue(job)
            except NotFound:  # deleted meanwhile
                continue
            except Exception:
                logger.exception("metrics sweep: dataset %s skipped", summary.name)
        if offset + PAGE >= total:
            break
    return queued


async def stale_requests(catalog: Catalog, dataset: DatasetRecord, version: int) -> list[MetricsCreate]:
    """What the sweep would recompute on ``version``: missing and stale results with the parameters
    and seed they were last computed with, one request per seed."""
    records, _ = await catalog.find_records("metrics", MetricRecord, where={"dataset_id": dataset.id})
    benchmark = await benchmark_of(catalog, dataset)
    frame_id = None
    if dataset.benchmark is not None:
        with contextlib.suppress(NotFound):
            frame_id = (await catalog.get_record("metric_frames", MetricFrameRecord,
                                                 benchmark_id=dataset.benchmark)).frame.frame_id
    wanted: dict[str, tuple[dict[str, Any], int]] = {params["metric"]: (params, 0) for params in _cheap(benchmark)}
    for record in sorted(records, key=lambda r: r.created_at):  # the latest computation of each key wins
        wanted[record.key] = (record.params, record.seed)
    current = {record.key: record for record in records if record.version == version}
    torch = fqe.torch_available()
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for key, (params, seed) in wanted.items():
        metric = MetricName(params["metric"])
        if PARAMS[metric].needs_torch and not torch:
            continue
        stored = current.get(key)
        if stored is None or _stale(stored, metric, benchmark, frame_id, dataset.benchmark):
            by_seed.setdefault(seed, []).append(params)
    return [MetricsCreate.model_validate({"metrics": chosen[start:start + MAX_METRICS_PER_REQUEST], "seed": seed})
            for seed, chosen in by_seed.items() for start in range(0, len(chosen), MAX_METRICS_PER_REQUEST)]


def _stale(record: MetricRecord, metric: MetricName, benchmark: BenchmarkRecord | None, frame_id: str | None,
           benchmark_id: str | None) -> bool:
    if record.result.algo_version != METRICS[metric].version:
        return True
    inputs = record.benchmark_inputs
    if PARAMS[metric].framed:
        if "benchmark" in inputs and inputs["benchmark"] != benchmark_id:  # a benchmark set or changed since
            return True
        # None: computed on the version's own frame; redo when the frame it had to reject changed.
        if inputs.get("frame") is not None and inputs["frame"] != frame_id:
            return True
        if "rejected_frame" in inputs and inputs["rejected_frame"] != frame_id:
            return True
    if "references" in inputs:
        now = [benchmark.random_return, benchmark.expert_return] if benchmark is not None else [None, None]
        return inputs["references"] != now
    return False

