"""Monitoring: Prometheus metrics on the API and on the worker, request and trace ids, JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from arq import Retry
from prometheus_client.parser import text_string_to_metric_families

from tuplehub.client import Client
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.storage import logs
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.errors import ConfigError, InvalidUpload, StoreUnavailable
from tuplehub.storage.models import JobKind, JobRecord, JobStatus
from tuplehub.storage.objects import open_object_store
from tuplehub.workers.context import JobRun, WorkerContext, run_job
from tuplehub.workers.monitoring import WorkerMonitor

from .conftest import admin_token, api, hub_server_with, make_settings, new_user
from .factories import episode_arrays
from .processes import Processes, embedded_client, free_port, isolated_env, start_serve, stop, wait_for_server

TOKEN = "metrics-token-for-the-tests-0123"
hub_server = hub_server_with(metrics_token=TOKEN, worker_metrics_port=free_port(), auto_metrics=False)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = TOKEN) -> tuple[str, Samples]:
    """The metrics text at ``url``, and every sample in it (it must parse)."""
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=30)
    assert response.status_code == 200, response.text
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(response.text) for sample in family.samples}
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def api_metrics(server: EmbeddedServer) -> Samples:
    return scrape(f"{server.url}/metrics")[1]


def worker_metrics(server: EmbeddedServer) -> Samples:
    return scrape(f"http://127.0.0.1:{server.settings.worker_metrics_port}/metrics")[1]


def test_metrics_answer_only_to_the_token(hub_server: EmbeddedServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.get(f"{hub_server.url}/metrics", headers=headers, timeout=30)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        worker = httpx.get(f"http://127.0.0.1:{hub_server.settings.worker_metrics_port}/metrics", headers=headers,
                           timeout=30)
        assert worker.status_code == 401, headers
    assert "/metrics" not in httpx.get(f"{hub_server.url}/api/v1/openapi.json", timeout=30).json()["paths"]


def test_without_a_token_there_is_no_metrics_route(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> None:
    from tuplehub.client.cli.server import serve_in_thread

    from .conftest import make_settings

    with serve_in_thread(make_settings(tmp_path_factory.mktemp("plain"), redis_url)) as server:
        response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 404


def test_requests_are_counted_by_route_template_and_name_nobody(hub_server: EmbeddedServer, admin: Client,
                                                                unique_name: str) -> None:
    user = new_user(admin)
    admin.datasets.create(unique_name)
    before = api_metrics(hub_server)
    with api(hub_server, admin_token(hub_server)) as http:
        for name in (unique_name, unique_name, f"{unique_name}-missing"):
            http.get(f"/datasets/{name}")
        assert http.get(f"/no/such/{unique_name}").status_code == 404
        http.request("PROPFIND", "/health/live")  # WebDAV and the like: one "other" series for them all
    text, after = scrape(f"{hub_server.url}/metrics")
    route = "/api/v1/datasets/{name}"
    counted = "tuplehub_http_requests_total"
    assert value(after, counted, route=route, method="GET", status="200") - \
        value(before, counted, route=route, method="GET", status="200") == 2
    assert value(after, counted, route=route, method="GET", status="404") - \
        value(before, counted, route=route, method="GET", status="404") == 1
    assert value(after, counted, route="unmatched", method="GET", status="404") >= 1
    assert value(after, "tuplehub_http_request_duration_seconds_count", route=route, method="GET") >= 3
    assert value(after, counted, route="/api/v1/health/live", method="other", status="405") == 1
    assert "PROPFIND" not in text
    assert unique_name not in text
    assert user not in text
    assert "admin" not in text


def test_jobs_and_bytes_are_counted_on_api_and_worker(hub_server: EmbeddedServer, admin: Client,
                                                      unique_name: str) -> None:
    api_before, worker_before = api_metrics(hub_server), worker_metrics(hub_server)
    dataset = admin.datasets.create(unique_name)
    dataset.upload(episode_arrays(episodes=3, length=8)).wait(timeout=120)
    rows = len(dataset.export().to_numpy()["reward"])
    api_after, worker_after = api_metrics(hub_server), worker_metrics(hub_server)

    def moved(samples_after: Samples, samples_before: Samples, name: str, **labels: str) -> float:
        return value(samples_after, name, **labels) - value(samples_before, name, **labels)

    assert moved(api_after, api_before, "tuplehub_upload_bytes_total") > 0
    assert moved(api_after, api_before, "tuplehub_export_bytes_total") > 0
    for kind in ("ingest", "export"):
        assert moved(worker_after, worker_before, "tuplehub_jobs_total", kind=kind, outcome="succeeded") == 1
        assert moved(worker_after, worker_before, "tuplehub_job_attempts_total", kind=kind) == 1
        assert moved(worker_after, worker_before, "tuplehub_job_duration_seconds_count", kind=kind,
                     outcome="succeeded") == 1
        assert moved(worker_after, worker_before, "tuplehub_job_rows_total", kind=kind) == rows
        assert moved(worker_after, worker_before, "tuplehub_job_bytes_total", kind=kind) > 0
        assert value(worker_after, "tuplehub_jobs_running", kind=kind) == 0
    assert ("tuplehub_queue_depth", frozenset()) in worker_after  # read from Redis at each scrape


def test_a_client_request_id_comes_back_and_a_bad_one_is_replaced(hub_server: EmbeddedServer) -> None:
    url = f"{hub_server.url}/api/v1/health/live"
    assert httpx.get(url, headers={"X-Request-ID": "client-req.42"}, timeout=30).headers["x-request-id"] == \
        "client-req.42"
    for bad in ("has spaces", "x" * 200, "new\\nline"):
        given = httpx.get(url, headers={"X-Request-ID": bad}, timeout=30).headers["x-request-id"]
        assert given != bad
        assert len(given) == 16
    first, second = (httpx.get(url, timeout=30).headers["x-request-id"] for _ in range(2))
    assert first != second


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What tuplehub logs at INFO while the test runs, as the JSON lines a deployment gets."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, "json")
    logger = logging.getLogger("tuplehub")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_request_trace_id_reaches_the_job_log_lines(hub_server: EmbeddedServer, admin: Client,
                                                         unique_name: str, json_log: io.StringIO) -> None:
    dataset = admin.datasets.create(unique_name)
    dataset.upload(episode_arrays(episodes=2, length=5)).wait(timeout=120)
    with api(hub_server, admin_token(hub_server)) as http:
        response = http.post(f"/datasets/{unique_name}/exports", json={}, headers={
            "traceparent": TRACEPARENT, "X-Request-ID": "export-request-1"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        for _ in range(600):
            if http.get(f"/jobs/{job_id}").json()["status"] == JobStatus.succeeded:
                break
            time.sleep(0.1)
    time.sleep(0.2)  # the job's closing line comes just after its status
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]  # every line is JSON
    [request] = [line for line in lines if line.get("request_id") == "export-request-1"]
    assert request["message"] == "request"
    assert (request["trace_id"], request["route"], request["status"]) == (
        TRACE_ID, "/api/v1/datasets/{name}/exports", 202)
    assert request["user"] == response.json()["owner"]
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert [line["message"] for line in job_lines] == ["job started", "job ended"]
    assert all(line["trace_id"] == TRACE_ID and line["user"] == request["user"] for line in job_lines)
    assert job_lines[-1]["outcome"] == "succeeded"


@pytest.mark.parametrize(("header", "expected"), [
    (TRACEPARENT, TRACE_ID),
    (f"01-{TRACE_ID}-00f067aa0ba902b7-01-later", TRACE_ID),  # a later version may add fields
    (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", None),      # version 00 may not
    (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE_ID}-{'0' * 16}-01", None),
    (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None),
    ("garbage", None), (None, None)])
def test_traceparent_is_read_as_w3c_trace_context_says(header: str | None, expected: str | None) -> None:
    assert logs.trace_id_from(header) == expected


def test_text_lines_carry_the_context_and_json_lines_the_traceback() -> None:
    record = logging.makeLogRecord({"name": "tuplehub.workers", "levelname": "WARNING", "levelno": 30,
                                    "msg": "job %s slow", "args": ("j1",), "kind": "ingest"})
    with logs.log_context(job_id="j1", trace_id=TRACE_ID):
        text, as_json = io.StringIO(), io.StringIO()
        for stream, fmt in ((text, "text"), (as_json, "json")):
            logs.make_handler(stream, fmt).handle(record)  # type: ignore[arg-type]
    assert text.getvalue().rstrip().endswith(f"job j1 slow job_id=j1 trace_id={TRACE_ID} kind=ingest")
    line = json.loads(as_json.getvalue())
    assert (line["message"], line["level"], line["job_id"], line["kind"]) == ("job j1 slow", "warning", "j1", "ingest")


async def test_a_new_job_takes_the_trace_and_a_stored_one_keeps_its_own(tmp_path: Path) -> None:
    """A job stored before trace ids, read (and written back) inside a request, got that request's trace."""
    catalog = await open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        old = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="u1"))
        await catalog._run(lambda c: c.execute("UPDATE jobs SET doc = json_remove(doc, '$.trace_id')"), write=True)
        with logs.log_context(trace_id=TRACE_ID):
            assert (await catalog.get_job(old.id)).trace_id is None
            await catalog.request_cancel(old.id)
            new = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="u1"))
        assert (await catalog.get_job(old.id)).trace_id is None
        assert (await catalog.get_job(new.id)).trace_id == TRACE_ID
    finally:
        await catalog.aclose()


