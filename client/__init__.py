"""The tuplehub Python client.

    from tuplehub.client import Client, F

    hub = Client()
    ds = hub.datasets.create("cartpole-mixed", tags=["demo"])
    ds.upload(arrays, episode_metadata={0: {"policy": "random"}}).wait()
    arrays = ds.export(where=F.reward > 0, next_observation=True).to_numpy()

Needs no server dependency: only httpx, pydantic, numpy, pyarrow, gymnasium and tqdm. The names
below are imported on first use, so ``tuplehub --help`` (the CLI lives in this package) loads
none of them, and a listing loads neither numpy nor pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuplehub.client.client import Client, Jobs
    from tuplehub.client.datasets import Dataset, Datasets
    from tuplehub.client.errors import JobFailed, MissingExtra, ServerError, ServerUnreachable, UploadInterrupted
    from tuplehub.client.exports import Export
    from tuplehub.client.jobs import Job
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
    from tuplehub.storage.models import Rebalance, Sampling

# Each public name and the module it comes from.
_HOMES = {
    "Client": "tuplehub.client.client", "Jobs": "tuplehub.client.client",
    "Dataset": "tuplehub.client.datasets", "Datasets": "tuplehub.client.datasets",
    "Export": "tuplehub.client.exports", "Job": "tuplehub.client.jobs",
    **dict.fromkeys(("JobFailed", "MissingExtra", "ServerError", "ServerUnreachable", "UploadInterrupted"),
                    "tuplehub.client.errors"),
    **dict.fromkeys(("Conflict", "Forbidden", "InvalidFilter", "InvalidRequest", "InvalidUpload", "NotFound",
                     "RateLimited", "TuplehubError", "Unauthenticated"), "tuplehub.storage.errors"),
    "F": "tuplehub.storage.filters.language",
    "Rebalance": "tuplehub.storage.models", "Sampling": "tuplehub.storage.models",
}
__all__ = [
    "Client",
    "Conflict",
    "Dataset",
    "Datasets",
    "Export",
    "F",
    "Forbidden",
    "InvalidFilter",
    "InvalidRequest",
    "InvalidUpload",
    "Job",
    "JobFailed",
    "Jobs",
    "MissingExtra",
    "NotFound",
    "RateLimited",
    "Rebalance",
    "Sampling",
    "ServerError",
    "ServerUnreachable",
    "TuplehubError",
    "Unauthenticated",
    "UploadInterrupted",
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
