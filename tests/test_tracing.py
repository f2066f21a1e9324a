"""OpenTelemetry traces (issue 12): a request's span, the span of the job it starts, and the logs that name them.

The spans come from real servers (API and worker of the embedded server) through the SDK: into its
in-memory exporter, and by OTLP/HTTP into a receiver on loopback that decodes the protobuf as a
collector would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import tuplehub.storage
from tuplehub.client.cli.server import serve_in_thread
from tuplehub.storage import tracing, tracing_otel
from tuplehub.storage.models import JobKind, JobRecord, JobStatus

from .conftest import admin_client, admin_token, api, make_settings
from .factories import episode_arrays
from .processes import Processes, embedded_client, isolated_env, start_serve, stop, wait_for_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def memory_spans(monkeypatch: pytest.MonkeyPatch) -> list[InMemorySpanExporter]:
    """Traces on, each tracer (the API's, the worker's) exporting into an in-memory exporter of its own."""
    exporters: list[InMemorySpanExporter] = []

    def exporter() -> InMemorySpanExporter:
        exporters.append(InMemorySpanExporter())
        return exporters[-1]

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setattr(tracing_otel, "span_exporter", exporter)
    return exporters


def finished(exporters: list[InMemorySpanExporter]) -> list[ReadableSpan]:
    return [span for exporter in exporters for span in exporter.get_finished_spans()]


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def test_an_ingest_job_is_traced_as_the_child_of_the_request_that_started_it(
        tmp_path: Path, redis_url: str, memory_spans: list[InMemorySpanExporter], json_log: io.StringIO) -> None:
    settings = make_settings(tmp_path, redis_url, auto_metrics=False)
    with serve_in_thread(settings) as server:
        with admin_client(server) as admin:
            dataset = admin.datasets.create("traced")
            ingest = dataset.upload(episode_arrays(episodes=2, length=5)).wait(timeout=120)
        with api(server, admin_token(server)) as http:  # a caller that sends its own trace context
            assert http.get("/health/ready").status_code == 200  # probes (and scrapes) make no span
            response = http.post("/datasets/traced/exports", json={}, headers={"traceparent": TRACEPARENT})
            assert response.status_code == 202, response.text
            export_id = response.json()["id"]
            for _ in range(600):
                if http.get(f"/jobs/{export_id}").json()["status"] == JobStatus.succeeded:
                    break
                time.sleep(0.1)
    spans = finished(memory_spans)  # the server stopped: both tracers sent everything
    by_id = {span.context.span_id: span for span in spans}
    assert not [span for span in spans if "/health/" in span.name]

    [job] = [span for span in spans if span.attributes.get("tuplehub.job.id") == ingest.id]
    request = by_id[job.parent.span_id]  # the worker's span is the child of the API's span for the request
    assert (job.name, job.kind, job.resource.attributes["service.name"]) == (
        "job ingest", SpanKind.CONSUMER, tracing.WORKER_SERVICE)
    assert job.context.trace_id == request.context.trace_id
    assert (request.name, request.kind, request.resource.attributes["service.name"]) == (
        "POST /api/v1/uploads/{upload_id}/complete", SpanKind.SERVER, tracing.API_SERVICE)
    assert (request.attributes["http.request.method"], request.attributes["http.response.status_code"]) == ("POST", 202)
    assert job.attributes["tuplehub.job.outcome"] == "succeeded"
    steps = [span for span in spans if span.parent is not None and span.parent.span_id == job.context.span_id]
    assert [span.name for span in steps] == ["ingest", "commit"]

    [export] = [span for span in spans if span.attributes.get("tuplehub.job.id") == export_id]
    caller_request = by_id[export.parent.span_id]
    assert hex_trace(export) == hex_trace(caller_request) == TRACE_ID  # the caller's traceparent is honoured
    assert format(caller_request.parent.span_id, "016x") == CALLER_SPAN

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    job_lines = [line for line in lines if line.get("job_id") == ingest.id]
    assert [line["message"] for line in job_lines] == ["job started", "job ended"]
    assert {line["trace_id"] for line in job_lines} == {hex_trace(job)}  # the log lines name the OTel trace
    assert {line["trace_id"] for line in lines if line.get("route") == "/api/v1/uploads/{upload_id}/complete"} \
        == {hex_trace(request)}
    assert {line["trace_id"] for line in lines if line.get("job_id") == export_id} == {TRACE_ID}


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver's trace endpoint: decodes each export as a collector does, and answers it."""

    received: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            self.server.received.append(ExportTraceServiceRequest.FromString(body))  # type: ignore[attr-defined]
            status, answer = 200, ExportTraceServiceResponse().SerializeToString()
        else:
            status, answer = 404, b""
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def received_spans(collector: ThreadingHTTPServer) -> dict[bytes, tuple[str, str, bytes, bytes, dict[str, str]]]:
    """Span id -> (service, name, trace id, parent span id, string attributes) of every span received."""
    spans = {}
    for export in collector.received:  # type: ignore[attr-defined]
        for resource_spans in export.resource_spans:
            service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}["service.name"]
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: kv.value.string_value for kv in span.attributes}
                    spans[span.span_id] = (service, span.name, span.trace_id, span.parent_span_id, attributes)
    return spans