def test_a_worker_metrics_port_in_use_names_its_setting() -> None:
    first, second = WorkerMonitor(), WorkerMonitor()
    first.serve("127.0.0.1", 0, None)
    try:
        assert first.port is not None
        with pytest.raises(ConfigError, match="TUPLEHUB_WORKER_METRICS_PORT"):
            second.serve("127.0.0.1", first.port, None)
    finally:
        first.close()


def test_a_request_id_with_a_trailing_newline_is_replaced() -> None:
    assert logs.request_id_from("client-id-1") == "client-id-1"
    assert logs.request_id_from("client-id-1\n") != "client-id-1\n"


def test_text_lines_escape_what_could_forge_a_line_or_restyle_the_terminal() -> None:
    """A path's ``%0a`` or ``%1b`` arrives decoded; on a terminal it stays on its own line, quoted."""
    record = logging.makeLogRecord({"name": "tuplehub.api.access", "levelname": "INFO", "levelno": 20,
                                    "msg": "dataset %s", "args": ("a\nFAKE",),
                                    "path": "/x\n12:00:00 WARNING tuplehub forged\x1b[2J"})
    text = io.StringIO()
    logs.make_handler(text, "text").handle(record)  # type: ignore[arg-type]
    assert text.getvalue().count("\n") == 1
    assert "\x1b" not in text.getvalue()
    assert '"dataset a\\nFAKE" path="/x\\n12:00:00 WARNING tuplehub forged\\u001b[2J"' in text.getvalue()


