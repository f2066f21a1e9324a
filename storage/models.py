"""Pydantic models shared by the API, the workers and the client.

Request bodies are ``XCreate``; what the API returns is ``XRead``; what only the catalog keeps is
``XRecord``. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, model_validator

from tuplehub.storage.filters.language import Filter
from tuplehub.storage.schema import TupleSchema

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, examples=["cartpole-mixed"],
                            description="Letters, digits, '.', '_' and '-'; at most 128 characters.")]
BenchmarkId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="A benchmark's content hash.")]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", examples=["demo"])]
T = TypeVar("T")


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond: what MongoDB keeps, so every backend returns the same value."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


class Page(BaseModel, Generic[T]):
    """One page of a listing; ``total`` counts every match, not just this page."""

    items: list[T]
    total: int
    offset: int
    limit: int


# --- datasets and versions -------------------------------------------------------------------

class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "cartpole-mixed", "description": "Random and expert CartPole", "tags": ["demo"]}]})

    name: Name
    description: str = Field("", max_length=10_000)
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    benchmark: BenchmarkId | None = Field(None, description="The benchmark the data was recorded on.")
    authors: list[str] = Field(default_factory=list, max_length=100)
    license: str = Field("", max_length=100, examples=["CC-BY-4.0"])
    citation: str = Field("", max_length=10_000, description="How to cite the data (BibTeX welcome).")
    behavior_policies: list[str] = Field(default_factory=list, max_length=100,
                                         description="The policies that collected the data, in words.")


class DatasetUpdate(BaseModel):
    """Change a dataset's card; fields left out stay as they are, a field sent as ``null`` is cleared."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=10_000)
    tags: list[Tag] | None = Field(None, max_length=64)
    benchmark: BenchmarkId | None = None
    authors: list[str] | None = Field(None, max_length=100)
    license: str | None = Field(None, max_length=100)
    citation: str | None = Field(None, max_length=10_000)
    behavior_policies: list[str] | None = Field(None, max_length=100)


class DatasetRecord(BaseModel):
    id: str = Field(default_factory=new_id)
    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    benchmark: str | None = None
    authors: list[str] = Field(default_factory=list)
    license: str = ""
    citation: str = ""
    behavior_policies: list[str] = Field(default_factory=list)
    owner: str
    created_at: datetime = Field(default_factory=utcnow)
    public: bool = Field(False, description="Readable by every signed-in user.")
    groups: list[str] = Field(default_factory=list, description="Ids of the groups it is published to.")

    @computed_field
    @property
    def visibility(self) -> Literal["private", "groups", "public"]:
        return "public" if self.public else "groups" if self.groups else "private"


class UploadMode(StrEnum):
    append = "append"
    replace = "replace"  # type: ignore[assignment]  # the wire value; no caller uses str.replace on a mode


