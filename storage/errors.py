"""Errors shared by the API, the workers and the client.

Domain code raises these; only ``tuplehub.api.problems`` turns them into RFC 9457 problem
responses, and the client turns a problem response back into the same class, so
``except NotFound`` works on both sides of the wire.

    TuplehubError            base; ``code`` names the problem type, ``status`` its HTTP status
    ├── InvalidRequest       422  a request body or parameter is well-formed JSON but wrong
    │   ├── InvalidFilter    422  a filter names an unknown field or compares mismatched types
    │   ├── InvalidUpload    422  an upload breaks the tuple contract (names column, row, reason)
    │   └── MetricUndefined  422  a metric cannot be computed on this data (too few points, no frame...)
    ├── Unauthenticated      401  no credentials, or a token that is bad, expired or revoked
    ├── Forbidden            403  the caller sees the thing but may not do this to it
    │   └── QuotaExceeded    403  a per-user quota (``quota``, ``usage``, ``limit``) would be passed
    ├── NotFound             404  no such thing, or the caller may not see it (same answer)
    ├── Conflict             409  the request clashes with what is stored (a taken name, a state)
    ├── PayloadTooLarge      413  a body or part exceeds a size limit from settings
    ├── RateLimited          429  too many attempts; ``retry_after`` says how many seconds to wait
    ├── StoreUnavailable     503  the catalog, object store or queue cannot be reached
    ├── ConfigError          500  the server's configuration is wrong (raised at start-up)
    └── JobCancelled         ---  control flow inside a job that noticed its cancellation
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar


class TuplehubError(Exception):
    """Base class; ``extra`` carries machine-readable details (column, row, field...)."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = {key: value for key, value in extra.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class InvalidRequest(TuplehubError):
    """A request is syntactically valid but asks for something impossible."""

    code, status = "invalid-request", 422


class InvalidFilter(InvalidRequest):
    """A filter names an unknown field, indexes out of range or compares mismatched types."""

    code = "invalid-filter"


class InvalidUpload(InvalidRequest):
    """An upload breaks the tuple contract; ``column``, ``row`` and ``reason`` say where and why."""

    code = "invalid-upload"

    def __init__(self, detail: str, *, column: str | None = None, row: int | None = None,
                 reason: str | None = None, **extra: Any) -> None:
        where = ", ".join(part for part in (
            f"column {column!r}" if column else "", f"row {row}" if row is not None else "") if part)
        super().__init__(f"{where}: {detail}" if where else detail,
                         column=column, row=row, reason=reason, **extra)


class MetricUndefined(InvalidRequest):
    """A metric cannot be computed on this data: fewer distinct points than ``k``, no frame that fits,
    a reference or policy gone. A metrics job stores it as an undefined result saying why and goes on
    with the others; any other error fails the job."""

    code = "metric-undefined"


class Unauthenticated(TuplehubError):
    """No credentials where they are needed, or a token that is malformed, expired or revoked."""

    code, status = "unauthenticated", 401
    headers = {"WWW-Authenticate": 'Bearer realm="tuplehub"'}


class Forbidden(TuplehubError):
    """The caller may see the resource but lacks the right for this action (never used to hide it)."""

    code, status = "forbidden", 403


class QuotaExceeded(Forbidden):
    """A per-user quota is reached; ``quota``, ``usage`` and ``limit`` say which and how far (``storage/quotas.py``)."""

    code = "quota-exceeded"


class NotFound(TuplehubError):
    """Raised alike for what does not exist and for what the caller may not read."""

    code, status = "not-found", 404


class Conflict(TuplehubError):
    """The request is valid but clashes with stored state (a taken name, a finished upload)."""

    code, status = "conflict", 409


class PayloadTooLarge(TuplehubError):
    code, status = "payload-too-large", 413


class RateLimited(TuplehubError):
    """Too many attempts in a window; the response carries ``Retry-After``."""

    code, status = "rate-limited", 429

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class StoreUnavailable(TuplehubError):
    """A backend is unreachable; jobs retry with backoff when they see this."""

    code, status = "store-unavailable", 503


class ConfigError(TuplehubError):
    """The server's settings are unusable; raised at start-up, never for a request."""

    code = "config-error"


class JobCancelled(TuplehubError):
    """Raised inside a running job when its catalog record asks it to stop."""

    code, status = "cancelled", 409


# Exceptions of backend libraries that mean "could not reach it right now", by (package, class name)
# anywhere in the exception's class hierarchy; matched by name so this module imports no driver.
_UNAVAILABLE_CLASSES = {
    ("pymongo", "ConnectionFailure"),            # AutoReconnect, NotPrimaryError, ServerSelectionTimeoutError
    ("pymongo", "ExecutionTimeout"),
    ("botocore", "ConnectionError"),             # EndpointConnectionError, ConnectTimeoutError
    ("botocore", "HTTPClientError"),             # ReadTimeoutError, ConnectionClosedError
    ("redis", "ConnectionError"),
    ("redis", "TimeoutError"),
    ("redis", "BusyLoadingError"),
    ("aiohttp", "ClientConnectionError"),
    ("aiohttp", "ServerTimeoutError"),
}
_UNAVAILABLE_S3_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling"}
_UNAVAILABLE_ERRNOS = {errno.EIO, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                       errno.EAGAIN, errno.EBUSY, errno.EPIPE}


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says a backend is unreachable or overloaded for now (worth a retry)."""
    if isinstance(exc, StoreUnavailable | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _UNAVAILABLE_ERRNOS:
        return True
    for cls in type(exc).__mro__:
        if (cls.__module__.partition(".")[0], cls.__name__) in _UNAVAILABLE_CLASSES:
            return True
        if cls.__module__.startswith("botocore") and cls.__name__ == "ClientError":
            error = getattr(exc, "response", {}).get("Error", {})
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return error.get("Code") in _UNAVAILABLE_S3_CODES or status >= 500
    return exc.__cause__ is not None and exc.__cause__ is not exc and is_unavailable(exc.__cause__)


def error_class_for(code: str) -> type[TuplehubError]:
    """The class whose ``code`` matches, so clients re-raise what the server raised."""
    stack: list[type[TuplehubError]] = [TuplehubError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls
        stack.extend(cls.__subclasses__())
    return TuplehubError
