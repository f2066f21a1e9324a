"""Dataset-quality metrics as the catalog, the API and the client see them.

Metrics are pure functions (``tuplehub.workers.metrics``): arrays and parameters in, a
:class:`MetricResult` out. The same algorithm version, parameters and seed give the same number.
A ``metrics`` job computes a :class:`MetricsCreate` on one dataset version and keeps one
:class:`MetricRecord` per (version, result key); a benchmark carries the :class:`MetricFrame`
that makes coverage and entropies of its datasets comparable. Each metric's parameter class also
states the facts about it (``cheap``, ``framed``, ``needs_torch``, ``sample_rows``...) that the
API, the client and the workers read; ``PARAMS`` finds the class by name.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuplehub.storage.access import StoredRecord
from tuplehub.storage.models import DatasetRecord, JobKind, JobRecord, Name


class MetricResult(BaseModel):
    metric: str
    value: float | None = Field(description="None when the metric is undefined for this data (see warnings).")
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = Field(None, examples=["episode bootstrap, 95% percentile"])
    n_rows_used: int
    n_episodes_used: int
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="Figures beside the value (histograms...).")
    algo_version: str


class ComparisonRow(BaseModel):
    dataset: str
    version: int
    results: dict[str, MetricResult] = Field(
        default_factory=dict, description="By result key (the metric name, or 'policy_value:<artifact id>').")


class Comparison(BaseModel):
    benchmark: str | None = Field(None, description="The benchmark id all rows share, if any.")
    rows: list[ComparisonRow]
    warnings: list[str] = Field(default_factory=list)


# --- requests --------------------------------------------------------------------------------------

class MetricName(StrEnum):
    returns = "returns"
    trajectory_quality = "trajectory_quality"
    return_improvement = "return_improvement"
    state_action_coverage = "state_action_coverage"
    shannon_entropy = "shannon_entropy"
    behavioral_entropy = "behavioral_entropy"
    average_q = "average_q"
    policy_value = "policy_value"
    action_entropy = "action_entropy"


class _MetricParams(BaseModel):
    """A metric's request parameters, and (as class variables, not fields) the facts about the metric
    that the API, the client and the workers go by, so that none of them keeps its own list."""

    model_config = ConfigDict(extra="forbid")

    cheap: ClassVar[bool] = False  # runs after every ingest and is kept fresh by the sweep
    framed: ClassVar[bool] = False  # reads features through the benchmark's frozen frame (stale when it changes)
    needs_torch: ClassVar[bool] = False  # the workers need the ``torch`` extra
    next_observation: ClassVar[bool] = False  # reads each row's next observation
    episode_starts: ClassVar[bool] = False  # needs the wide columns of every episode's first row

    @property
    def sample_rows(self) -> int:
        """Rows of observations and actions (the wide columns) it needs; 0: the scalars of every row do."""
        return 0


class ReturnsParams(_MetricParams):
    cheap = True
    metric: Literal["returns"] = "returns"
    gamma: float = Field(1.0, gt=0, le=1, description="Discount of the episode returns (1: undiscounted).")
    bins: int = Field(50, ge=1, le=1000, description="Bins of the return histogram.")


class TrajectoryQualityParams(_MetricParams):
    metric: Literal["trajectory_quality"] = "trajectory_quality"
    random_return: float | None = Field(None, description="Overrides the benchmark's random reference.")
    expert_return: float | None = Field(None, description="Overrides the benchmark's expert reference.")


class ReturnImprovementParams(_MetricParams):
    cheap = True
    metric: Literal["return_improvement"] = "return_improvement"
    lower_bound: float | None = Field(None, description="c in G - c; the data's smallest return if unset.")


class CoverageParams(_MetricParams):
    cheap, framed = True, True
    metric: Literal["state_action_coverage"] = "state_action_coverage"
    bins: int = Field(20, ge=2, le=1000, description="Bins per continuous dimension of the frozen frame.")
    reference: Name | None = Field(None, description="Normalise by this dataset's coverage at the same size.")
    reference_version: int | None = Field(None, ge=1, description="The reference's version; its latest if unset.")


class _KnnParams(_MetricParams):
    framed = True
    k: int = Field(5, ge=1, le=100)
    queries: int = Field(20_000, ge=100, le=1_000_000, description="Seeded query points (every point a neighbour).")
    max_points: int = Field(500_000, ge=1_000, le=2_000_000,
                            description="Rows above this are subsampled, seeded, before the search.")

    @property
    def sample_rows(self) -> int:
        return self.max_points


class ShannonEntropyParams(_KnnParams):
    metric: Literal["shannon_entropy"] = "shannon_entropy"


class BehavioralEntropyParams(_KnnParams):
    metric: Literal["behavioral_entropy"] = "behavioral_entropy"
    alpha: float = Field(0.5, gt=0, le=10, description="Prelec weighting exponent.")
    beta: float | None = Field(None, gt=0, description="Prelec scale; (ln D)^(1 - alpha) if unset.")


class _FittedQParams(_MetricParams):
    needs_torch, next_observation = True, True
    gamma: float = Field(0.99, ge=0, lt=1)
    steps: int | None = Field(None, ge=10, le=1_000_000, description="Q gradient steps per seed (fixed).")
    seeds: int | None = Field(None, ge=1, le=10, description="Training seeds: the spread is the interval.")
    # Memory: about 16 bytes per observation entry per row (the sample and its float32 tensors, both s and
    # s'): 400,000 rows at obs 105 is ~700 MB, which keeps a worker under 2 GB on the ant-expert shape.
    max_rows: int = Field(400_000, ge=1_000, le=2_000_000,
                          description="Transitions above this are subsampled, seeded, before training.")

    @property
    def sample_rows(self) -> int:
        return self.max_rows


class AverageQParams(_FittedQParams):
    metric: Literal["average_q"] = "average_q"
    target: Literal["policy", "sarsa", "fqi"] = Field(
        "policy", description="Next-state value: an evaluation policy, the data's next action, or the max.")
    policy: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "With target 'policy': the id of a TorchScript policy artifact to evaluate; behaviour cloning if unset."))
    bc_steps: int | None = Field(None, ge=10, le=1_000_000)

    @model_validator(mode="after")
    def _policy_needs_its_target(self) -> AverageQParams:
        if self.policy is not None and self.target != "policy":
            raise ValueError(f"a policy artifact gives the next-state value, so target must be 'policy', not "
                             f"{self.target!r}")
        return self


class PolicyValueParams(_FittedQParams):
    episode_starts = True  # the value is V(s0) averaged over the episodes' first rows
    metric: Literal["policy_value"] = "policy_value"
    policy: str = Field(pattern=r"^[0-9a-f]{64}$", description="The id of a TorchScript policy artifact.")


class ActionEntropyParams(_MetricParams):
    metric: Literal["action_entropy"] = "action_entropy"
    max_rows: int = Field(1_000_000, ge=1_000, le=2_000_000,
                          description="Rows above this are subsampled, seeded, before counting the actions.")

    @property
    def sample_rows(self) -> int:
        return self.max_rows


MetricParams = Annotated[
    ReturnsParams | TrajectoryQualityParams | ReturnImprovementParams | CoverageParams | ShannonEntropyParams
    | BehavioralEntropyParams | AverageQParams | PolicyValueParams | ActionEntropyParams,
    Field(discriminator="metric")]

# Each metric's parameter class, by name: where its facts (``cheap``, ``framed``...) are looked up.
PARAMS: dict[MetricName, type[_MetricParams]] = {
    MetricName(cls.model_fields["metric"].default): cls for cls in get_args(get_args(MetricParams)[0])}
# What runs after every ingest and what the sweep keeps fresh (linear in rows, seconds at 2 M rows),
# with trajectory quality beside them where the benchmark has reference returns.
CHEAP_METRICS = tuple(name for name, cls in PARAMS.items() if cls.cheap)


def result_key(params: BaseModel) -> str:
    """A version keeps one result per key: the metric, and for a policy's value the policy too."""
    metric = params.metric  # type: ignore[attr-defined]
    return f"{metric}:{params.policy}" if metric == MetricName.policy_value else metric  # type: ignore[attr-defined]


