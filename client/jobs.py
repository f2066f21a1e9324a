"""Jobs seen from the client: poll with backoff, show progress, raise when a job fails.

Polling outlives a restart: each poll is a GET, sent again by the client's retry policy
(:mod:`.retries`), and a job a stopping worker hands back (``running`` again ``queued``) is
simply waited for further; only a finished job ends the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tuplehub.client.errors import JobFailed, raise_for_problem
from tuplehub.client.retries import IDEMPOTENT
from tuplehub.storage.models import JobRead, JobStatus

POLL_FIRST_S = 0.01
POLL_MAX_S = 1.0
POLL_GROWTH = 1.3
DEFAULT_WAIT_S = 24 * 3600.0


class Job:
    """A server-side job; ``wait()`` returns it once it has succeeded."""

    def __init__(self, http: httpx.Client, record: JobRead | dict[str, Any], *,
                 on_success: Callable[[Job], object] | None = None) -> None:
        self._http = http
        self.record = record if isinstance(record, JobRead) else JobRead.model_validate(record)
        self._on_success = on_success  # e.g. the dataset that started an ingest refreshes its record

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> JobStatus:
        return self.record.status

    @property
    def result(self) -> dict[str, Any] | None:
        return self.record.result

    def refresh(self) -> Job:
        response = self._http.get(f"/jobs/{self.id}")
        raise_for_problem(response)
        self.record = JobRead.model_validate(response.json())
        return self

    def cancel(self) -> Job:
        response = self._http.post(f"/jobs/{self.id}/cancel", extensions=IDEMPOTENT)
        raise_for_problem(response)
        self.record = JobRead.model_validate(response.json())
        return self

    def wait(self, *, timeout: float = DEFAULT_WAIT_S, progress: bool | None = None) -> Job:
        """Poll until the job ends; raise :class:`JobFailed` unless it succeeded.

        ``progress=None`` shows a bar only on a terminal, so scripts and CI logs stay quiet.
        """
        from tqdm.auto import tqdm  # imported here: listing commands never wait, so never load it

        deadline = time.monotonic() + timeout
        delay = POLL_FIRST_S
        with tqdm(total=1.0, desc=f"{self.record.kind} {self.id[:8]}", unit="", disable=quiet(progress),
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
            while not self.status.finished:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout:.0f} s")
                time.sleep(delay)
                delay = min(POLL_MAX_S, delay * POLL_GROWTH)
                self.refresh()
                bar.n = self.record.progress.fraction
                bar.set_postfix_str(f"{self.record.progress.stage} {self.record.progress.message}".strip())
        if self.status != JobStatus.succeeded:
            error = self.record.error.model_dump(exclude_none=True) if self.record.error else {}
            detail = error.get("detail", self.status.value)
            raise JobFailed(f"{self.record.kind} job {self.id} {self.status.value}: {detail}", error)
        if self._on_success is not None:
            callback, self._on_success = self._on_success, None
            callback(self)
        return self

    def __repr__(self) -> str:
        return f"<Job {self.record.kind} {self.id} {self.status.value}>"


def quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None means 'disable unless stderr is a terminal'."""
    return None if progress is None else not progress
