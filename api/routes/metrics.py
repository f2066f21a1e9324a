"""Dataset-quality metrics: request them as a job, read the results, compare a benchmark's datasets.

Results follow their dataset's sharing: whoever may read a dataset reads its results, and a
policy's value only if they may read the policy artifact too. A benchmark's frozen metric frame
is shown to its readers and may be replaced or reset by an owner of a record of it; results
computed under another frame then count as stale and the schedule recomputes them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import (
    read_scope,
    readable_benchmark,
    readable_dataset,
    require_owner,
)
from tuplehub.api.deps import Caller, CatalogDep, QueueDep, Reader, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.api.routes.artifacts import readable_artifact
from tuplehub.storage import quotas, versions
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord, continuous_widths, metrics_record
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Forbidden, InvalidRequest, NotFound
from tuplehub.storage.metrics import (
    AverageQParams,
    Comparison,
    ComparisonRow,
    CoverageParams,
    MetricFrame,
    MetricFrameRecord,
    MetricRead,
    MetricRecord,
    MetricsCreate,
    PolicyValueParams,
    TrajectoryQualityParams,
    metrics_job,
)
from tuplehub.storage.models import DatasetRecord, JobRead
from tuplehub.storage.permissions import Principal, can_read, manages_all

router = APIRouter(tags=["metrics"])


@router.post("/datasets/{name}/metrics", status_code=202, responses=problems(NotFound, Forbidden, InvalidRequest))
async def request_metrics(name: str, body: MetricsCreate, caller: Caller, catalog: CatalogDep,
                          queue: QueueDep, settings: SettingsDep) -> JobRead:
    """Start a ``metrics`` job on a version (the latest by default); poll the job, then read the results.

    Results replace the version's earlier ones of the same key, so storing them needs write access
    to the dataset; a reader may still ask for the value of a policy artifact they can read. What
    can be checked before any data is read is checked here: the version, reference returns for
    trajectory quality, the coverage reference, the policy artifact.
    """
    dataset = await readable_dataset(catalog, caller, name)
    try:
        require_owner(caller, dataset, "dataset", "write")
    except Forbidden as exc:  # a reader may still evaluate policies of their own (policy_value)
        if not all(isinstance(params, PolicyValueParams) for params in body.metrics):
            raise Forbidden("storing metric results on a dataset needs write access to it (its owner or a dataset "
                            "administrator); readers may evaluate their own policies (policy_value)") from exc
        for params in body.metrics:
            assert isinstance(params, PolicyValueParams)  # each one is: checked just above
            artifact = await _readable_policy(catalog, caller, params.policy)
            if artifact.owner != caller.id:
                raise Forbidden("on a dataset you cannot write, you may evaluate your own policies only: the stored "
                                "value of this policy is its owner's or the dataset owner's to replace") from exc
    version = await versions.get_version(catalog, dataset, body.version)
    for params in body.metrics:
        await _check(catalog, caller, dataset, params)
    await quotas.require_job_slot(catalog, settings, caller.user_id)
    stored = await catalog.create_job(metrics_job(dataset, version.number, body, owner=caller.user_id))
    await queue.enqueue(stored)
    return JobRead.from_record(stored)


async def _check(catalog: Catalog, caller: Principal, dataset: DatasetRecord, params: object) -> None:
    if isinstance(params, TrajectoryQualityParams) and (params.random_return is None or params.expert_return is None):
        records: list[BenchmarkRecord] = []
        if dataset.benchmark is not None:
            records, _ = await catalog.find_records("benchmarks", BenchmarkRecord,
                                                    where={"benchmark_id": dataset.benchmark})
        chosen = metrics_record(records, dataset.owner)
        if chosen is None or chosen.random_return is None or chosen.expert_return is None:
            raise InvalidRequest("trajectory quality needs random and expert reference returns: give them in the "
                                 "request or store them on the dataset's benchmark", field="references")
    elif isinstance(params, CoverageParams) and params.reference is not None:
        reference = await readable_dataset(catalog, caller, params.reference)
        if reference.benchmark != dataset.benchmark:
            raise InvalidRequest(f"the reference {reference.name!r} is not of {dataset.name!r}'s benchmark: coverage "
                                 "compares data binned alike", field="reference")
        await versions.get_version(catalog, reference, params.reference_version)
    elif isinstance(params, PolicyValueParams | AverageQParams) and params.policy is not None:
        await _readable_policy(catalog, caller, params.policy)


async def _readable_policy(catalog: Catalog, caller: Principal, artifact_id: str) -> ArtifactRecord:
    try:
        return await readable_artifact(catalog, caller, artifact_id)
    except NotFound as exc:
        raise InvalidRequest(f"no policy artifact {artifact_id}", field="policy") from exc


@router.get("/datasets/{name}/metrics", responses=problems(NotFound))
async def dataset_metrics(name: str, caller: Reader, catalog: CatalogDep,
                          version: Annotated[int | None, Query(ge=1, description="The latest if unset.")] = None,
                          ) -> list[MetricRead]:
    """The results computed on one version of a dataset, one per key."""
    dataset = await readable_dataset(catalog, caller, name)
    chosen = await versions.get_version(catalog, dataset, version)
    return await _results(catalog, caller, dataset, chosen.number)


async def _results(catalog: Catalog, caller: Principal, dataset: DatasetRecord, version: int) -> list[MetricRead]:
    records, _ = await catalog.find_records("metrics", MetricRecord, where={"dataset_id": dataset.id,
                                                                            "version": version})
    shown = []
    for record in records:
        if not await _may_see(catalog, caller, record):
            continue
        shown.append(MetricRead(dataset=dataset.name, version=version, key=record.key, computed_at=record.created_at,
                                job_id=record.job_id, params=record.params,
                                benchmark_inputs=record.benchmark_inputs, result=record.result))
    return sorted(shown, key=lambda read: read.key)


async def _may_see(catalog: Catalog, caller: Principal, record: MetricRecord) -> bool:
    """A result shows what went into it: a policy's value needs the policy, a coverage ratio its reference."""
    try:
        if (policy := record.params.get("policy")) is not None:
            await readable_artifact(catalog, caller, policy)
        if (reference := record.benchmark_inputs.get("reference_id")) is not None:
            dataset = await catalog.get_dataset_by_id(reference)
            if dataset is None or not can_read(caller, dataset, "dataset"):
                return False
    except NotFound:
        return False
    return True


