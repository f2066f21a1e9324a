"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tuplehub.api.deps import CatalogDep, ObjectsDep, QueueDep

router = APIRouter(prefix="/health", tags=["health"])
CHECK_TIMEOUT_S = 5.0


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers; says nothing about its backends."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "A backend does not answer."}})
async def ready(request: Request, catalog: CatalogDep, objects: ObjectsDep, queue: QueueDep) -> JSONResponse:
    """Whether the catalog, the object store and the queue all answer, and (under ``tuplehub serve``)
    whether its worker process and bundled Redis are up or being restarted."""
    checks = {"catalog": catalog.ping(), "objects": asyncio.to_thread(objects.ping), "queue": queue.ping()}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT_S)
            results[name] = "ok"
        except Exception as exc:  # a readiness probe reports every failure, whatever its kind
            results[name] = f"failing: {exc}"[:300]
    supervision = getattr(request.app.state, "supervision", None)
    if supervision is not None:
        results.update(supervision.checks())
    healthy = all(value == "ok" for value in results.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status_code=200 if healthy else 503)