class Moments(BaseModel):
    """Count, sum, sum of squares, min and max: enough to combine statistics across segments."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def merge(self, other: Moments) -> Moments:
        lows = [v for v in (self.low, other.low) if v is not None]
        highs = [v for v in (self.high, other.high) if v is not None]
        return Moments(count=self.count + other.count, total=self.total + other.total,
                       squares=self.squares + other.squares, low=min(lows) if lows else None,
                       high=max(highs) if highs else None)

    def summary(self) -> Summary | None:
        if not self.count:
            return None
        mean = self.total / self.count
        return Summary(mean=mean, std=math.sqrt(max(self.squares / self.count - mean * mean, 0.0)),
                       min=self.low if self.low is not None else mean,
                       max=self.high if self.high is not None else mean)


class Summary(BaseModel):
    mean: float
    std: float
    min: float
    max: float


class SegmentRef(BaseModel):
    """The blocks and episodes one ingest wrote; versions list the segments they are made of."""

    id: str
    episodes: int
    transitions: int
    returns: Moments | None = Field(None, description="Of the segment's episode returns (computed at ingest).")
    lengths: Moments | None = None
    terminated: int = 0
    content_hash: str | None = Field(None, description="Of its rows and episode metadata, however they were cut.")


class VersionStats(BaseModel):
    """Figures of a version computed at ingest, shown on the dataset card."""

    episodes: int
    transitions: int
    returns: Summary | None
    lengths: Summary | None
    terminated_share: float | None = Field(None, description="Share of episodes that ended by termination.")


class LineageSource(BaseModel):
    """One input of a derived version: which version, and which of its episodes."""

    dataset: str
    dataset_id: str
    version: int
    content_hash: str | None
    episodes: Filter | None = None
    where: Filter | None = None
    sample: Sampling | None = None
    rebalance: Rebalance | None = None


class Lineage(BaseModel):
    """How a derived version was made, enough to make it again."""

    sources: list[LineageSource]
    renumber: bool
    job_id: str


class VersionRecord(BaseModel):
    """An immutable dataset version: the concatenation of its segments, in order."""

    dataset_id: str
    number: int
    created_at: datetime = Field(default_factory=utcnow)
    mode: UploadMode
    parent: int | None = None
    segments: list[SegmentRef]
    tuple_schema: TupleSchema = Field(alias="schema")
    job_id: str
    lineage: Lineage | None = Field(None, description="Set on versions derived from other versions.")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @computed_field
    @property
    def episodes(self) -> int:
        return sum(segment.episodes for segment in self.segments)

    @computed_field
    @property
    def transitions(self) -> int:
        return sum(segment.transitions for segment in self.segments)

    @computed_field
    @property
    def stats(self) -> VersionStats | None:
        """Return and length statistics over every segment (None for data ingested before they existed)."""
        if any(segment.returns is None or segment.lengths is None for segment in self.segments):
            return None
        returns, lengths = Moments(), Moments()
        for segment in self.segments:
            returns = returns.merge(segment.returns)  # type: ignore[arg-type]
            lengths = lengths.merge(segment.lengths)  # type: ignore[arg-type]
        return VersionStats(episodes=self.episodes, transitions=self.transitions, returns=returns.summary(),
                            lengths=lengths.summary(),
                            terminated_share=self.terminated / self.episodes if self.episodes else None)

    @property
    def terminated(self) -> int:
        return sum(segment.terminated for segment in self.segments)

    @computed_field
    @property
    def content_hash(self) -> str | None:
        """Of the version's content (rows and episode metadata, in order): equal data, equal hash."""
        if any(segment.content_hash is None for segment in self.segments):
            return None
        joined = "".join(segment.content_hash or "" for segment in self.segments)
        return hashlib.sha256(joined.encode()).hexdigest()[:32]


class DatasetRead(DatasetRecord):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "5b0c3c0e2f8a4b0e9d1e6f7a8b9c0d1e", "name": "cartpole-mixed", "description": "", "tags": ["demo"],
        "owner": "local", "created_at": "2026-11-24T12:00:00Z", "latest_version": 1, "versions": [{
            "dataset_id": "5b0c3c0e2f8a4b0e9d1e6f7a8b9c0d1e", "number": 1, "mode": "append", "parent": None,
            "segments": [{"id": "3f1c0e5b9a2d4c7e8f6a1b2c3d4e5f60", "episodes": 40, "transitions": 10487}],
            "episodes": 40, "transitions": 10487, "job_id": "3f1c0e5b9a2d4c7e8f6a1b2c3d4e5f60",
            "created_at": "2026-11-24T12:00:01Z",
            "schema": {"episode_id": "int", "observation": {"dtype": "float32", "shape": [4]},
                       "action": {"dtype": "int64", "shape": []}, "reward": "float32", "info": {}}}]}]})

    versions: list[VersionRecord] = Field(default_factory=list)
    published_to: list[str] = Field(default_factory=list, description="Names of the groups it is published to.")
    owner_name: str | None = Field(None, description="The owner's user name (None if the account is gone).")

    @computed_field
    @property
    def latest_version(self) -> int | None:
        return self.versions[-1].number if self.versions else None


