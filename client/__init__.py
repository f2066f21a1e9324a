"""The tuplehub Python client.

    from tuplehub.client import Client, F

    hub = Client()
    ds = hub.datasets.create("cartpole-mixed", tags=["demo"])
    ds.upload(arrays, episode_metadata={0: {"policy": "random"}}).wait()
    arrays = ds.export(where=F.reward > 0, next_observation=True).to_numpy()

Needs no server dependency: only httpx, pydantic, numpy, pyarrow, gymnasium and tqdm.
"""

from tuplehub.client.client import Client, Jobs
from tuplehub.client.datasets import Dataset, Datasets
from tuplehub.client.errors import JobFailed, ServerError
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
    "NotFound",
    "RateLimited",
    "Rebalance",
    "Sampling",
    "ServerError",
    "TuplehubError",
    "Unauthenticated",
]
