"""Turning problem responses back into the errors the server raised.

A 404 from the server arrives as :class:`tuplehub.storage.errors.NotFound`, an upload error as
:class:`InvalidUpload` with ``column``/``row``/``reason`` in ``extra``, and so on; anything that
is not a problem document becomes :class:`ServerError` with the status and the URL.

Errors the client raises itself, all :class:`TuplehubError` so one ``except`` catches them:

    ServerUnreachable   the server cannot be reached (also an ``httpx.TransportError``)
    MissingExtra        a feature needs an optional dependency; says which ``pip install``
    CommandLineError    a command-line value or file is unusable (the CLI's own mistakes)
    JobFailed           a job ended failed or cancelled
    ServerError         an answer that is not a problem document
"""

from __future__ import annotations

from typing import Any

import httpx

from tuplehub.storage.errors import TuplehubError, error_class_for


class ServerError(TuplehubError):
    """The server answered with an error that is not a problem document (a proxy, a crash)."""

    code = "server-error"


class ServerUnreachable(TuplehubError, httpx.TransportError):
    """The server did not answer: nothing listens at the URL, or the connection broke.

    Also an :class:`httpx.TransportError`, so code that retries on transport errors still does.
    """

    code = "server-unreachable"

    def __init__(self, url: str, cause: httpx.TransportError, *, hint: str | None = None,
                 after: str | None = None) -> None:
        reason = str(cause) or type(cause).__name__
        if isinstance(cause, ServerUnreachable):  # the same failure, told again with a better hint
            detail, url = cause.detail, cause.extra["url"]
        elif isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
            detail = f"cannot reach the server at {url} ({reason})"
        else:
            detail = f"lost the connection to the server at {url} ({reason})"
        if after:  # the client kept trying (tuplehub.client.retries): the server was there and went away
            detail = f"{detail}; gave up after {after}"
            hint = hint or ("it may be restarting: try again once it answers (TUPLEHUB_CLIENT_RETRIES and "
                            "TUPLEHUB_CLIENT_RETRY_MAX_S set how long the client keeps trying)")
        super().__init__(detail, url=url, hint=hint or "start one with `tuplehub serve`, or set TUPLEHUB_URL "
                                                       "(or --url) to the server's address")
        self._request = cause._request


class MissingExtra(TuplehubError):
    """A feature needs an optional dependency that is not installed; the message says what to install."""

    code = "missing-extra"

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(f"{feature} needs {module}, which is not installed: pip install 'tuplehub[{extra}]'",
                         extra=extra)


def require(module: str, *, extra: str, feature: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtra` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.partition(".")[0] != module.partition(".")[0]:
            raise  # the module is there but one of its own dependencies is broken: show that
        raise MissingExtra(feature, extra, module.partition(".")[0]) from exc


class CommandLineError(TuplehubError):
    """A value given on the command line (or a file it names) cannot be used; ``hint`` says what would."""

    code = "command-line"


class JobFailed(TuplehubError):
    """A job ended as failed or cancelled; ``error`` holds the job's error record."""

    code = "job-failed"

    def __init__(self, detail: str, error: dict[str, Any] | None = None) -> None:
        self.error = error or {}
        super().__init__(detail, **{k: v for k, v in self.error.items() if k not in ("detail", "code")})


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "type" not in body or "detail" not in body:
        raise ServerError(f"{response.request.method} {response.request.url} answered "
                          f"{response.status_code}: {response.text[:500]}", status=response.status_code)
    code = str(body["type"]).rsplit("/", 1)[-1]
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "instance")}
    cls = error_class_for(code)
    error = cls.__new__(cls)  # the server already formatted the detail; do not format it twice
    TuplehubError.__init__(error, body["detail"], **extra)
    error.status = response.status_code  # type: ignore[misc]
    error.problem = body  # type: ignore[attr-defined]
    raise error


class UploadInterrupted(KeyboardInterrupt):
    """Ctrl-C while an upload's bytes were moving; says what the server kept.

    A ``KeyboardInterrupt`` (not a :class:`TuplehubError`), so ``except Exception`` in a script
    does not swallow the user's Ctrl-C; the CLI prints ``detail`` in one line. ``resume`` is how
    to pick the upload up again when its session was kept, None when it was cancelled.
    """

    def __init__(self, upload_id: str, sent: int, total: int, resume: str | None = None) -> None:
        self.upload_id, self.sent, self.total, self.resume = upload_id, sent, total, resume
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        if self.resume is None:
            return "upload interrupted: the session was cancelled and nothing was stored"
        return f"upload interrupted: {self.sent} of {self.total} parts sent; resume with {self.resume}"
