"""What the API tells its operators: a request id and trace id on every request, one log line per
request, and Prometheus metrics at ``/metrics``.

Metrics are labelled by route template (``/api/v1/datasets/{name}``), never the raw path: ids and
names would make a series per dataset, and a label must not say who uploads what. Each app has its
own registry, so several apps in one process (tests) and several replicas each count only their
own requests; Prometheus scrapes every replica. ``/metrics`` exists only when ``TUPLEHUB_METRICS_TOKEN``
is set, and answers only to that bearer token: a deployment scrapes it from its internal network, and
the proxy in front of the API never has to know about it.
"""

from __future__ import annotations

import hmac
import logging
import time

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuplehub.api.routes.exports import download_export
from tuplehub.api.routes.health import backend_checks
from tuplehub.api.routes.uploads import put_part
from tuplehub.storage import logs
from tuplehub.storage.errors import Unauthenticated
from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.api.access")
# The route label of a request no route took (an unknown path; a body refused for its size before routing):
# one series, whatever the path.
UNMATCHED = "unmatched"
# Any other method (WebDAV's, or any token a more lenient HTTP parser lets through) is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds; the tail is long because downloads stream through some routes.
# A ``_created`` gauge beside every counter doubles the series and tells Prometheus nothing it uses.
disable_created_metrics()
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ApiMetrics:
    """The API's series, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tuplehub_http_requests", "HTTP requests answered, by route template, method "
                                "and status.", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("tuplehub_http_request_duration_seconds", "Time from a request's arrival to its "
                                 "last response byte.", ["route", "method"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.upload_bytes = Counter("tuplehub_upload_bytes", "Upload part bytes received by the API (presigned "
                                    "uploads go straight to S3 and are counted by the ingest jobs).",
                                    registry=self.registry)
        self.export_bytes = Counter("tuplehub_export_bytes", "Export file bytes sent by the API (presigned "
                                    "downloads go straight to S3).", registry=self.registry)
        ProcessCollector(registry=self.registry)
        # issue 12 (compose): what readiness says, for Prometheus' "a dependency is down" alert.
        self.dependency_up = Gauge("tuplehub_dependency_up", "Whether this replica reaches the catalog, the "
                                   "object store and the queue (1) or not (0), asked at each scrape.",
                                   ["dependency"], registry=self.registry)


class Observe:
    """Outermost middleware: the request's log context, its ``X-Request-ID`` header, metrics and log line."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = logs.request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
        trace_id = logs.trace_id_from(headers.get(b"traceparent", b"").decode("latin-1")) or logs.new_trace_id()
        started = time.perf_counter()
        status, received, sent = 500, 0, 0  # 500: the app raised before it answered

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        with logs.log_context(request_id=request_id, trace_id=trace_id):
            try:
                await self.app(scope, counting_receive, observed_send)
            finally:
                self._record(scope, status, time.perf_counter() - started, received, sent)

    def _record(self, scope: Scope, status: int, seconds: float, received: int, sent: int) -> None:
        route = route_template(scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route, method).observe(seconds)
        endpoint = scope.get("endpoint")
        if endpoint is put_part and status < 300:
            self.metrics.upload_bytes.inc(received)
        elif endpoint is download_export:
            self.metrics.export_bytes.inc(sent)  # an interrupted download counts what it got
        logger.info("request", extra={"method": method, "route": route, "path": scope["path"], "status": status,
                                      "duration_ms": round(seconds * 1000, 1), "bytes_in": received,
                                      "bytes_out": sent})


def route_template(scope: Scope) -> str:
    """The matched route's path template, prefixes included: ``/api/v1/datasets/{name}``.

    A route included into the app under a prefix (FastAPI 0.165 keeps included routers whole) knows only
    its own part of the path; the prefix is the part of the request's path before the route's pattern
    matches. Every prefix in this app is a fixed string, so it names no dataset or user.
    """
    route = scope.get("route")
    template, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
    if template is None or pattern is None:
        return UNMATCHED
    path = scope["path"]
    for cut, char in enumerate(path):
        if char == "/" and pattern.match(path[cut:]):
            return path[:cut] + template
    return template


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware (call it last: it must wrap every other) and, with a token, ``/metrics``."""
    metrics = ApiMetrics()
    app.add_middleware(Observe, metrics=metrics)
    if settings.metrics_token is None:
        return
    expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()

    @app.get("/metrics", include_in_schema=False)
    async def read_metrics(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            raise Unauthenticated("/metrics needs 'Authorization: Bearer <TUPLEHUB_METRICS_TOKEN>'")
        state = request.state
        for name, result in (await backend_checks(state.catalog, state.objects, state.queue)).items():
            metrics.dependency_up.labels(name).set(result == "ok")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