class DatasetSummary(DatasetRecord):
    latest_version: int | None = None
    episodes: int = 0
    transitions: int = 0


class EpisodeBase(BaseModel):
    """What every episode carries: statistics computed at ingest, and free-form metadata."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    index: int
    episode_id: int | str
    length: int
    return_: float = Field(alias="return")
    reward_min: float
    reward_max: float
    first_step: int
    last_step: int
    terminated: bool
    truncated: bool
    metadata: dict[str, Any] = Field(default_factory=dict)


class EpisodeRecord(EpisodeBase):
    """One episode as the catalog keeps it: ``index`` counts from 0 within its segment."""

    segment: str
    row_start: int


class EpisodeRead(EpisodeBase):
    """An episode as listed for a version: ``index`` counts over the whole version."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "index": 0, "episode_id": 0, "length": 500, "return": 500.0, "reward_min": 1.0, "reward_max": 1.0,
        "first_step": 0, "last_step": 499, "terminated": False, "truncated": True, "termination": "truncated",
        "metadata": {"policy": "expert"}}]})

    @computed_field
    @property
    def termination(self) -> Literal["terminated", "truncated", "none"]:
        return "terminated" if self.terminated else "truncated" if self.truncated else "none"


# --- jobs -------------------------------------------------------------------------------------

class JobKind(StrEnum):
    ingest = "ingest"
    export = "export"
    derive = "derive"
    artifact = "artifact"
    metrics = "metrics"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Progress(BaseModel):
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    stage: str = "queued"
    message: str = ""


class JobError(BaseModel):
    """Why a job failed; upload errors name the column, the row and the reason."""

    code: str
    detail: str
    column: str | None = None
    row: int | None = None
    reason: str | None = None


class JobRecord(BaseModel):
    id: str = Field(default_factory=new_id)
    kind: JobKind
    owner: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = JobStatus.queued
    progress: Progress = Field(default_factory=Progress)
    attempts: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None
    dedup_key: str | None = None
    cancel_requested: bool = False
    worker: str | None = None
    heartbeat_at: datetime | None = None
    # Attempts whose worker process died before recording an outcome, and when progress last moved.
    lost: int = 0
    progress_at: datetime | None = None
    # The trace of the request (or job) that created this job, so the job's log lines carry it too; set
    # by the catalog's ``create_job`` (jobstate.created), not as a default: a record stored before trace
    # ids must not take the trace of whichever request reads it (and writes it back, cancelling it, say).
    trace_id: str | None = None
    # With traces on (storage/tracing.py), the span that created this job, as a W3C traceparent (its trace id
    # is trace_id): the worker's span for the job is its child. Set with trace_id, by the same rule.
    traceparent: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class JobRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3f1c0e5b9a2d4c7e8f6a1b2c3d4e5f60", "kind": "ingest", "status": "running",
        "progress": {"fraction": 0.42, "stage": "ingest", "message": "row group 4 of 10"},
        "attempts": 1, "created_at": "2026-11-24T12:00:00Z"}]})

    id: str
    kind: JobKind
    owner: str
    owner_name: str | None = Field(None, description=(
        "The owner's user name where jobs are read (`GET /jobs`, `/jobs/{id}`, cancel); None if the account "
        "is gone, and in the answer that starts a job (the caller is its owner)."))
    params: dict[str, Any]
    status: JobStatus
    progress: Progress
    attempts: int
    error: JobError | None = None
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_record(cls, record: JobRecord, *, owner_name: str | None = None) -> JobRead:
        return cls.model_validate({**record.model_dump(), "owner_name": owner_name})


# --- uploads ----------------------------------------------------------------------------------

_INT64 = (-(2**63), 2**63 - 1)
_METADATA_DEPTH = 32