MAX_METRICS_PER_REQUEST = 16


class MetricsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "metrics": [{"metric": "returns"}, {"metric": "state_action_coverage", "bins": 20},
                    {"metric": "behavioral_entropy", "alpha": 0.5}], "seed": 0}]})

    version: int | None = Field(None, ge=1, description="The dataset version; the latest if unset.")
    metrics: list[MetricParams] = Field(min_length=1, max_length=MAX_METRICS_PER_REQUEST)
    seed: int = Field(0, ge=0, lt=2**63, description="Seeds every subsample, bootstrap and training run.")

    @model_validator(mode="after")
    def _one_per_key(self) -> MetricsCreate:
        keys = [result_key(params) for params in self.metrics]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"each result is asked for once: {', '.join(repeated)} repeats (a version keeps one "
                             "result per key)")
        return self


def metrics_job(dataset: DatasetRecord, version: int, request: MetricsCreate, *, owner: str,
                scheduled: bool = False) -> JobRecord:
    """The catalog job for a metrics request. Scheduled jobs (after an ingest, by the sweep) share a
    key per version, so at most one of them waits in the queue for a version at a time, and they
    skip what the data cannot give instead of failing."""
    return JobRecord(kind=JobKind.metrics, owner=owner, params={
        "dataset": dataset.name, "dataset_id": dataset.id, "version": version,
        "request": request.model_dump(mode="json"), "scheduled": scheduled},
        dedup_key=f"metrics:{dataset.id}:{version}:{_keys_digest(request)}:scheduled" if scheduled else None)