@router.get("/benchmarks/{benchmark_id}/metrics", responses=problems(NotFound, InvalidRequest))
async def compare_datasets(benchmark_id: str, caller: Reader, catalog: CatalogDep,
                           dataset: Annotated[list[str] | None, Query(
                               description="Only these datasets, in this order (all readable ones if unset).")] = None,
                           ) -> Comparison:
    """The latest version's results of the benchmark's datasets, side by side."""
    await readable_benchmark(catalog, caller, benchmark_id)
    if dataset:
        chosen = [await readable_dataset(catalog, caller, name) for name in dataset]
        foreign = [d.name for d in chosen if d.benchmark != benchmark_id]
        if foreign:
            raise InvalidRequest(f"not recorded on benchmark {benchmark_id}: {', '.join(foreign)}", field="dataset")
    else:
        page, _ = await catalog.list_datasets(name=None, tag=None, offset=0, limit=1000,
                                              readable=read_scope(caller, "dataset"), benchmark=benchmark_id)
        chosen = list(page)
    rows, warnings = [], []
    for item in chosen:
        latest = (await catalog.list_versions(item.id))[-1:]
        if not latest:
            warnings.append(f"{item.name} has no version yet")
            continue
        results = await _results(catalog, caller, item, latest[0].number)
        rows.append(ComparisonRow(dataset=item.name, version=latest[0].number,
                                  results={read.key: read.result for read in results}))
    return Comparison(benchmark=benchmark_id, rows=rows, warnings=warnings)


@router.get("/benchmarks/{benchmark_id}/frame", responses=problems(NotFound))
async def get_frame(benchmark_id: str, caller: Reader, catalog: CatalogDep) -> MetricFrame:
    """The frozen frame coverage and entropies use for this benchmark's datasets (404 until frozen)."""
    await readable_benchmark(catalog, caller, benchmark_id)
    return (await _stored_frame(catalog, benchmark_id)).frame


async def _stored_frame(catalog: Catalog, benchmark_id: str) -> MetricFrameRecord:
    try:
        return await catalog.get_record("metric_frames", MetricFrameRecord, benchmark_id=benchmark_id)
    except NotFound as exc:
        raise NotFound(f"benchmark {benchmark_id} has no frozen metric frame yet", benchmark=benchmark_id) from exc


async def _frame_author(catalog: Catalog, caller: Principal, benchmark_id: str) -> BenchmarkRecord:
    """The frame is shared by every record of a benchmark, so only the first record's owner (who
    published the spec first) or a benchmark administrator may change it."""
    readable = await readable_benchmark(catalog, caller, benchmark_id)
    records, _ = await catalog.find_records("benchmarks", BenchmarkRecord, where={"benchmark_id": benchmark_id})
    first = min(records, key=lambda r: r.created_at)
    if first.owner == caller.id:
        require_owner(caller, first, "benchmark", "write")  # the token must allow it too
    elif not manages_all(caller, "benchmark"):
        raise Forbidden("a benchmark's metric frame is shared by everyone who stores it: only its first owner or a "
                        "benchmark administrator may change it")
    return readable


@router.put("/benchmarks/{benchmark_id}/frame", responses=problems(NotFound, Forbidden, InvalidRequest))
async def set_frame(benchmark_id: str, body: MetricFrame, caller: Caller, catalog: CatalogDep) -> MetricFrame:
    """Replace the frame by hand (bounds agreed in a paper, say); results under the old one go stale."""
    record = await _frame_author(catalog, caller, benchmark_id)
    widths = continuous_widths(record.spec)
    expected = sum(widths) if widths is not None else None
    if expected is not None and len(body.mean) != expected:
        raise InvalidRequest(f"the benchmark's spaces have {expected} continuous dimensions, the frame "
                             f"{len(body.mean)}", field="mean")
    try:
        stored = await _stored_frame(catalog, benchmark_id)
        await catalog.update_record("metric_frames", MetricFrameRecord, stored.id, frame=body)
    except NotFound:
        await catalog.insert_record("metric_frames", MetricFrameRecord(benchmark_id=benchmark_id, frame=body),
                                    unique=benchmark_id)
    await audit(catalog, caller, "benchmark.frame", "benchmark", benchmark_id, record.name or record.family,
                frame=body.frame_id)
    return body


@router.delete("/benchmarks/{benchmark_id}/frame", status_code=204, responses=problems(NotFound, Forbidden))
async def reset_frame(benchmark_id: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Forget the frame: the next metrics job freezes a new one from its version."""
    record = await _frame_author(catalog, caller, benchmark_id)
    await _stored_frame(catalog, benchmark_id)
    await catalog.delete_records("metric_frames", MetricFrameRecord, benchmark_id=benchmark_id)
    await audit(catalog, caller, "benchmark.frame_reset", "benchmark", benchmark_id, record.name or record.family)
    return Response(status_code=204)