def storable(value: Any, path: str, depth: int = 0) -> Any:
    """Metadata every catalog can store: BSON has no integers past int64, JSON no NaN."""
    if depth > _METADATA_DEPTH:
        raise ValueError(f"{path} nests deeper than {_METADATA_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{path} = {value} does not fit a 64-bit integer")
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{path} = {value} is not a finite number")
        return value
    if isinstance(value, dict):
        for key in value:
            # Operator-looking or dotted keys would be read as query syntax by a document database.
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                raise ValueError(f"{path} has the key {key!r}; keys may not start with '$' or hold '.'")
        return {key: storable(item, f"{path}.{key}", depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ValueError(f"{path} holds a {type(value).__name__}, which JSON cannot carry")


def _check_metadata(metadata: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for episode, values in metadata.items():
        storable(values, f"episode_metadata[{episode!r}]")
    return metadata


EpisodeMetadata = Annotated[dict[str, dict[str, Any]], AfterValidator(_check_metadata)]

class UploadStatus(StrEnum):
    open = "open"
    completed = "completed"
    aborted = "aborted"
    expired = "expired"


class UploadCreate(BaseModel):
    mode: UploadMode = UploadMode.append
    part_size: int = Field(64 * 2**20, ge=2**16, le=2**32,
                           description="Bytes in every part but the last; S3 needs at least 5 MiB.")
    episode_metadata: EpisodeMetadata = Field(
        default_factory=dict, description="Free-form JSON per episode, keyed by episode id as a string.")
    size: int | None = Field(None, ge=0, le=2**62, description=(
        "Bytes of the whole upload when known (a file): checked against the server's limits at once, "
        "and the parts must add up to it."))
    fingerprint: str | None = Field(None, max_length=200, description=(
        "The client's name for the file's content, kept so an interrupted upload can be found and resumed."))
    tuple_schema: TupleSchema | None = Field(None, alias="schema", description=(
        "The schema the upload's columns imply (from its Parquet footer): an append that does not match "
        "the dataset is refused before any byte is sent."))

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [{
        "mode": "append", "part_size": 67108864, "episode_metadata": {"0": {"policy": "random"}}}]})


class UploadRecord(BaseModel):
    id: str = Field(default_factory=new_id)
    dataset_id: str
    dataset: str
    owner: str
    mode: UploadMode
    part_size: int
    object_key: str
    multipart_id: str | None = None
    status: UploadStatus = UploadStatus.open
    episode_metadata: dict[str, dict[str, Any]] = Field(default_factory=dict)
    artifact: dict[str, Any] | None = Field(None, description="Set when the session uploads an artifact.")
    job_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    size: int | None = None
    fingerprint: str | None = None


class UploadRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a", "dataset": "cartpole-mixed", "mode": "append",
        "part_size": 33554432, "status": "open", "transport": "api", "job_id": None,
        "created_at": "2026-11-24T12:00:00Z", "expires_at": "2026-11-25T12:00:00Z"}]})

    id: str
    dataset: str
    mode: UploadMode
    part_size: int
    status: UploadStatus
    transport: Literal["presigned", "api"] = Field(
        description="presigned: PUT each part to a URL from /parts; api: PUT it to /parts/{number}.")
    job_id: str | None = None
    created_at: datetime
    expires_at: datetime
    size: int | None = Field(None, description="Bytes of the whole upload, as declared when it was opened.")
    fingerprint: str | None = None


class PartURLsRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"numbers": [1, 2, 3, 4]}]})

    numbers: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(min_length=1, max_length=1000)


class PartURL(BaseModel):
    number: int
    url: str
    method: Literal["PUT"] = "PUT"
    expires_at: datetime


class UploadedPart(BaseModel):
    number: int = Field(ge=1, le=10_000)
    etag: str


class ReceivedPart(BaseModel):
    """A part the store holds: its etag is the MD5 of its bytes (quoted, as S3 gives it, on S3)."""

    number: int
    etag: str
    size: int


class UploadComplete(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "parts": [{"number": 1, "etag": "b1946ac92492d2347c6235b4d2611184"},
                  {"number": 2, "etag": "591785b794601e212b260e25925636fd"}]}]})

    parts: list[UploadedPart] = Field(min_length=1, max_length=10_000)
    episode_metadata: EpisodeMetadata = Field(
        default_factory=dict, description="More episode metadata, merged over what the session was opened with "
                                          "(for sources whose metadata is known only once sent).")


