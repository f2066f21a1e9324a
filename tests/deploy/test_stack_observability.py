"""Observability of the compose stack: the ``monitoring`` profile's Prometheus and the services' logs.

On the session stack (two API replicas, two workers): Prometheus from compose's own
``prometheus.yml`` and ``alerts.yml`` finds every replica by DNS and scrapes it, the counters it
holds, summed over the replicas, grow by exactly the jobs and requests this module sends through
the proxy, the alert rules are loaded and none fires; every line ``compose logs`` shows of the API
and the workers is one JSON object, and a request's trace id is in the lines of the job it started.
Prometheus is removed again at the end (container and volume): the stack is left as it was found.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tuplehub.client import Client
from tuplehub.client.errors import JobFailed

from ..factories import episode_arrays
from .podman import ROOT, podman
from .stack import Stack

pytestmark = pytest.mark.timeout(1800)  # the first tier test of a run builds the images and brings the stack up

SCRAPE_TIMEOUT_S = 75  # Prometheus scrapes every 15 s and looks the replicas up again every 15 s
# Prints the answers of Prometheus' HTTP API (run inside its container: nothing publishes its port) to
# the paths given, as one JSON object by path.
PROMETHEUS_GET = ("import json, sys, urllib.request as u; print(json.dumps({p: json.load(u.urlopen("
                  "'http://127.0.0.1:9090' + p, timeout=10)) for p in sys.argv[1:]}))")
UPLOADS = "/api/v1/datasets/{name}/uploads"
COMPLETE = "/api/v1/uploads/{upload_id}/complete"
# Counted from the client's side, (route template, method, status) of what the proxy answered.
ROUTES = {(UPLOADS, "POST"): lambda p: p.startswith("/api/v1/datasets/") and p.endswith("/uploads"),
          (COMPLETE, "POST"): lambda p: p.startswith("/api/v1/uploads/") and p.endswith("/complete")}


class Prometheus:
    """The stack's Prometheus, asked through its HTTP API inside its container."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def get(self, *paths: str) -> dict[str, Any]:
        answer = json.loads(self.stack.exec("prometheus", "python3", "-c", PROMETHEUS_GET, *paths).stdout)
        for path, body in answer.items():
            assert body["status"] == "success", (path, body)
        return {path: body["data"] for path, body in answer.items()}

    def query(self, *expressions: str) -> list[dict[tuple[tuple[str, str], ...], float]]:
        """Each expression's instant vector now, as {sorted labels: value}."""
        paths = [f"/api/v1/query?{urllib.parse.urlencode({'query': e})}" for e in expressions]
        answers = self.get(*paths)
        return [{tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in answers[p]["result"]}
                for p in paths]

    def targets(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/targets?state=active")["/api/v1/targets?state=active"]["activeTargets"]


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    """``--profile monitoring up -d prometheus``; removed with its volume at the end."""
    started = time.monotonic()
    stack.compose("--profile", "monitoring", "up", "-d", "--no-deps", "prometheus")
    try:
        deadline = time.monotonic() + 60
        while stack.exec("prometheus", "python3", "-c", "import urllib.request as u; "
                         "u.urlopen('http://127.0.0.1:9090/-/ready', timeout=3)", check=False).returncode:
            assert time.monotonic() < deadline, stack.logs("prometheus")
            time.sleep(1)
        print(f"prometheus ready {time.monotonic() - started:.1f} s after up")
        yield Prometheus(stack)
    except BaseException:
        print(stack.logs("prometheus")[-5000:])
        raise
    finally:
        stack.compose("--profile", "monitoring", "rm", "--stop", "--force", "prometheus", check=False)
        podman("volume", "rm", "-f", f"{stack.project}_prometheus-data", check=False)


def _ip(container: str) -> str:
    return podman("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  container).stdout.strip()


def _replicas_up(stack: Stack, prometheus: Prometheus) -> dict[str, set[str]]:
    """Wait until every API and worker replica is an active target that was scraped and is up; their addresses."""
    expected = {"api": {f"{_ip(c)}:8000" for c in stack.containers("api")},
                "worker": {f"{_ip(c)}:9100" for c in stack.containers("worker")}}
    assert [len(v) for v in expected.values()] == [2, 2], expected
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        targets = prometheus.targets()
        up = {job: {t["labels"]["instance"] for t in targets if t["labels"]["job"] == job and t["health"] == "up"}
              for job in expected}
        if up == expected:
            return up
        if time.monotonic() > deadline:
            raise AssertionError(f"targets not up after {SCRAPE_TIMEOUT_S} s: expected {expected}, got "
                                 f"{[(t['labels'], t['health'], t.get('lastError')) for t in targets]}")
        time.sleep(2)


COUNTERS = {
    "jobs": "sum by (kind, outcome) (tuplehub_jobs_total{kind=~\"ingest|export\"})",
    "attempts": "sum by (kind) (tuplehub_job_attempts_total{kind=~\"ingest|export\"})",
    "rows": "sum by (kind) (tuplehub_job_rows_total{kind=~\"ingest|export\"})",
    "bytes": "sum by (kind) (tuplehub_job_bytes_total{kind=\"export\"})",
    "requests": "sum by (route, method, status) (tuplehub_http_requests_total{method=\"POST\", "
                "route=~\".*/uploads|.*/complete\"})",
}


def _counters(prometheus: Prometheus) -> dict[str, Counter[tuple[str, ...]]]:
    """Each of COUNTERS summed over the replicas, keyed by its label values in the order of the labels' names."""
    vectors = prometheus.query(*COUNTERS.values())
    return {name: Counter({tuple(v for _, v in labels): value for labels, value in vector.items()})
            for name, vector in zip(COUNTERS, vectors, strict=True)}


def _broken_parquet(path: Path) -> Path:
    """A Parquet file the client sends (it is Parquet) and the ingest job refuses (no tuple columns)."""
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0]}), path)
    return path


