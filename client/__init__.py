"""The tuplehub Python client: every name a user needs, importable from here.

    from tuplehub.client import Client, F

    hub = Client()
    ds = hub.datasets.create("cartpole-mixed", tags=["demo"])
    ds.upload(arrays, episode_metadata={0: {"policy": "random"}}).wait()
    arrays = ds.export(where=F.reward > 0, next_observation=True).to_numpy()

Needs no server dependency: only httpx, pydantic, numpy, pyarrow, gymnasium and tqdm. The names
below are imported on first use, so ``tuplehub --help`` (the CLI lives in this package) loads
none of them, a listing loads neither numpy nor pyarrow, and a converter's library (torch,
d3rlpy, minari) loads only when that converter is used. docs/client.md lists the names by use;
tests/test_client_surface.py keeps it, ``__all__`` and the table below in step.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuplehub.client.artifacts import Artifact, Artifacts
    from tuplehub.client.benchmarks import Benchmark, BenchmarkMismatch, Benchmarks, describe_env, make_env
    from tuplehub.client.client import Client, Jobs
    from tuplehub.client.converters.d3rlpy import to_d3rlpy
    from tuplehub.client.converters.d4rl import from_d4rl
    from tuplehub.client.converters.minari import episodes_from_minari, to_minari
    from tuplehub.client.converters.torch import TransitionDataset, TransitionStream
    from tuplehub.client.datasets import Dataset, Datasets
    from tuplehub.client.errors import JobFailed, MissingExtra, ServerError, ServerUnreachable, UploadInterrupted
    from tuplehub.client.exports import Export
    from tuplehub.client.jobs import Job
    from tuplehub.client.metrics import Metrics
    from tuplehub.client.recorder import Recorder, VectorRecorder
    from tuplehub.storage.access import ApiTokenCreated, ApiTokenRead, AuditRecord, GroupRead, Me, RoleRecord, UserRead
    from tuplehub.storage.artifacts import ArtifactRead
    from tuplehub.storage.benchmarks import BenchmarkRead, BenchmarkSpec, SeedPolicy, WrapperSpec
    from tuplehub.storage.errors import (
        Conflict,
        Forbidden,
        InvalidFilter,
        InvalidRequest,
        InvalidUpload,
        NotFound,
        RateLimited,
        TuplehubError,
        Unauthenticated,
    )
    from tuplehub.storage.filters.language import F
    from tuplehub.storage.metrics import Comparison, MetricFrame, MetricRead
    from tuplehub.storage.models import (
        DatasetRead,
        DatasetSummary,
        DeriveSource,
        EpisodeRead,
        JobKind,
        JobRead,
        JobStatus,
        Page,
        Rebalance,
        Sampling,
        UploadMode,
    )

# The module each public name comes from (the imports above, for type checkers).
_SOURCES = {
    "tuplehub.client.artifacts": ("Artifact", "Artifacts"),
    "tuplehub.client.benchmarks": ("Benchmark", "BenchmarkMismatch", "Benchmarks", "describe_env", "make_env"),
    "tuplehub.client.client": ("Client", "Jobs"),
    "tuplehub.client.converters.d3rlpy": ("to_d3rlpy",),
    "tuplehub.client.converters.d4rl": ("from_d4rl",),
    "tuplehub.client.converters.minari": ("episodes_from_minari", "to_minari"),
    "tuplehub.client.converters.torch": ("TransitionDataset", "TransitionStream"),
    "tuplehub.client.datasets": ("Dataset", "Datasets"),
    "tuplehub.client.errors": ("JobFailed", "MissingExtra", "ServerError", "ServerUnreachable", "UploadInterrupted"),
    "tuplehub.client.exports": ("Export",),
    "tuplehub.client.jobs": ("Job",),
    "tuplehub.client.metrics": ("Metrics",),
    "tuplehub.client.recorder": ("Recorder", "VectorRecorder"),
    "tuplehub.storage.access": ("ApiTokenCreated", "ApiTokenRead", "AuditRecord", "GroupRead", "Me", "RoleRecord",
                                "UserRead"),
    "tuplehub.storage.artifacts": ("ArtifactRead",),
    "tuplehub.storage.benchmarks": ("BenchmarkRead", "BenchmarkSpec", "SeedPolicy", "WrapperSpec"),
    "tuplehub.storage.errors": ("Conflict", "Forbidden", "InvalidFilter", "InvalidRequest", "InvalidUpload",
                                "NotFound", "RateLimited", "TuplehubError", "Unauthenticated"),
    "tuplehub.storage.filters.language": ("F",),
    "tuplehub.storage.metrics": ("Comparison", "MetricFrame", "MetricRead"),
    "tuplehub.storage.models": ("DatasetRead", "DatasetSummary", "DeriveSource", "EpisodeRead", "JobKind", "JobRead",
                                "JobStatus", "Page", "Rebalance", "Sampling", "UploadMode"),
}
_HOMES = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = [
    "ApiTokenCreated", "ApiTokenRead", "Artifact", "ArtifactRead", "Artifacts", "AuditRecord", "Benchmark",
    "BenchmarkMismatch", "BenchmarkRead", "BenchmarkSpec", "Benchmarks", "Client", "Comparison", "Conflict", "Dataset",
    "DatasetRead", "DatasetSummary", "Datasets", "DeriveSource", "EpisodeRead", "Export", "F", "Forbidden",
    "GroupRead", "InvalidFilter", "InvalidRequest", "InvalidUpload", "Job", "JobFailed", "JobKind", "JobRead",
    "JobStatus", "Jobs", "Me", "MetricFrame", "MetricRead", "Metrics", "MissingExtra", "NotFound", "Page",
    "RateLimited", "Rebalance", "Recorder", "RoleRecord", "Sampling", "SeedPolicy", "ServerError", "ServerUnreachable",
    "TransitionDataset", "TransitionStream", "TuplehubError", "Unauthenticated", "UploadInterrupted", "UploadMode",
    "UserRead", "VectorRecorder", "WrapperSpec", "describe_env", "episodes_from_minari", "from_d4rl", "make_env",
    "to_d3rlpy", "to_minari",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