# --- exports ----------------------------------------------------------------------------------

class ExportFormat(StrEnum):
    parquet = "parquet"
    arrow = "arrow"


class Sampling(BaseModel):
    """Take ``n`` or a ``fraction`` of the episodes (exactly) or of the rows, chosen by ``seed``."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["episode", "tuple"] = "episode"
    fraction: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    complement: bool = Field(False, description="Take what the same sample leaves out (the other part of a split).")

    @model_validator(mode="after")
    def _one_size(self) -> Sampling:
        if (self.fraction is None) == (self.n is None):
            raise ValueError("give exactly one of fraction and n")
        return self


class Rebalance(BaseModel):
    """Keep every row that matches ``keep`` and a ``rest_fraction`` of the others (sparse rewards)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "keep": {"op": "gt", "field": "reward", "value": 0}, "rest_fraction": 0.1, "seed": 0}]})

    keep: Filter
    rest_fraction: float = Field(ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**63 - 1)


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "version": 1, "episodes": {"op": "in", "field": "metadata.policy", "values": ["expert"]},
        "where": {"op": "gt", "field": "reward", "value": 0}, "next_observation": True}]})

    version: int | None = Field(None, ge=1, description="Dataset version; the latest when omitted.")
    episodes: Filter | None = Field(None, description="Episode filter (episode fields, metadata).")
    where: Filter | None = Field(None, description="Tuple filter (row fields and episode fields).")
    columns: list[str] | None = Field(None, description="Columns to return; all when omitted.")
    next_observation: bool = Field(False, description="Add next_observation for every row.")
    sample: Sampling | None = Field(None, description="After the filters: a seeded sample of episodes or rows.")
    rebalance: Rebalance | None = Field(None, description="After the filters: all rows matching one filter, "
                                                          "a fraction of the rest.")
    format: ExportFormat = ExportFormat.parquet


class DeriveSource(BaseModel):
    """What to take from one version: the selections of an export.

    With only an episode filter and an episode sample, whole episodes are taken. A tuple filter, a
    row sample or rebalancing cut episodes into *pieces* (runs of consecutive steps); each piece
    becomes an episode of its own, ending ``truncated`` where it was cut (not terminal: the real
    episode went on), so ``renumber`` is required.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: Name
    version: int | None = Field(None, ge=1, description="The latest when omitted.")
    episodes: Filter | None = None
    where: Filter | None = None
    sample: Sampling | None = None
    rebalance: Rebalance | None = None

    @property
    def cuts_episodes(self) -> bool:
        return self.where is not None or self.rebalance is not None or \
            (self.sample is not None and self.sample.level == "tuple")


class DeriveCreate(BaseModel):
    """Make a version of this dataset from episodes of others (or of itself), on the server."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "sources": [{"dataset": "pendulum-mixed", "episodes": {"op": "gt", "field": "return", "value": -300}}],
        "mode": "replace"}]})

    sources: list[DeriveSource] = Field(min_length=1, max_length=32)
    mode: UploadMode = UploadMode.replace
    renumber: bool = Field(False, description="Number the episodes 0..N-1 (needed when sources share ids); "
                                              "the original ids stay in metadata.source.")

    @model_validator(mode="after")
    def _pieces_need_new_ids(self) -> DeriveCreate:
        if not self.renumber and any(source.cuts_episodes for source in self.sources):
            raise ValueError("a tuple filter, row sample or rebalancing cuts episodes into pieces, which need "
                             "ids of their own: set renumber")
        return self


class DownloadURL(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "url": "http://127.0.0.1:8470/api/v1/exports/3f1c0e5b9a2d4c7e8f6a1b2c3d4e5f60/file", "size": 1048576,
        "expires_at": None}]})

    url: str
    expires_at: datetime | None = None
    size: int