def _json_lines(stack: Stack, service: str) -> list[dict[str, Any]]:
    """Every log line of ``service``'s replicas, each parsed as one JSON object."""
    text = stack.compose("logs", "--no-color", "--no-log-prefix", service).stdout
    lines = [line for line in text.splitlines() if line.strip()]
    parsed, broken = [], []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            broken.append(line)
            continue
        (parsed if isinstance(value, dict) else broken).append(value)
    assert not broken, f"{len(broken)} of {len(lines)} {service} log lines are not JSON objects: {broken[:5]}"
    assert parsed, f"no {service} log lines"
    return parsed


def test_prometheus_scrapes_every_replica_counts_the_jobs_and_no_alert_fires(
        stack: Stack, client: Client, prometheus: Prometheus, tmp_path: Path) -> None:
    started = time.monotonic()
    # Tests before this one kill, stop and rescale replicas: start from the stack's 2 + 2, all healthy.
    stack.up("--no-recreate", "--scale", "api=2", "--scale", "worker=2", "api", "worker")
    stack.wait_healthy(api=2, worker=2)
    up = _replicas_up(stack, prometheus)
    before = _counters(prometheus)
    scraped = time.monotonic()

    seen: Counter[tuple[str, ...]] = Counter()
    request_ids: dict[str, str] = {}  # ingest job id -> X-Request-ID of the completion that started it
    trace = secrets.token_hex(16)

    def sent(request: httpx.Request) -> None:  # the export's request carries a trace of ours
        if request.method == "POST" and request.url.path.endswith("/exports"):
            request.headers["traceparent"] = f"00-{trace}-{secrets.token_hex(8)}-01"

    def answered(response: httpx.Response) -> None:
        path = response.request.url.path
        for (route, method), matches in ROUTES.items():
            if response.request.method == method and matches(path):
                seen[(route, method, str(response.status_code))] += 1
                if route == COMPLETE:
                    response.read()
                    request_ids[response.json()["id"]] = response.headers["x-request-id"]

    client._http.event_hooks["request"].append(sent)
    client._http.event_hooks["response"].append(answered)
    try:
        suffix = secrets.token_hex(3)
        first = client.datasets.create(f"obs-first-{suffix}")
        second = client.datasets.create(f"obs-second-{suffix}")
        ingests = [first.upload(episode_arrays(episodes=3, length=40, seed=1)).wait(timeout=180),
                   first.upload(episode_arrays(episodes=2, length=30, seed=2, first_id=10)).wait(timeout=180),
                   second.upload(episode_arrays(episodes=4, length=25, seed=3)).wait(timeout=180)]
        broken = client.datasets.create(f"obs-broken-{suffix}").upload(_broken_parquet(tmp_path / "broken.parquet"))
        with pytest.raises(JobFailed):
            broken.wait(timeout=180)
        exports = [first.export(), second.export(version=1, columns=["observation", "reward"])]
        exported = [export.to_numpy() for export in exports]
    finally:
        client._http.event_hooks["request"].remove(sent)
        client._http.event_hooks["response"].remove(answered)
    ran = time.monotonic()

    export_records = [client.jobs.get(export.id).record for export in exports]
    assert [len(e["reward"]) for e in exported] == [r.result["rows"] for r in export_records]
    expected = {
        "jobs": Counter({("ingest", "succeeded"): 3, ("ingest", "failed"): 1, ("export", "succeeded"): 2}),
        "attempts": Counter({("ingest",): 4, ("export",): 2}),
        "rows": Counter({("ingest",): sum(j.record.result["transitions"] for j in ingests),
                         ("export",): sum(r.result["rows"] for r in export_records)}),
        "bytes": Counter({("export",): sum(r.result["bytes"] for r in export_records)}),
        "requests": Counter({(method, route, status): n for (route, method, status), n in seen.items()}),
    }
    assert seen == {(UPLOADS, "POST", "201"): 4, (COMPLETE, "POST", "202"): 4}, seen

    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        after = _counters(prometheus)
        grown = {name: Counter({k: v - before[name][k] for k, v in after[name].items() if v != before[name][k]})
                 for name in COUNTERS}
        if grown == expected or time.monotonic() > deadline:
            break
        for name in COUNTERS:  # more than the jobs run can only grow further: fail at once
            assert not any(v > expected[name][k] for k, v in grown[name].items()), (name, grown, expected)
        time.sleep(3)
    assert grown == expected, f"after {SCRAPE_TIMEOUT_S} s: Prometheus' counters grew by {grown}, expected {expected}"
    counted = time.monotonic()

    # Still every replica up, the rules of compose/prometheus/alerts.yml loaded, and none firing.
    assert _replicas_up(stack, prometheus) == up
    data = prometheus.get("/api/v1/rules?type=alert", "/api/v1/alerts")
    loaded = {rule["name"] for group in data["/api/v1/rules?type=alert"]["groups"] for rule in group["rules"]}
    rules = yaml.safe_load((ROOT / "compose" / "prometheus" / "alerts.yml").read_text())
    assert loaded == {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    alerts = data["/api/v1/alerts"]["alerts"]
    assert not [a for a in alerts if a["state"] == "firing"], alerts
    print(f"targets {up}; counters grew by {dict(grown)}; pending alerts: "
          f"{[a['labels']['alertname'] for a in alerts]}; seconds: targets up and first scrape "
          f"{scraped - started:.1f}, jobs {ran - scraped:.1f}, until Prometheus counted them {counted - ran:.1f}")

    # A request's trace id is in the lines of the job it started, in whichever worker ran it.
    api_lines, worker_lines = _json_lines(stack, "api"), _json_lines(stack, "worker")
    ingest = ingests[0]
    completion = [line for line in api_lines if line.get("request_id") == request_ids[ingest.id]
                  and line.get("route") == COMPLETE]
    assert len(completion) == 1, completion
    for job, trace_id in ((ingest, completion[0]["trace_id"]), (exports[0], trace)):
        lines = [line for line in worker_lines if line.get("job_id") == job.id]
        assert {line["message"] for line in lines} >= {"job started", "job ended"}, lines
        assert {line.get("trace_id") for line in lines} == {trace_id}, lines
    np.testing.assert_array_equal(exported[1]["reward"], episode_arrays(episodes=4, length=25, seed=3)["reward"])