def test_text_lines_keep_the_traceback_below_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord({"name": "t", "levelname": "ERROR", "levelno": 40, "msg": "failed",
                                        "exc_info": sys.exc_info()})
    text = io.StringIO()
    with logs.log_context(job_id="j1"):
        logs.make_handler(text, "text").handle(record)  # type: ignore[arg-type]
    head, _, tail = text.getvalue().partition("\n")
    assert head.endswith("ERROR t failed job_id=j1")
    assert tail.startswith("Traceback")
    assert "ValueError: boom" in tail


@pytest.mark.e2e
def test_serve_logs_json_lines_and_its_worker_process_carries_the_trace(tmp_path: Path, running: Processes) -> None:
    """Across processes: the API in ``tuplehub serve``, the job in the worker child it supervises."""
    env = isolated_env(tmp_path / "config", TUPLEHUB_LOG_FORMAT="json", TUPLEHUB_LOG_LEVEL="INFO",
                       TUPLEHUB_AUTO_METRICS="false")
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, env=env, log=log, args=("--json",)))
    url = wait_for_server(data_dir, server, log)
    with embedded_client(data_dir, env) as hub:
        hub.datasets.create("traced").upload(episode_arrays(episodes=2, length=5)).wait(timeout=60)
        token = hub.tokens.create("trace").token
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        job_id = http.post("/datasets/traced/exports", json={}, headers={"traceparent": TRACEPARENT}).json()["id"]
        for _ in range(600):
            if http.get(f"/jobs/{job_id}").json()["status"] == JobStatus.succeeded:
                break
            time.sleep(0.1)
    time.sleep(0.5)
    assert stop(server) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line, prints included
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert [line["message"] for line in job_lines] == ["job started", "job ended"]
    assert {line["trace_id"] for line in job_lines} == {TRACE_ID}
    assert any(line.get("route") == "/api/v1/datasets/{name}/exports" and line["trace_id"] == TRACE_ID
               for line in lines)


