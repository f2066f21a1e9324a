"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tuplehub.api.deps import CatalogDep, ObjectsDep, QueueDep
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.queue import Queue

router = APIRouter(prefix="/health", tags=["health"])
CHECK_TIMEOUT_S = 5.0


async def backend_checks(catalog: Catalog, objects: ObjectStore, queue: Queue) -> dict[str, str]:
    """``ok`` or ``failing: why`` for the catalog, the object store and the queue, asked at once (readiness,
    and the ``tuplehub_dependency_up`` gauge of ``/metrics``)."""

    async def check(probe: Awaitable[object]) -> str:
        try:
            await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
            return "ok"
        except Exception as exc:  # a readiness probe reports every failure, whatever its kind
            return f"failing: {exc}"[:300]
    names = ("catalog", "objects", "queue")
    answers = await asyncio.gather(check(catalog.ping()), check(asyncio.to_thread(objects.ping)), check(queue.ping()))
    return dict(zip(names, answers, strict=True))


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers; says nothing about its backends."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "A backend does not answer."}})
async def ready(request: Request, catalog: CatalogDep, objects: ObjectsDep, queue: QueueDep) -> JSONResponse:
    """Whether the catalog, the object store and the queue all answer, and (under ``tuplehub serve``)
    whether its worker process and bundled Redis are up or being restarted."""
    results = await backend_checks(catalog, objects, queue)
    supervision = getattr(request.app.state, "supervision", None)
    if supervision is not None:
        results.update(supervision.checks())
    healthy = all(value == "ok" for value in results.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status_code=200 if healthy else 503)