def _keys_digest(request: MetricsCreate) -> str:
    keys = json.dumps([request.seed, sorted(result_key(params) for params in request.metrics)])
    return hashlib.sha256(keys.encode()).hexdigest()[:16]


# --- results -----------------------------------------------------------------------------------

class MetricRecord(StoredRecord):
    """The latest result of one key on one dataset version, with what is needed to recompute it."""

    dataset_id: str
    version: int
    key: str
    params: dict[str, Any] = Field(description="The request for this metric, as JSON.")
    seed: int
    benchmark_inputs: dict[str, Any] = Field(
        default_factory=dict, description="What came from the benchmark (frame id, references): stale if changed.")
    job_id: str
    result: MetricResult


class MetricRead(BaseModel):
    dataset: str
    version: int
    key: str
    computed_at: datetime
    job_id: str
    params: dict[str, Any]
    benchmark_inputs: dict[str, Any]
    result: MetricResult


# --- the frozen frame ------------------------------------------------------------------------------

MAX_FRAME_DIMS = 100_000
FRAME_LIMIT = 1e12  # standardised units: larger bounds would overflow the bin arithmetic

class MetricFrame(BaseModel):
    """How a benchmark's data is turned into features for coverage and kNN entropies, frozen.

    Continuous columns (float observations and actions) are standardised by ``mean``/``scale`` and,
    above 6 dimensions, projected on the principal ``components`` of a reference sample; coverage
    bins the first ``coverage_dims`` features on ``coverage_low``/``coverage_high``, entropies use
    the first ``entropy_dims``. Integer columns (discrete observations, actions) are used as they
    are. Freezing all of it per benchmark is what makes two datasets' numbers comparable.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source: str = Field(max_length=500, description="Where it came from: a version's sample, or set by hand.")
    mean: list[Annotated[float, Field(ge=-FRAME_LIMIT, le=FRAME_LIMIT)]] = Field(max_length=MAX_FRAME_DIMS)
    scale: list[Annotated[float, Field(gt=0, le=FRAME_LIMIT)]] = Field(max_length=MAX_FRAME_DIMS)
    components: list[list[Annotated[float, Field(ge=-1, le=1)]]] | None = Field(
        None, min_length=1, max_length=MAX_FRAME_DIMS, description="Rows are unit axes in standardised units.")
    coverage_dims: int = Field(ge=0, le=MAX_FRAME_DIMS)
    coverage_low: list[Annotated[float, Field(ge=-FRAME_LIMIT, le=FRAME_LIMIT)]]
    coverage_high: list[Annotated[float, Field(ge=-FRAME_LIMIT, le=FRAME_LIMIT)]]
    entropy_dims: int = Field(ge=0, le=MAX_FRAME_DIMS)

    @model_validator(mode="after")
    def _consistent(self) -> MetricFrame:
        d = len(self.mean)
        width = len(self.components) if self.components is not None else d
        problems = []
        if len(self.scale) != d:
            problems.append(f"scale needs {d} entries, one per mean")
        if self.components is not None and any(len(axis) != d for axis in self.components):
            problems.append(f"every component needs {d} entries")
        if self.coverage_dims > width or self.entropy_dims > width:
            problems.append(f"coverage_dims and entropy_dims are at most {width}")
        if len(self.coverage_low) != self.coverage_dims or len(self.coverage_high) != self.coverage_dims or any(
                high <= low for low, high in zip(self.coverage_low, self.coverage_high, strict=False)):
            problems.append("coverage_low and coverage_high need coverage_dims entries each, with high > low")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def frame_id(self) -> str:
        canonical = json.dumps(self.model_dump(exclude={"source"}), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class MetricFrameRecord(StoredRecord):
    """A benchmark's frozen frame: one per benchmark id, shared by every owner's record of it."""

    benchmark_id: str
    frame: MetricFrame