async def test_each_attempt_is_counted_once_with_its_outcome(tmp_path: Path) -> None:
    """A failure, a retry after an outage, a success: one count each, under the outcome that ended it."""
    settings = make_settings(tmp_path, "redis://unused", job_max_tries=3)
    catalog = await open_catalog(settings.resolved_catalog_url())
    monitor = WorkerMonitor()
    ctx = WorkerContext(settings=settings, catalog=catalog, worker_id="test", monitor=monitor,
                        objects=open_object_store(settings.resolved_objects_url()))

    async def bad_input(run: JobRun) -> dict[str, object]:
        raise InvalidUpload("reward is NaN in row 3", column="reward", row=3)

    async def outage(run: JobRun) -> dict[str, object]:
        raise StoreUnavailable("catalog: connection refused")

    async def fine(run: JobRun) -> dict[str, object]:
        return {"rows": 7, "bytes": 1234}

    try:
        for kind, body in ((JobKind.ingest, bad_input), (JobKind.export, outage), (JobKind.export, fine)):
            job = await catalog.create_job(JobRecord(kind=kind, owner="u1"))
            if body is outage:
                with pytest.raises(Retry):
                    await run_job(ctx, job.id, body, timeout_s=30)
            else:
                await run_job(ctx, job.id, body, timeout_s=30)
        assert (await catalog.get_job(job.id)).status == JobStatus.succeeded
    finally:
        await catalog.aclose()
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in monitor.registry.collect() for s in family.samples}
    assert value(samples, "tuplehub_jobs_total", kind="ingest", outcome="failed") == 1
    assert value(samples, "tuplehub_jobs_total", kind="export", outcome="retrying") == 1
    assert value(samples, "tuplehub_jobs_total", kind="export", outcome="succeeded") == 1
    assert value(samples, "tuplehub_job_attempts_total", kind="export") == 2  # one each: two export jobs
    assert value(samples, "tuplehub_job_rows_total", kind="export") == 7
    assert value(samples, "tuplehub_job_bytes_total", kind="export") == 1234
    assert value(samples, "tuplehub_job_rows_total", kind="ingest") == 0  # a failed job moved nothing
    assert value(samples, "tuplehub_jobs_running", kind="export") == 0


def test_readiness_names_the_dependency_that_fails(tmp_path: Path, redis_url: str, s3_endpoint: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tuplehub.client.cli.server import serve_in_thread

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    settings = make_settings(tmp_path, redis_url, objects_url="s3://no-such-bucket/data", s3_endpoint_url=s3_endpoint,
                             s3_region="us-east-1", s3_create_bucket=False)  # else the API makes it at start
    with serve_in_thread(settings) as server:
        response = httpx.get(f"{server.url}/api/v1/health/ready", timeout=30)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["catalog"], checks["queue"]) == ("ok", "ok")
    assert checks["objects"].startswith("failing: object store s3://no-such-bucket")
