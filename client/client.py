"""The client: one connection to one tuplehub server, safe to share between threads.

The parts of the API (``datasets``, ``benchmarks``, ``artifacts``, ``metrics``) are built on
first use, so a script or command that lists jobs never imports numpy, pyarrow or gymnasium.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from tuplehub.client.access import Groups, Roles, Tokens, Users, read_audit, whoami
from tuplehub.client.auth import BearerAuth, SessionAuth
from tuplehub.client.base import Handle, call, given
from tuplehub.client.discovery import embedded_credentials, resolve_url
from tuplehub.client.errors import ServerUnreachable, raise_for_problem
from tuplehub.client.retries import RetryPolicy, is_idempotent, replayable
from tuplehub.client.sessions import Session, SessionStore
from tuplehub.storage.access import AuditRecord, Me
from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.models import JobKind, JobRead, JobStatus, Page

if TYPE_CHECKING:
    from tuplehub.client.artifacts import Artifacts
    from tuplehub.client.benchmarks import Benchmarks
    from tuplehub.client.datasets import Datasets
    from tuplehub.client.jobs import Job
    from tuplehub.client.metrics import Metrics

API_PREFIX = "/api/v1"


def server_url(url: str) -> str:
    """``url`` as the client uses it: no trailing slash, ``http://`` where no scheme is given (as curl does)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed '[' of an IPv6 address, a port that is not a number or out of range
        usable = False
    if not usable:
        raise InvalidRequest(f"the server URL {url!r} is not an http:// or https:// address with a host and a "
                             "port from 1 to 65535 (set TUPLEHUB_URL or --url like http://127.0.0.1:8470)",
                             field="url")
    return url


class _Http(httpx.Client):
    """httpx, except that a server it cannot reach raises :class:`ServerUnreachable` (a tuplehub error)
    and that requests failing for a passing reason are sent again, as :mod:`.retries` says."""

    def __init__(self, server: str, *, retries: RetryPolicy, **options: Any) -> None:
        super().__init__(**options)
        self._server = server
        self.retries = retries
        self._answered = False  # until the server first answers, a refused connection is not a restart

    def send(self, request: httpx.Request, **options: Any) -> httpx.Response:
        if not replayable(request):  # a streamed body (its sender re-creates it: RetryPolicy.call), or ONCE
            return self._send_once(request, options)
        return self.retries.call(lambda: self._send_once(request, options), request=f"{request.method} "
                                 f"{request.url.path}", idempotent=is_idempotent(request), reached=self._answered)

    def _send_once(self, request: httpx.Request, options: dict[str, Any]) -> httpx.Response:
        try:
            response = super().send(request, **options)
        except ServerUnreachable:
            raise
        except httpx.TransportError as exc:
            raise ServerUnreachable(self._server, exc) from exc
        self._answered = True
        return response


class Jobs(Handle):
    def get(self, job_id: str) -> Job:
        from tuplehub.client.jobs import Job

        return Job(self._http, self._call("GET", f"/jobs/{job_id}", JobRead))

    def list(self, *, status: JobStatus | str | None = None, kind: JobKind | str | None = None,
             everyone: bool = False, offset: int = 0, limit: int = 50) -> Page[JobRead]:
        params = given(status=status, kind=kind, offset=offset, limit=limit, everyone=everyone or None)
        return self._call("GET", "/jobs", Page[JobRead], params=params)


