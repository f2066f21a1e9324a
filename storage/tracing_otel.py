"""The OpenTelemetry side of :mod:`tuplehub.storage.tracing`, imported only when traces are on.

Each :class:`OtelTracer` has a provider of its own rather than the process's global one: the
embedded server (and a test) runs the API and a worker in one process, and each must say which
service its spans come from. FastAPI's native instrumentation makes the API's server spans
(``GET /api/v1/datasets/{name}``, with ``http.route``, ``http.request.method`` and
``http.response.status_code``); this module makes the jobs' spans.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import socket
import threading
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tuplehub.storage.tracing import JobSpan, Tracer

if TYPE_CHECKING:
    from tuplehub.storage.models import JobRecord

PROPAGATOR = TraceContextTextMapPropagator()
# Requests whose spans would only be noise: Prometheus's scrapes and the health checks, every few seconds.
UNTRACED = re.compile(r"/metrics$|/api/v1/health/")
# How long a stopping process waits to send its last spans: a collector answers a batch in milliseconds, and
# one that is away (the exporter retries for OTEL_EXPORTER_OTLP_TIMEOUT, 10 s) must not hold up a rolling restart.
CLOSE_TIMEOUT_S = 2.0


def span_exporter() -> SpanExporter:
    """OTLP over HTTP; endpoint, headers, timeout, compression and certificates come from OTEL_EXPORTER_OTLP_*."""
    return OTLPSpanExporter()


def _version() -> str:
    try:
        return importlib.metadata.version("tuplehub")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown"


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return bool(UNTRACED.match(scope.get("path", "")))


class OtelTracer(Tracer):
    on = True

    def __init__(self, service: str, exporter: SpanExporter) -> None:
        # Ours override OTEL_SERVICE_NAME; OTEL_RESOURCE_ATTRIBUTES adds to them (deployment.environment, say).
        resource = Resource.create({"service.name": service, "service.version": _version(),
                                    "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
        self.provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER, parent-based by default
        self.provider.add_span_processor(BatchSpanProcessor(exporter))  # batching: OTEL_BSP_*
        self._tracer = self.provider.get_tracer("tuplehub", _version())

    def fastapi_telemetry(self) -> dict[str, Any]:
        # One span per request: FastAPI's spans around dependencies and serialisation, its metrics and its log
        # records stay off (Prometheus and the JSON log lines have them).
        return {"tracer_provider": self.provider, "tracing": True, "operation_spans": False, "metrics": False,
                "logs": False, "auto_configure": False, "exclude": _untraced}

    @contextlib.contextmanager
    def job(self, job: JobRecord) -> Iterator[JobSpan]:
        parent = PROPAGATOR.extract({"traceparent": job.traceparent}) if job.traceparent else None
        attributes = {"tuplehub.job.id": job.id, "tuplehub.job.kind": job.kind.value,
                      "tuplehub.job.attempt": job.attempts}
        # Exceptions leaving the job are the runner's control flow (a retry, a worker stopping): the outcome
        # says how the attempt went (``ended``), not whatever passes through here.
        with self._tracer.start_as_current_span(f"job {job.kind.value}", context=parent, kind=SpanKind.CONSUMER,
                                                attributes=attributes, record_exception=False,
                                                set_status_on_exception=False) as span:
            handle = _JobSpan(self._tracer, span)
            try:
                yield handle
            finally:
                handle.step(None)

    def close(self) -> None:
        closing = threading.Thread(target=self.provider.shutdown, name="tuplehub-traces-close", daemon=True)
        closing.start()
        closing.join(CLOSE_TIMEOUT_S)


class _JobSpan(JobSpan):
    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self._tracer = tracer
        self._span = span
        self._stage: str | None = None
        self._step: trace.Span | None = None
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def step(self, stage: str | None) -> None:
        if stage == self._stage:
            return
        if self._step is not None:
            self._step.end()
        self._stage = stage
        self._step = None if stage is None else self._tracer.start_span(
            stage, context=trace.set_span_in_context(self._span))

    def ended(self, outcome: str, error: str | None) -> None:
        self._span.set_attribute("tuplehub.job.outcome", outcome)
        if outcome == "failed":
            self._span.set_status(StatusCode.ERROR, error)


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")
