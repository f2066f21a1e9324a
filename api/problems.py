"""Errors as RFC 9457 problem details: the one place that knows what an error looks like on the wire.

Domain code raises :class:`TuplehubError` subclasses; request validation errors, unknown routes
and unexpected failures are turned into the same shape, so a client never has to parse anything
else. An unexpected failure is logged and answered with a 500 that leaks no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tuplehub.storage.errors import TuplehubError

logger = logging.getLogger("tuplehub.api")
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem; extra members (``column``, ``row``, ``field``...) name what is wrong."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    model_config = {"extra": "allow", "json_schema_extra": {"examples": [{
        "type": "/problems/not-found", "title": "NotFound", "status": 404,
        "detail": "no dataset named 'cartpole'", "instance": "/api/v1/datasets/cartpole"}]}}


def problems(*errors: type[TuplehubError]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each error it may raise, documented with the Problem schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(error.status, {"model": Problem, "description": ""})
        entry["description"] = " / ".join(filter(None, [entry["description"], error.code]))
        entry["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return out


def _response(request: Request, status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {**extra, "type": f"/problems/{code}", "title": title, "status": status, "detail": detail,
            "instance": request.url.path}
    return JSONResponse(body, status, media_type=MEDIA_TYPE)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TuplehubError)
    if exc.status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return _response(request, exc.status, exc.code, type(exc).__name__, exc.detail, **exc.extra)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
              for error in exc.errors()]
    first = errors[0] if errors else {"location": "request", "message": "invalid"}
    return _response(request, 422, "invalid-request", "InvalidRequest",
                     f"{first['location']}: {first['message']}", errors=errors)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    response = _response(request, exc.status_code, code, "HTTPError", str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _response(request, 500, "internal", "InternalError",
                     "the server failed to handle this request; the error is in its log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(TuplehubError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
