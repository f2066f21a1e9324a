"""Traces (OpenTelemetry): an optional extra, off unless OpenTelemetry's own variables ask for it.

``pip install 'tuplehub[otel]'`` adds the SDK and its OTLP/HTTP exporter. Traces are on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or
``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` keep them
off. These are the variables every OpenTelemetry collector's documentation speaks, so they are not
``TUPLEHUB_*`` settings; the SDK reads the others itself (headers, timeout, sampler, batching,
``OTEL_RESOURCE_ATTRIBUTES``). Asked for but not installed, traces stay off after one warning.
Off, nothing of the SDK is imported.

On, each API app and each worker process opens a :class:`Tracer` of its own service
(``tuplehub-api``, ``tuplehub-worker``): the API's gives FastAPI's own instrumentation its provider,
which makes a server span per request; the catalog stores the span of the request (or job) that
creates a job with the job (``JobRecord.traceparent``, W3C Trace Context); the worker's span for each
attempt is that span's child, with a span per step of the job. While a span is current, its trace id
is the ``trace_id`` of the log lines (:mod:`tuplehub.storage.logs`): logs and traces name one trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuplehub.storage.models import JobRecord

logger = logging.getLogger("tuplehub.tracing")
API_SERVICE = "tuplehub-api"
WORKER_SERVICE = "tuplehub-worker"
_opened = False  # whether this process opened an SDK tracer: until then the helpers below import nothing
_warned = False  # the "traces asked for but off" warning is said once a process


class JobSpan:
    """A job attempt's span as the job runner sees it; this one, with traces off, records nothing."""

    trace_id: str | None = None

    def step(self, stage: str) -> None:
        """The job reached ``stage`` (a checkpoint's); a new stage is a new step span."""

    def ended(self, outcome: str, error: str | None) -> None:
        """How the attempt ended (the outcome the worker's metrics count)."""


class Tracer:
    """Traces off: FastAPI makes no span, and jobs and their steps make none."""

    on = False

    def fastapi_telemetry(self) -> dict[str, Any] | None:
        """``FastAPI(telemetry=...)``, or None to leave FastAPI's defaults (no provider: no spans)."""
        return None

    @contextlib.contextmanager
    def job(self, job: JobRecord) -> Iterator[JobSpan]:
        """The span of one attempt at ``job``, current while the block runs."""
        yield JobSpan()

    def close(self) -> None:
        """Send what is still buffered and stop (the end of the app or the worker), waiting 2 s at most."""


OFF = Tracer()


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces (read without importing OpenTelemetry)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _unsupported(environ: Mapping[str, str]) -> str | None:
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter != "otlp":
        return f"OTEL_TRACES_EXPORTER={exporter} is not supported (tuplehub exports traces by OTLP: otlp or none)"
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol != "http/protobuf":
        return f"the OTLP protocol {protocol} is not supported (tuplehub sends http/protobuf, to port 4318)"
    return None


def open_tracer(service: str, environ: Mapping[str, str] | None = None) -> Tracer:
    """The tracer of ``service`` (``API_SERVICE``, ``WORKER_SERVICE``) as the environment asks for it.

    Never fails: traces asked for but impossible (the extra missing, an exporter tuplehub does not
    send to) are one warning, and the process runs without them.
    """
    global _opened
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return OFF
    problem = _unsupported(environ)
    if problem is None:
        try:
            from tuplehub.storage import tracing_otel
        except ImportError as exc:
            problem = (f"the 'otel' extra is not installed ({exc.name or 'opentelemetry-sdk'} is missing); "
                       "install it with: pip install 'tuplehub[otel]'")
        else:
            _opened = True
            return tracing_otel.OtelTracer(service, tracing_otel.span_exporter())
    _warn_once(f"OTEL_* variables ask for traces, but {problem}; running without traces")
    return OFF


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(message)


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span current here, if traces are on and one is."""
    if not _opened:
        return None
    from tuplehub.storage.tracing_otel import current_trace_id as of_current_span

    return of_current_span()


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` header (what a job stores), if traces are on and one is."""
    if not _opened:
        return None
    from tuplehub.storage.tracing_otel import current_traceparent as of_current_span

    return of_current_span()
