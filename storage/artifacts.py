"""Artifacts: any file (a policy, a time series, hyperparameters), stored once per content.

An artifact's id is the SHA-256 of its bytes. Uploading the same bytes again, by anyone, keeps one
object in the store; each owner keeps their own record of it (name, media type, metadata, links
to benchmarks and datasets, visibility), like benchmarks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tuplehub.storage.access import SharedRecord
from tuplehub.storage.models import storable

# RFC 6838 section 4.2 restricted names, ASCII only: a stored type is sent back as a Content-Type header,
# which must be Latin-1, so anything else would make every download of the artifact fail.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE = rf"^{_NAME}/{_NAME}$"


def _storable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    storable(metadata, "metadata")
    return metadata


class ArtifactUploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "sac-policy.d3", "media_type": "application/octet-stream", "metadata": {"algorithm": "SAC"},
        "benchmarks": [], "datasets": ["pendulum-mixed"]}]})

    name: str = Field(min_length=1, max_length=200)
    media_type: str = Field("application/octet-stream", max_length=255, pattern=MEDIA_TYPE,
                            description="type/subtype as RFC 6838 names them (ASCII), e.g. application/json.")
    metadata: Annotated[dict[str, Any], AfterValidator(_storable_metadata)] = Field(default_factory=dict)
    benchmarks: list[str] = Field(default_factory=list, max_length=100, description="Benchmark ids to link.")
    datasets: list[str] = Field(default_factory=list, max_length=100, description="Dataset names to link.")
    part_size: int = Field(64 * 2**20, ge=2**16, le=2**32)
    size: int | None = Field(None, ge=0, le=2**62, description=(
        "Bytes of the whole artifact when known (a file): checked against the server's limits at once, the "
        "parts may not write past it and must add up to it. Without it the session is bounded by the "
        "server's largest upload."))


class ArtifactLinks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field(default_factory=list, max_length=100)
    datasets: list[str] = Field(default_factory=list, max_length=100, description="Dataset names.")


class ArtifactRecord(SharedRecord):
    artifact_id: str
    name: str
    media_type: str
    size: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    object_key: str
    benchmarks: list[str] = Field(default_factory=list)
    datasets: list[str] = Field(default_factory=list, description="Dataset ids.")


class ArtifactRead(BaseModel):
    id: str = Field(description="SHA-256 of the content.")
    name: str
    media_type: str
    size: int
    metadata: dict[str, Any]
    benchmarks: list[str]
    datasets: list[str] = Field(description="Names of the linked datasets the caller may read.")
    owner: str
    visibility: Literal["private", "groups", "public"]
    created_at: datetime

