"""Turning problem responses back into the errors the server raised.

A 404 from the server arrives as :class:`tuplehub.storage.errors.NotFound`, an upload error as
:class:`InvalidUpload` with ``column``/``row``/``reason`` in ``extra``, and so on; anything that
is not a problem document becomes :class:`ServerError` with the status and the URL.
"""

from __future__ import annotations

from typing import Any

import httpx

from tuplehub.storage.errors import TuplehubError, error_class_for


class ServerError(TuplehubError):
    """The server answered with an error that is not a problem document (a proxy, a crash)."""

    code = "server-error"


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
