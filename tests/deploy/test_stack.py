"""The compose deployment, end to end through its proxy over HTTPS, with the real tuplehub client.

The stack (``stack.py``): Caddy with a certificate from pebble by real ACME validation, two API
replicas, two workers, Redis, mongoeco standing in for MongoDB and Ceph radosgw for MinIO. A green
run means the deployment works with those two stand-ins, not that it works on MongoDB and MinIO.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import certifi
import httpx
import numpy as np
import pytest

from tuplehub.client import Client
from tuplehub.client import parts as client_parts
from tuplehub.client.errors import ServerUnreachable

from ..factories import episode_arrays
from .podman import podman
from .stack import DOMAIN, Stack

pytestmark = pytest.mark.timeout(1800)  # the first test builds the images and brings the stack up

COLUMNS = ("episode_id", "step", "observation", "action", "reward", "terminated", "truncated", "next_observation")


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    answer = httpx.get(f"http://{DOMAIN}:{stack.http_port}/api/v1/health/live?x=1", trust_env=False)
    assert answer.status_code in (301, 308), answer.text
    assert answer.headers["location"] == f"https://{DOMAIN}/api/v1/health/live?x=1"


def test_the_certificate_comes_from_pebble_and_is_verified(stack: Stack, client: Client,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The client verifies the chain: trusting only the system's roots, the same request fails."""
    root = stack.workdir / "pebble-root.pem"
    with httpx.Client(verify=ssl.create_default_context(cafile=root), trust_env=False) as http, \
            http.stream("GET", f"{stack.url}/api/v1/health/live") as answer:
        peer = answer.extensions["network_stream"].get_extra_info("ssl_object").getpeercert()
    issuer = dict(item for entry in peer["issuer"] for item in entry)
    assert "Pebble" in issuer["commonName"], issuer
    assert ("DNS", DOMAIN) in peer["subjectAltName"]
    public_roots = ssl.create_default_context(cafile=certifi.where())  # not the default paths: SSL_CERT_FILE
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.url}/api/v1/health/live", verify=public_roots, trust_env=False)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(ServerUnreachable, match="CERTIFICATE_VERIFY_FAILED") as caught, Client(stack.url) as hub:
        hub.ready()
    assert "SSL_CERT_FILE" in caught.value.extra["hint"]  # what to do about it


def test_https_answers_carry_hsts(stack: Stack, client: Client) -> None:
    for url in (f"{stack.url}/api/v1/health/live", f"{stack.s3_url}/"):
        answer = httpx.get(url)
        assert re.match(r"max-age=\d{7,}", answer.headers.get("strict-transport-security", "")), (url, answer.headers)


def test_metrics_are_not_served_through_the_proxy(stack: Stack, client: Client) -> None:
    token = stack.env["TUPLEHUB_METRICS_TOKEN"]
    for path in ("/metrics", "/metrics/", "/metrics?x"):
        answer = httpx.get(f"{stack.url}{path}", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404, (path, answer.status_code)
        assert "tuplehub_http_requests" not in answer.text


def test_upload_ingest_export_through_the_proxy(stack: Stack, client: Client, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload parts go straight to the store's public endpoint (s3.DOMAIN through the proxy), a worker
    ingests, the export comes back equal; uploading the export again gives the same content hash."""
    presigned: list[str] = []
    original = client_parts.PresignedURLs.get

    def record(self: client_parts.PresignedURLs, number: int) -> str:
        url = original(self, number)
        presigned.append(url)
        return url

    monkeypatch.setattr(client_parts.PresignedURLs, "get", record)
    arrays = episode_arrays(episodes=24, length=2_000, obs_dim=24, act_dim=6, seed=12, ragged=True)
    dataset = client.datasets.create("through-the-proxy")
    job = dataset.upload(arrays, part_size=5 * 2**20, compression=None)
    job.wait(timeout=300)
    assert job.record.result["transitions"] == len(arrays["reward"])
    assert len(presigned) >= 2
    assert all(url.startswith(f"{stack.s3_url}/") for url in presigned), presigned[:3]

    out = dataset.export(next_observation=True).to_numpy()
    for name in COLUMNS:
        np.testing.assert_array_equal(out[name], arrays[name], err_msg=name)
    again = client.datasets.create("through-the-proxy-again")
    again.upload(out, compression=None).wait(timeout=300)
    first, second = dataset.refresh().record.versions[-1], again.refresh().record.versions[-1]
    assert first.content_hash is not None
    assert second.content_hash == first.content_hash


def _requests_served(stack: Stack, replica: int) -> float:
    """API requests (not the healthchecks') that one replica answered, from its own /metrics."""
    script = ("import os, urllib.request as u; r = u.Request('http://127.0.0.1:8000/metrics', headers={"
              "'Authorization': 'Bearer ' + os.environ['TUPLEHUB_METRICS_TOKEN']}); "
              "print(u.urlopen(r, timeout=5).read().decode())")
    text = stack.exec("api", "python3", "-c", script, index=replica).stdout
    samples = [line for line in text.splitlines() if line.startswith("tuplehub_http_requests_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples if "/health" not in line)


def test_both_api_replicas_and_workers_run(stack: Stack, client: Client) -> None:
    assert len(stack.containers("api")) == 2
    assert len(stack.containers("worker")) == 2
    for _ in range(30):
        client.whoami()
    served = [_requests_served(stack, replica) for replica in (1, 2)]
    assert all(count > 0 for count in served), served


def test_workers_scale_up_and_down(stack: Stack, client: Client) -> None:
    """``--scale worker=3`` adds a replica that gets healthy (the pump runs its healthcheck); back to 2 after."""
    stack.scale("worker", 3)
    try:
        assert len(stack.containers("worker")) == 3
        newest = stack.containers("worker")[-1]
        assert podman("inspect", "--format", "{{.State.Health.Status}}", newest).stdout.strip() == "healthy"
    finally:
        stack.scale("worker", 2)
    assert len(stack.containers("worker")) == 2
    job = client.datasets.create("after-scaling").upload(episode_arrays(episodes=3, length=50, seed=3))
    assert job.wait(timeout=120).record.result["transitions"] > 0


def test_restarted_data_services_keep_the_data(stack: Stack, client: Client) -> None:
    """radosgw and mongoeco keep their data in the compose volumes: a dataset reads back equal after both
    restart (the API reconnects on its own)."""
    arrays = episode_arrays(episodes=4, length=300, seed=21)
    dataset = client.datasets.create("kept-across-restarts")
    dataset.upload(arrays, compression=None).wait(timeout=120)
    before = dataset.refresh().record.versions[-1].content_hash
    stack.compose("restart", "-t", "20", "mongo", "minio", timeout=180)
    stack.up()  # back when every service is healthy again
    kept = client.datasets.get("kept-across-restarts")
    assert before is not None
    assert kept.record.versions[-1].content_hash == before
    np.testing.assert_array_equal(kept.export().to_numpy()["observation"], arrays["observation"])
