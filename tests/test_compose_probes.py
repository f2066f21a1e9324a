"""What compose.yaml's healthchecks and Prometheus' alert rules read from tuplehub (issue 12): the
healthcheck commands themselves, run against a real API and worker, and the series the alerts need
(readiness as ``tuplehub_dependency_up``, free disk as ``tuplehub_disk_free_bytes``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.workers.monitoring import WorkerMonitor

from .conftest import hub_server_with, make_settings
from .processes import free_port

TOKEN = "metrics-token-for-compose-probes"
hub_server = hub_server_with(metrics_token=TOKEN, worker_metrics_port=free_port(), auto_metrics=False)
SERVICES = yaml.safe_load((Path(__file__).parent.parent / "compose" / "compose.yaml").read_text())["services"]


def _probe(service: str, port: int, token: str) -> subprocess.CompletedProcess[str]:
    """The service's healthcheck command (``python3 -c ...`` in a shell) as compose runs it, on the test's port."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    assert test[1].startswith("python3 -c "), test
    command = test[1].replace("python3", shlex.quote(sys.executable), 1)
    command = command.replace(":9100/", f":{port}/").replace(":8000/", f":{port}/")
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TUPLEHUB_METRICS_TOKEN": token})


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_healthchecks_pass_on_a_running_api_and_worker(hub_server: EmbeddedServer) -> None:
    api_port = int(hub_server.url.rsplit(":", 1)[1])
    assert _probe("api", api_port, TOKEN).returncode == 0
    worker = _probe("worker", hub_server.settings.worker_metrics_port, TOKEN)
    assert worker.returncode == 0, worker.stderr
    assert _probe("worker", hub_server.settings.worker_metrics_port, "not-the-token").returncode != 0
    assert _probe("worker", free_port(), TOKEN).returncode != 0  # nothing listening: unhealthy


def test_the_api_reports_each_dependency(hub_server: EmbeddedServer) -> None:
    response = httpx.get(f"{hub_server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    samples = _samples(response.text)
    for dependency in ("catalog", "objects", "queue"):
        assert samples[("tuplehub_dependency_up", (("dependency", dependency),))] == 1.0


def test_a_dependency_down_is_zero(tmp_path: Path, redis_url: str, s3_endpoint: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tuplehub.client.cli.server import serve_in_thread

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    settings = make_settings(tmp_path, redis_url, objects_url="s3://gone/data", s3_endpoint_url=s3_endpoint,
                             s3_region="us-east-1", s3_create_bucket=False, metrics_token=TOKEN)
    with serve_in_thread(settings) as server:
        response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    samples = _samples(response.text)
    assert samples[("tuplehub_dependency_up", (("dependency", "objects"),))] == 0.0
    assert samples[("tuplehub_dependency_up", (("dependency", "catalog"),))] == 1.0


def test_a_worker_reports_free_disk_space(tmp_path: Path, hub_server: EmbeddedServer) -> None:
    monitor = WorkerMonitor()
    monitor.watch_disks([tmp_path, tmp_path / "not-made-yet"])
    samples = _samples(generate_latest(monitor.registry).decode())
    free = samples[("tuplehub_disk_free_bytes", (("path", str(tmp_path)),))]
    size = samples[("tuplehub_disk_size_bytes", (("path", str(tmp_path)),))]
    assert 0 < free <= size
    assert not any(labels == (("path", str(tmp_path / "not-made-yet")),) for _, labels in samples)
    # and a running worker reports its data folder
    response = httpx.get(f"http://127.0.0.1:{hub_server.settings.worker_metrics_port}/metrics",
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    worker = _samples(response.text)
    assert worker[("tuplehub_disk_free_bytes", (("path", str(hub_server.settings.data_dir)),))] > 0
