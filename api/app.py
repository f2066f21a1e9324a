"""The FastAPI application: ``create_app(settings, redis_url)`` wires routers, errors and backends.

Backends are opened in the lifespan and closed when it ends; nothing is built at import time, so
tests and the embedded server each make their own app from their own settings. With traces on
(``OTEL_*``, see :mod:`tuplehub.storage.tracing`) each app has its tracer, flushed when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from fastapi import APIRouter, FastAPI

from tuplehub.api import docs, middleware, monitoring, problems
from tuplehub.api.access.bootstrap import bootstrap
from tuplehub.api.access.ratelimit import LoginLimiter
from tuplehub.api.access.tokens import Signer
from tuplehub.api.routes import (
    artifacts,
    audit,
    auth,
    benchmarks,
    datasets,
    derive,
    exports,
    groups,
    health,
    jobs,
    metrics,
    roles,
    tokens,
    uploads,
    users,
)
from tuplehub.storage import tracing
from tuplehub.storage.catalog import Catalog, open_catalog
from tuplehub.storage.errors import StoreUnavailable
from tuplehub.storage.objects import ObjectStore, open_object_store
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.api")
API_PREFIX = "/api/v1"
BUCKET_TIMEOUT_S = 10.0
VERSION = "0.1.0"


class AppState(TypedDict):
    settings: Settings
    catalog: Catalog
    objects: ObjectStore
    queue: Queue
    signer: Signer
    limiter: LoginLimiter


async def _ensure_bucket(objects: ObjectStore, url: str) -> None:
    """A fresh deployment's bucket is made at the first start, on any S3. A store that is away or
    refuses does not stop the API: readiness names it until it answers (create the bucket by hand then)."""
    try:
        if await asyncio.wait_for(asyncio.to_thread(objects.ensure_bucket), BUCKET_TIMEOUT_S):
            logger.info("created the missing bucket of %s", url)
    except StoreUnavailable as exc:
        logger.warning("%s", exc.detail)
    except TimeoutError:
        logger.warning("the object store %s did not answer in %.0f s; not checking its bucket", url, BUCKET_TIMEOUT_S)


def create_app(settings: Settings, redis_url: str) -> FastAPI:
    tracer = tracing.open_tracer(tracing.API_SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        signer = Signer.from_settings(settings)  # a bad key fails the start, not the first request
        catalog = await open_catalog(settings.resolved_catalog_url())
        try:
            await bootstrap(catalog, settings)
        except BaseException:
            await catalog.aclose()
            raise
        objects = open_object_store(settings.resolved_objects_url(), **settings.object_store_options())
        if settings.s3_create_bucket:
            await _ensure_bucket(objects, settings.resolved_objects_url())
        queue = await Queue.connect(redis_url, settings.queue_name)
        limiter = LoginLimiter(queue.pool, per_user=settings.login_attempts_per_user,
                               per_address=settings.login_attempts_per_address, window_s=settings.login_window_s,
                               namespace=settings.queue_name)
        try:
            yield {"settings": settings, "catalog": catalog, "objects": objects, "queue": queue,
                   "signer": signer, "limiter": limiter}
        finally:
            await queue.aclose()
            await catalog.aclose()
            await asyncio.to_thread(tracer.close)

    telemetry = tracer.fastapi_telemetry()  # None with traces off: FastAPI's default, which makes no span
    traced: dict[str, Any] = {"telemetry": telemetry} if telemetry else {}
    app = FastAPI(title="tuplehub", version=VERSION, lifespan=lifespan,
                  description="Store, version, filter and share offline-RL datasets. Heavy work runs as jobs: "
                              "start one, then poll `GET /api/v1/jobs/{id}`.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None, openapi_tags=docs.TAGS,
                  **traced)
    docs.install(app, API_PREFIX)
    problems.install(app)
    middleware.install(app, settings)
    monitoring.install(app, settings)  # last: it wraps everything, refusals included
    api = APIRouter(prefix=API_PREFIX)
    for module in (auth, users, groups, roles, tokens, audit, benchmarks, artifacts, datasets, derive, uploads,
                   exports, metrics, jobs, health):
        api.include_router(module.router)
    app.include_router(api)
    return app
