"""When the client sends a request again: the one retry policy of every request it makes.

A deployment restarts: a proxy in front of API replicas answers 502/504 while one is gone, a
draining or starting API answers 503 with ``Retry-After``, a connection breaks mid-request. Such
failures pass, so :class:`RetryPolicy` sends the request again, but only where that cannot do a
thing twice:

- a connection that could not be made (nothing was sent): any request, once the server has
  answered this client before. A first request that finds nothing fails at once: a wrong URL or a
  stopped server, not a restart.
- a connection lost mid-request (reset, read or write error, timeout): idempotent requests only.
- 429, and 503 with ``Retry-After`` (the server refused the request without acting on it): any
  request. 502, 504 and 503 without it (a proxy whose upstream may have died mid-request):
  idempotent requests only.

Idempotent are GET, HEAD, PUT, DELETE and OPTIONS, and the POSTs sent with ``extensions=IDEMPOTENT``:
those the API makes safe to repeat (presigning parts, completing an upload, which answers again
with the first completion's job, cancelling a job, starting an export, which answers an identical
live request with its job) and opening an upload session, whose repeat only leaves an unused
session that expires (``TUPLEHUB_UPLOAD_TTL_S``) and is freed by the workers. Other POSTs (create
a dataset, derive, sign in, refresh a session) are sent again only when nothing was sent or the
server said so.

Each wait is the server's ``Retry-After`` (seconds or an HTTP date), else an exponential backoff
from ``BACKOFF_FIRST_S`` with jitter, at most ``MAX_WAIT_S``; an answer asking for a longer wait
(a login rate limit's window) stands at once, since it says when to come back. The bounds:
``retries`` retries after the first attempt, and no wait that would end more than ``max_s``
seconds after the first attempt began (``TUPLEHUB_CLIENT_RETRIES``,
``TUPLEHUB_CLIENT_RETRY_MAX_S``, or the :class:`~tuplehub.client.Client` arguments; ``retries=0``
turns retrying off). Past them, the last answer stands, or :class:`ServerUnreachable` says how
long the client tried.

httpx cannot send a streamed body twice, so a request whose body is a stream (a part read from
disk) is sent once by the client's connection; the code that makes it calls
:meth:`RetryPolicy.call` with a function that opens the part again. A request marked ``ONCE``
(cancelling an upload that just failed) is sent once: a server that is away will expire the
session by itself, and waiting for it again would only delay the error.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx

from tuplehub.client.errors import ServerUnreachable
from tuplehub.storage.errors import InvalidRequest

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDEMPOTENT: dict[str, object] = {"tuplehub.idempotent": True}  # httpx request extensions of a repeatable POST
ONCE: dict[str, object] = {"tuplehub.once": True}  # of a clean-up after a failure: not worth waiting for
DEFAULT_RETRIES = 8
DEFAULT_MAX_S = 120.0
BACKOFF_FIRST_S = 0.5
MAX_WAIT_S = 30.0
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
CUT_OFF = (httpx.ReadError, httpx.WriteError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError)
PROXY_STATUSES = frozenset({502, 503, 504})

log = logging.getLogger(__name__)
Number = TypeVar("Number", int, float)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to send a request again; ``on_retry`` gets one line per retry
    (the CLI prints it on stderr; by default it is logged as a warning)."""

    retries: int = DEFAULT_RETRIES
    max_s: float = DEFAULT_MAX_S
    on_retry: Callable[[str], object] | None = None

    @classmethod
    def configured(cls, retries: int | None = None, max_s: float | None = None,
                   on_retry: Callable[[str], object] | None = None) -> RetryPolicy:
        """The arguments where given, else ``TUPLEHUB_CLIENT_RETRIES`` and ``TUPLEHUB_CLIENT_RETRY_MAX_S``,
        else the defaults."""
        retries = _setting("TUPLEHUB_CLIENT_RETRIES", int, DEFAULT_RETRIES) if retries is None else retries
        max_s = _setting("TUPLEHUB_CLIENT_RETRY_MAX_S", float, DEFAULT_MAX_S) if max_s is None else max_s
        if retries < 0 or not max_s >= 0:
            raise InvalidRequest(f"retries ({retries}) and retry_max_s ({max_s}) must not be negative",
                                 field="retries")
        return cls(retries, max_s, on_retry)

    def call(self, attempt: Callable[[], httpx.Response], *, request: str, idempotent: bool,
             reached: bool = True, pause: Callable[[float], object] = time.sleep) -> httpx.Response:
        """``attempt()`` until it answers for good or a bound is reached; ``request`` names it in messages.

        ``reached``: whether the server answered this client before (else a refused connection
        fails at once). ``pause`` waits between attempts (a part upload's stop event wakes it).
        """
        start, tried = time.monotonic(), 0
        while True:
            tried += 1
            try:
                response = attempt()
            except httpx.TransportError as exc:
                cause = _cause(exc)
                if not self._may_resend(cause, idempotent=idempotent, reached=reached):
                    raise
                wait, reason = _backoff(tried), f"{type(cause).__name__}: {cause}".rstrip(": ")
                if not self._waits(tried, wait, start, request, reason, pause):
                    if tried == 1:  # retrying is off: the error as it came
                        raise
                    server = exc.extra["url"] if isinstance(exc, ServerUnreachable) else _origin(cause)
                    raise ServerUnreachable(server, cause, after=f"{tried} attempts in "
                                            f"{time.monotonic() - start:.0f} s") from cause
                continue
            if not _may_resend_answer(response, idempotent=idempotent):
                return response
            after = retry_after(response)
            if after is not None and after > MAX_WAIT_S:
                return response  # longer than a client waits unasked: the answer says when to come back
            wait = _backoff(tried) if after is None else after
            reason = f"the server answered {response.status_code} {response.reason_phrase}".rstrip()
            if not self._waits(tried, wait, start, request, reason, pause):
                return response
            response.close()

    def _may_resend(self, error: httpx.TransportError, *, idempotent: bool, reached: bool) -> bool:
        if isinstance(error, UNSENT):
            return reached
        # The request cut off may be one the auth flow sent on the way (a session refresh, which
        # must never be repeated: a reused refresh token ends the session), not the one retried.
        return idempotent and isinstance(error, CUT_OFF) and is_idempotent(_request_of(error))

    def _waits(self, tried: int, wait: float, start: float, request: str, reason: str,
               pause: Callable[[float], object]) -> bool:
        """Wait before attempt ``tried + 1``, if the bounds allow one; False when they do not."""
        if tried > self.retries or time.monotonic() - start + wait > self.max_s:
            return False
        line = f"retrying {request} in {wait:.1f} s ({reason}; attempt {tried + 1} of {self.retries + 1})"
        (self.on_retry or log.warning)(line)
        pause(wait)
        return True


