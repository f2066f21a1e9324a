"""The client: one connection to one tuplehub server, safe to share between threads."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import httpx

from tuplehub.client.datasets import Datasets
from tuplehub.client.discovery import resolve_url
from tuplehub.client.errors import raise_for_problem
from tuplehub.client.jobs import Job
from tuplehub.storage.models import JobKind, JobRead, JobStatus, Page

API_PREFIX = "/api/v1"


class Jobs:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def get(self, job_id: str) -> Job:
        response = self._http.get(f"/jobs/{job_id}")
        raise_for_problem(response)
        return Job(self._http, response.json())

    def list(self, *, status: JobStatus | str | None = None, kind: JobKind | str | None = None,
             offset: int = 0, limit: int = 50) -> Page[JobRead]:
        params = {k: v for k, v in {"status": status, "kind": kind, "offset": offset, "limit": limit}.items()
                  if v is not None}
        response = self._http.get("/jobs", params=params)
        raise_for_problem(response)
        return Page[JobRead].model_validate(response.json())


class Client:
    """A connection to one tuplehub server.

    With no arguments it reads ``TUPLEHUB_URL`` and ``TUPLEHUB_TOKEN``, else it uses the embedded
    server that ``tuplehub serve`` runs on this machine. ``transport`` lets tests talk to an app
    in process.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = resolve_url(url)
        token = token or os.environ.get("TUPLEHUB_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + API_PREFIX, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=True)
        self.datasets = Datasets(self._http)
        self.jobs = Jobs(self._http)

    def ready(self) -> dict[str, Any]:
        """The server's readiness report; raises if it cannot be reached."""
        return self._http.get("/health/ready").json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.url}>"