@pytest.mark.e2e
def test_tuplehub_serve_and_its_worker_process_send_one_trace_to_the_otlp_endpoint(
        tmp_path: Path, collector: ThreadingHTTPServer, running: Processes) -> None:
    """As deployed: the API and the worker in processes of their own, OTEL_EXPORTER_OTLP_ENDPOINT set for both."""
    env = isolated_env(tmp_path / "config", TUPLEHUB_LOG_FORMAT="json", TUPLEHUB_LOG_LEVEL="INFO",
                       TUPLEHUB_AUTO_METRICS="false",
                       OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}")
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, env=env, log=log, args=("--json",)))
    wait_for_server(data_dir, server, log)
    with embedded_client(data_dir, env) as hub:
        job = hub.datasets.create("sent").upload(episode_arrays(episodes=2, length=5)).wait(timeout=120)
    assert stop(server) == 0  # both processes send what they still hold as they stop
    spans = received_spans(collector)
    [(_, name, trace_id, parent, _)] = [span for span in spans.values() if span[0] == tracing.WORKER_SERVICE
                                        and span[4].get("tuplehub.job.id") == job.id]
    assert name == "job ingest"
    assert spans[parent][:3] == (tracing.API_SERVICE, "POST /api/v1/uploads/{upload_id}/complete", trace_id)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    assert {line["trace_id"] for line in lines if line.get("job_id") == job.id} == {trace_id.hex()}


def test_a_collector_that_never_answers_does_not_hold_up_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopping API or worker waits CLOSE_TIMEOUT_S for its last spans, not the exporter's retries."""
    answer = threading.Event()

    class Unanswered(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            answer.wait()  # until the test ends: a close that waited for it would never return
            return super().export(spans)

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setattr(tracing_otel, "span_exporter", Unanswered)
    monkeypatch.setattr(tracing_otel, "CLOSE_TIMEOUT_S", 0.1)
    tracer = tracing.open_tracer(tracing.WORKER_SERVICE)
    with tracer.job(JobRecord(kind=JobKind.export, owner="someone")) as span:
        span.ended("succeeded", None)
    try:
        tracer.close()
    finally:
        answer.set()


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, False),  # tuning alone turns nothing on
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False)])
def test_traces_are_on_only_when_the_otel_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on
    tracer = tracing.open_tracer(tracing.API_SERVICE, environ)
    tracer.close()
    assert tracer.on is on


@pytest.fixture
def warnings_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(tracing, "_warned", False)
    caplog.set_level(logging.WARNING, logger="tuplehub.tracing")
    return caplog


def test_traces_asked_for_without_the_extra_are_one_warning_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, warnings_once: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from tuplehub.api import create_app

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    for name in [name for name in sys.modules if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed: importing it fails
    monkeypatch.delitem(sys.modules, "tuplehub.storage.tracing_otel")
    monkeypatch.delattr(tuplehub.storage, "tracing_otel")
    create_app(make_settings(tmp_path, "redis://unused"), "redis://unused")
    assert tracing.open_tracer(tracing.WORKER_SERVICE) is tracing.OFF
    [warning] = warnings_once.records
    assert "pip install 'tuplehub[otel]'" in warning.getMessage()
    assert "running without traces" in warning.getMessage()


@pytest.mark.parametrize(("variable", "value"), [("OTEL_TRACES_EXPORTER", "zipkin"),
                                                 ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
def test_an_exporter_tuplehub_cannot_send_to_is_one_warning(variable: str, value: str,
                                                            warnings_once: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", variable: value}
    assert tracing.open_tracer(tracing.API_SERVICE, environ) is tracing.OFF
    assert tracing.open_tracer(tracing.WORKER_SERVICE, environ) is tracing.OFF
    [warning] = warnings_once.records
    assert value in warning.getMessage()


def test_with_traces_off_the_server_imports_nothing_of_the_sdk(tmp_path: Path) -> None:
    """Off, an app and a worker are built without importing the SDK (FastAPI itself imports the API package)."""
    script = textwrap.dedent(f"""
        import sys
        from tuplehub.api import create_app
        from tuplehub.storage import tracing
        from tuplehub.storage.settings import Settings
        from tuplehub.workers import build_worker
        settings = Settings(_env_file=None, data_dir={str(tmp_path)!r}, redis_url="redis://127.0.0.1:1")
        create_app(settings, "redis://127.0.0.1:1")
        build_worker(settings, "redis://127.0.0.1:1")
        assert tracing.open_tracer(tracing.WORKER_SERVICE) is tracing.OFF
        print(sorted(name for name in sys.modules if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))))
    """)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
