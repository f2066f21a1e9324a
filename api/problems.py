"""Errors as RFC 9457 problem details: the one place that knows what an error looks like on the wire.

Domain code raises :class:`TuplehubError` subclasses; request validation errors, unknown routes
and unexpected failures are turned into the same shape, so a client never has to parse anything
else. An unexpected failure is logged and answered with a 500 that leaks no internals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tuplehub.storage.errors import InvalidRequest, StoreUnavailable, TuplehubError, is_unavailable

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
        "type": "/problems/not-found", "title": "Not Found", "status": 404,
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


def title_of(error: type[TuplehubError]) -> str:
    """A problem's title in words, like the HTTP reason phrases: ``InvalidFilter`` -> "Invalid Filter"."""
    return _WORD_START.sub(" ", error.__name__)


_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TuplehubError)
    if exc.status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
    response = _response(request, exc.status, exc.code, title_of(type(exc)), exc.detail, **exc.extra)
    response.headers.update(getattr(exc, "headers", {}))
    return response


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
              for error in exc.errors()]
    first = errors[0] if errors else {"location": "request", "message": "invalid"}
    return _response(request, 422, "invalid-request", title_of(InvalidRequest),
                     f"{first['location']}: {first['message']}", errors=errors)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(exc.status_code, "http-error")
    response = _response(request, exc.status_code, code, _reason(exc.status_code), str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _reason(status: int) -> str:
    """The HTTP reason phrase ("Not Found", "Method Not Allowed"), the title of a routing error."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP Error"


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):  # a driver's own "cannot reach it" error: retryable, not our bug
        logger.warning("backend unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _response(request, 503, StoreUnavailable.code, title_of(StoreUnavailable),
                         "a backend (catalog, object store or queue) cannot be reached; try again shortly")
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _response(request, 500, "internal", _reason(500),
                     "the server failed to handle this request; the error is in its log")


def _openapi_with_problems(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents request validation errors with its own schema; ours are problems too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    response = operation.get("responses", {}).get("422")
                    if response and "application/json" in response.get("content", {}):
                        response["description"] = response.get("description") or "invalid-request"
                        response["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install(app: FastAPI) -> None:
    app.add_exception_handler(TuplehubError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
    app.openapi = _openapi_with_problems(app)  # type: ignore[method-assign]