class Client:
    """A connection to one tuplehub server.

    Credentials, first found wins: ``token`` (an API token or access token), ``TUPLEHUB_TOKEN``,
    the session ``tuplehub login`` stored for this URL, and for the embedded server this machine
    runs, its local admin. Without any, requests go out anonymously. ``transport`` lets tests talk
    to an app in process.

    Requests that fail for a reason that passes (a restarting server, a proxy without a live
    replica, a draining API's 503 with ``Retry-After``, a 429) are sent again where that is safe,
    as :mod:`tuplehub.client.retries` says: at most ``retries`` more times
    (``TUPLEHUB_CLIENT_RETRIES``, default 8; 0 turns it off) and for at most ``retry_max_s``
    seconds (``TUPLEHUB_CLIENT_RETRY_MAX_S``, default 120). ``on_retry`` gets one line per retry;
    without it the line is logged as a warning.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None, sessions: SessionStore | None = None,
                 retries: int | None = None, retry_max_s: float | None = None,
                 on_retry: Callable[[str], object] | None = None) -> None:
        self.url = server_url(resolve_url(url))
        self.api_url = self.url + API_PREFIX
        self.sessions = sessions or SessionStore()
        self._http = _Http(self.url, retries=RetryPolicy.configured(retries, retry_max_s, on_retry),
                           base_url=self.api_url, timeout=timeout, transport=transport, follow_redirects=True)
        token = token or os.environ.get("TUPLEHUB_TOKEN")
        if token:
            self._http.auth = BearerAuth(token)
        elif (session := self.sessions.load(self.url)) is not None:
            self._http.auth = SessionAuth(self.url, session, self.sessions, api_url=self.api_url,
                                          password=self._embedded_password(session.username))
        elif (credentials := embedded_credentials(self.url)) is not None:
            self.login(*credentials)
        self.jobs = Jobs(self._http)
        self.tokens = Tokens(self._http)
        self.users = Users(self._http)
        self.groups = Groups(self._http)
        self.roles = Roles(self._http)

    @cached_property
    def datasets(self) -> Datasets:
        from tuplehub.client.datasets import Datasets

        return Datasets(self._http)

    @cached_property
    def benchmarks(self) -> Benchmarks:
        from tuplehub.client.benchmarks import Benchmarks

        return Benchmarks(self._http)

    @cached_property
    def artifacts(self) -> Artifacts:
        from tuplehub.client.artifacts import Artifacts

        return Artifacts(self._http)

    @cached_property
    def metrics(self) -> Metrics:
        from tuplehub.client.metrics import Metrics

        return Metrics(self._http)

    def _embedded_password(self, username: str) -> str | None:
        credentials = embedded_credentials(self.url)
        return credentials[1] if credentials and credentials[0] == username else None

    def login(self, username: str, password: str, *, remember: bool = True) -> Me:
        """Sign in with a password; with ``remember`` the session is stored for later processes."""
        pair = call(self._http, "POST", "/auth/login", json={"username": username, "password": password}, auth=None)
        session = Session(username, pair["access_token"], pair["refresh_token"])
        self._http.auth = SessionAuth(self.url, session, self.sessions if remember else None, api_url=self.api_url,
                                      password=self._embedded_password(username))
        if remember:
            self.sessions.save(self.url, session)
        return self.whoami()

    def logout(self, *, everywhere: bool = False) -> None:
        """End this session on the server (every session with ``everywhere``) and forget it here."""
        auth = self._http.auth
        if isinstance(auth, SessionAuth):
            response = self._http.post("/auth/logout", params={"everywhere": everywhere} if everywhere else None,
                                       json={"refresh_token": auth.session.refresh_token},
                                       auth=None)  # type: ignore[arg-type]  # None: no auth (httpx leaves it out)
            if response.status_code != 401:  # an already-dead session is as good as ended
                raise_for_problem(response)
        self.sessions.delete(self.url)
        self._http.auth = None  # type: ignore[assignment]

    @property
    def signed_in(self) -> bool:
        """Whether requests carry credentials (a token or a session); not whether they are still valid."""
        return self._http.auth is not None

    def whoami(self, *, usage: bool = False) -> Me:
        """Who these credentials are; ``usage=True`` adds what they store and run against the quotas."""
        return whoami(self._http, usage=usage)

    def change_password(self, current_password: str, new_password: str) -> None:
        """Change one's own password; every session ends, so sign in again afterwards."""
        call(self._http, "PUT", "/auth/password", json={"current_password": current_password,
                                                         "new_password": new_password})

    def audit(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
              target_kind: str | None = None, since: datetime | None = None, until: datetime | None = None,
              offset: int = 0, limit: int = 100) -> Page[AuditRecord]:
        """The audit log (needs ``audit:read``), newest first."""
        return read_audit(self._http, actor=actor, action=action, target=target, target_kind=target_kind,
                          since=since, until=until, offset=offset, limit=limit)

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
