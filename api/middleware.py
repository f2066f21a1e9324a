"""HTTP hardening that wraps every route: body size limits, security headers, (opt-in) CORS, and a
503 for the requests a stopping server could not finish."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuplehub.storage.settings import Settings

_PART_ROUTE = re.compile(r"^/api/v1/uploads/[^/]+/parts/\d+$")
_DOCS = re.compile(r"^/api/v1/docs")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# The API serves JSON and files only; the interactive docs page runs Swagger UI from this origin alone
# (its assets are served by the API itself, see docs.py) with one inline script that starts it.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_CSP = (b"content-security-policy", b"default-src 'self'; script-src 'self' 'unsafe-inline'; "
            b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
# Seconds a client waits before sending again a request the server stopped: a rolling restart's next
# replica (or this one, restarted) answers by then.
STOPPING_RETRY_AFTER_S = 2


class BodyLimit:
    """Refuse bodies over the limit: at once when Content-Length says so, else while streaming.

    Upload parts may be as large as ``max_part_bytes``; every other body (JSON) ``max_body_bytes``.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_part_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_part_bytes = max_part_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_part_bytes if _PART_ROUTE.match(scope["path"]) else self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send, 413, "payload-too-large", "Payload Too Large",
                          f"the request body exceeds {limit} bytes", limit=limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                # An HTTPException, because FastAPI turns any other error while parsing a body into a 400.
                raise HTTPException(413, f"the request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited, send)


class AnswerWhenStopped:
    """A request the server stops before answering gets 503 with ``Retry-After``, not a bare 500.

    On SIGTERM uvicorn stops taking connections and waits ``TUPLEHUB_SHUTDOWN_GRACE_S`` for the
    requests in flight; then it cancels the tasks of those still running (a slow upload part, say)
    and answers 500 for any that had not started its response. Nothing else cancels a request's own
    task, so a cancellation that reaches this middleware means the server is going away: the request
    was not done, and the client may send it again. A response already started cannot change; its
    connection closes, as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if started or task is None or not task.cancelling():
                raise
            task.uncancel()  # this request's task ends here, answered
            await _refuse(scope, send, 503, "server-stopping", "Service Unavailable",
                          "the server stopped before it could answer this request; send it again",
                          headers=[(b"retry-after", str(STOPPING_RETRY_AFTER_S).encode())])


async def _refuse(scope: Scope, send: Send, status: int, code: str, title: str, detail: str, *,
                  headers: list[tuple[bytes, bytes]] | None = None, **extra: object) -> None:
    """Answer with a problem document, from a middleware (where no route's error handlers run)."""
    body = json.dumps({"type": f"/problems/{code}", "title": title, "status": status,
                       "detail": detail, **extra, "instance": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or [])]})  # SecurityHeaders, outside these middlewares, adds the rest
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*SECURITY_HEADERS, DOCS_CSP if _DOCS.match(scope["path"]) else API_CSP]
        if self.hsts:
            extra.append(HSTS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Outermost first: CORS answers preflights, headers go on everything, then the size limit, and last
    the answer to requests the server stopped (inside the others, so its 503 gets their headers)."""
    app.add_middleware(AnswerWhenStopped)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes, max_part_bytes=settings.max_part_bytes)
    app.add_middleware(SecurityHeaders, hsts=settings.hsts)
    if settings.cors_origins:
        cors: dict[str, Any] = {"allow_origins": settings.cors_origins, "allow_credentials": False,
                                "allow_methods": ["GET", "POST", "PUT", "DELETE"],
                                "allow_headers": ["Authorization", "Content-Type", "Range"],
                                "expose_headers": ["Content-Range", "Retry-After"]}
        app.add_middleware(CORSMiddleware, **cors)