NO_RETRIES = RetryPolicy(retries=0)


def retry_policy(http: httpx.Client) -> RetryPolicy:
    """The policy of a :class:`~tuplehub.client.Client`'s connection, for requests it cannot resend itself
    (streamed bodies, presigned URLs); a bare httpx client has none."""
    policy = getattr(http, "retries", None)
    return policy if isinstance(policy, RetryPolicy) else NO_RETRIES


def is_idempotent(request: httpx.Request | None) -> bool:
    """Whether sending ``request`` twice does what sending it once does (see the module docstring);
    None (an error that names no request) counts as the caller's own, idempotent request."""
    if request is None:
        return True
    return request.method in IDEMPOTENT_METHODS or bool(request.extensions.get("tuplehub.idempotent"))


def replayable(request: httpx.Request) -> bool:
    """Whether the connection may send ``request`` again: its body is bytes, JSON or a form, not a
    stream httpx cannot send twice, and it is not marked ``ONCE``."""
    return isinstance(request.stream, httpx.ByteStream) and not request.extensions.get("tuplehub.once")


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds from now (given as seconds or as an HTTP date); None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _may_resend_answer(response: httpx.Response, *, idempotent: bool) -> bool:
    if response.status_code == 429:
        return True
    if response.status_code == 503 and "Retry-After" in response.headers:
        return True
    return idempotent and response.status_code in PROXY_STATUSES


def _backoff(tried: int) -> float:
    """The wait after the ``tried``-th failure: doubling from ``BACKOFF_FIRST_S``, half of it random
    (so clients cut off together do not come back together)."""
    ceiling = min(MAX_WAIT_S, BACKOFF_FIRST_S * 2 ** (tried - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _cause(error: httpx.TransportError) -> httpx.TransportError:
    """The transport error itself: the client's connection reports one as :class:`ServerUnreachable`."""
    if isinstance(error, ServerUnreachable) and isinstance(error.__cause__, httpx.TransportError):
        return error.__cause__
    return error


def _request_of(error: httpx.TransportError) -> httpx.Request | None:
    try:
        return error.request
    except RuntimeError:  # raised without a request
        return None


def _origin(error: httpx.TransportError) -> str:
    request = _request_of(error)
    if request is None:
        return "the server"
    return f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"


def _setting(name: str, parse: Callable[[str], Number], default: Number) -> Number:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise InvalidRequest(f"{name}={raw!r} is not a {'whole ' if parse is int else ''}number",
                             field=name) from None
