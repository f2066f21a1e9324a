"""The client through a failing network (issue 12): restarts, draining replicas and lost answers.

A small fault-injecting HTTP proxy sits between the client and a real server (in a thread, on
loopback) and breaks the requests a test picks: it resets the connection before forwarding
(nothing reached the server) or after (the server acted, the client never heard), or answers
503 with ``Retry-After`` itself, as a draining API does. The client must still finish, with
nothing lost or done twice, and must give up within its bounds when the server stays away.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client, ServerUnreachable
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.client.jobs import Job
from tuplehub.client.retries import retry_after
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.errors import InvalidRequest, RateLimited, TuplehubError

from .conftest import admin_client, admin_token, make_settings
from .factories import episode_arrays

PART = 2**16  # the smallest part the API takes: a small file makes many parts
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
DRAINING = json.dumps({"type": "https://tuplehub.dev/problems/store-unavailable", "title": "Unavailable",
                       "status": 503, "detail": "this replica is draining"}).encode()

LIMITED = json.dumps({"type": "https://tuplehub.dev/problems/rate-limited", "title": "Too Many Requests",
                      "status": 429, "detail": "too many attempts", "retry_after": 3600}).encode()

Rewrite = Callable[[bytes], bytes]


@dataclass
class Fault:
    """What the proxy does to the requests matching ``method`` and ``path`` (a regex): to those numbered
    ``skip + 1`` to ``skip + times`` among all the requests that match (the first fault listed wins)."""

    method: str
    path: str
    action: str | Rewrite  # reset | reset-after | draining | limited | stop | a function rewriting the answer
    times: int = 1
    skip: int = 0
    matched: int = 0


class FaultProxy:
    """HTTP/1.1 between a client and ``upstream``, breaking the requests its faults pick."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request that arrived
        self.connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def fault(self, method: str, path: str, action: str | Rewrite, *, times: int = 1, skip: int = 0) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, action, times, skip))

    def count(self, method: str, path: str) -> int:
        """How many requests matching ``method`` and ``path`` (a regex) arrived."""
        with self._lock:
            return sum(1 for m, p in self.seen if m == method and re.search(path, p))

    def pick(self, method: str, path: str) -> str | Rewrite | None:
        with self._lock:
            self.seen.append((method, path))
            picked = None
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path):
                    fault.matched += 1
                    if picked is None and fault.skip < fault.matched <= fault.skip + fault.times:
                        picked = fault.action
            return picked

    def forward(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            answer = upstream.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            upstream.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: from now on the proxy's port refuses connections, as a stopped server's does."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()
        with self._lock:  # and the connections kept alive end, as a stopped server's do
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy.connections.add(self.connection)

        def handle_one_request(self) -> None:
            with contextlib.suppress(ConnectionError):
                super().handle_one_request()

        def relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            action = proxy.pick(self.command, self.path)
            if action == "reset":
                return self._reset()
            if action == "stop":  # the server goes away for good, this request with it
                threading.Thread(target=proxy.stop, daemon=True).start()
                return self._reset()
            if action == "draining":
                return self._answer(503, [("Content-Type", "application/problem+json"), ("Retry-After", "1")],
                                    DRAINING)
            if action == "limited":
                return self._answer(429, [("Content-Type", "application/problem+json"), ("Retry-After", "3600")],
                                    LIMITED)
            status, headers, payload = proxy.forward(self.command, self.path, self.headers.items(), body)
            if action == "reset-after":
                return self._reset()
            if callable(action):
                payload = action(payload)
            self._answer(status, headers, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = relay

        def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _reset(self) -> None:
            """Close with a TCP reset (linger 0), the way a killed process's connections end."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
            self.close_connection = True
    return Handler


@pytest.fixture
def proxy(hub_server: EmbeddedServer) -> Iterator[FaultProxy]:
    with FaultProxy(hub_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def token(hub_server: EmbeddedServer) -> str:
    return admin_token(hub_server)


def _parquet(path: Path, *, episodes: int = 30, seed: int = 3) -> dict[str, np.ndarray]:
    arrays = episode_arrays(episodes=episodes, length=50, obs_dim=16, seed=seed)
    pq.write_table(table_from_arrays(arrays), path, compression="none")
    return arrays


def _jobs(hub: Client, kind: str, dataset: str) -> list[str]:
    jobs = hub.jobs.list(kind=kind, limit=500).items
    return [job.id for job in jobs if job.params.get("dataset") == dataset]


def _reference_hash(hub: Client, name: str, source: Any) -> str | None:
    """The content hash of ``source`` uploaded without any fault: what the faulty path must also give."""
    dataset = hub.datasets.create(name)
    dataset.upload(source).wait(progress=False)
    return dataset.refresh().record.versions[-1].content_hash


# --- the client finishes, nothing lost or doubled -------------------------------------------------

def test_an_upload_survives_resets_a_draining_replica_and_a_lost_completion(
        proxy: FaultProxy, token: str, hub: Client, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "tuples.parquet"
    arrays = _parquet(path)
    assert -(-path.stat().st_size // PART) >= 5
    proxy.fault("PUT", r"/parts/3$", "reset")  # never reached the server
    proxy.fault("PUT", r"/parts/5$", "reset-after")  # stored, but the answer was lost
    proxy.fault("POST", r"/complete$", "reset-after")  # completed, but the client did not hear
    proxy.fault("GET", r"/exports/[^/]+/url$", "draining", times=2)
    proxy.fault("POST", r"/exports$", "reset-after")  # started, but the client did not hear
    proxy.fault("GET", r"/exports/[^/]+/file$", "reset")
    lines: list[str] = []
    with Client(proxy.url, token=token, retries=4, retry_max_s=60, on_retry=lines.append) as client:
        dataset = client.datasets.create(unique_name)
        job = dataset.upload(path, part_size=PART, parallel=1).wait(progress=False)
        exported = dataset.export().to_numpy()

    np.testing.assert_array_equal(exported["observation"], arrays["observation"])
    np.testing.assert_array_equal(exported["reward"], arrays["reward"])
    versions = hub.datasets.get(unique_name).record.versions
    assert [v.number for v in versions] == [1]  # one version, not two
    assert _jobs(hub, "ingest", unique_name) == [job.id]  # and one ingest job
    assert len(_jobs(hub, "export", unique_name)) == 1  # the export asked for again is the same job
    assert versions[0].content_hash == _reference_hash(hub, f"{unique_name}-ref", path)
    assert proxy.count("POST", r"/complete$") == 2  # the completion was asked for again
    assert proxy.count("PUT", r"/parts/3$") == proxy.count("PUT", r"/parts/5$") == 2
    assert len(lines) == 7, lines
    assert all(line.startswith("retrying ") for line in lines), lines
    assert sum("answered 503" in line and "/url" in line for line in lines) == 2


def test_an_in_memory_upload_resends_parts_and_a_lost_session(
        proxy: FaultProxy, token: str, hub: Client, hub_server: EmbeddedServer, unique_name: str) -> None:
    """Parts written from memory are bytes the connection can resend itself; a session whose answer
    was lost is opened again, and the first one is left to expire."""
    arrays = episode_arrays(episodes=30, length=50, obs_dim=16, seed=4)
    proxy.fault("POST", rf"/datasets/{unique_name}/uploads$", "reset-after")
    proxy.fault("PUT", r"/parts/1$", "reset-after")
    proxy.fault("PUT", r"/parts/2$", "draining")
    with Client(proxy.url, token=token, retries=3, retry_max_s=30, on_retry=lambda _: None) as client:
        dataset = client.datasets.create(unique_name)
        dataset.upload(arrays, part_size=PART).wait(progress=False)
        assert client.datasets.get(unique_name).record.versions[-1].transitions == len(arrays["reward"])

    assert len(hub.datasets.get(unique_name).record.versions) == 1
    assert len(_jobs(hub, "ingest", unique_name)) == 1
    orphans = hub._http.get(f"/datasets/{unique_name}/uploads").json()
    assert len(orphans) == 1  # the session whose answer was lost: never used, it expires
    left = datetime.fromisoformat(orphans[0]["expires_at"]) - datetime.now(UTC)
    assert timedelta(0) < left <= timedelta(seconds=hub_server.settings.upload_ttl_s)
    assert proxy.count("POST", rf"/datasets/{unique_name}/uploads$") == 2


def test_presigned_parts_and_downloads_are_retried_too(tmp_path: Path, redis_url: str, s3_endpoint: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 the parts and the export go straight to the store, by another HTTP client, under the same policy."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    path = tmp_path / "tuples.parquet"
    arrays = _parquet(path, episodes=1400)
    part_size = 5 * 2**20  # S3's smallest
    assert path.stat().st_size > 2 * part_size
    with FaultProxy(s3_endpoint) as store:
        settings = make_settings(tmp_path / "hub", redis_url, objects_url="s3://tuplehub/retries",
                                 s3_endpoint_url=s3_endpoint, s3_public_endpoint_url=store.url)
        store.fault("PUT", r"partNumber=1\b", "reset-after")
        store.fault("PUT", r"partNumber=2\b", "reset")
        store.fault("GET", r"/exports/", "reset")
        with serve_in_thread(settings) as server, admin_client(server, retries=3, retry_max_s=30,
                                                                on_retry=lambda _: None) as hub:
            dataset = hub.datasets.create("on-s3")
            dataset.upload(path, part_size=part_size, parallel=1).wait(progress=False)
            np.testing.assert_array_equal(dataset.export().to_numpy()["observation"], arrays["observation"])
            assert len(dataset.refresh().record.versions) == 1
        assert store.count("PUT", r"partNumber=1\b") == store.count("PUT", r"partNumber=2\b") == 2
        assert store.count("GET", r"/exports/") == 2


def test_waiting_outlives_a_draining_api_and_a_job_handed_back(
        proxy: FaultProxy, token: str, hub: Client, unique_name: str) -> None:
    """A worker that stops hands its job back (queued again); the wait goes on through that and through
    refused and reset polls."""
    dataset = hub.datasets.create(unique_name)
    done = dataset.upload(episode_arrays(episodes=3)).wait(progress=False)

    def status(value: str) -> Rewrite:
        def rewrite(body: bytes) -> bytes:
            record = json.loads(body)
            progress = {"fraction": 0.5, "stage": "ingest", "message": ""} if value == "running" else \
                {"fraction": 0.0, "stage": "queued", "message": ""}
            return json.dumps({**record, "status": value, "progress": progress, "result": None}).encode()
        return rewrite
    job_path = rf"/jobs/{done.id}$"
    proxy.fault("GET", job_path, status("running"))
    proxy.fault("GET", job_path, "draining", times=2, skip=1)
    proxy.fault("GET", job_path, status("queued"), skip=3)  # handed back by a draining worker
    proxy.fault("GET", job_path, "reset", skip=4)
    with Client(proxy.url, token=token, retries=3, retry_max_s=30, on_retry=lambda _: None) as client:
        job = Job(client._http, {**done.record.model_dump(mode="json"), "status": "running"})
        assert job.wait(progress=False).result == done.result
    assert proxy.count("GET", job_path) == 6


def test_a_post_that_is_not_idempotent_is_sent_again_only_when_the_server_refused_it(
        proxy: FaultProxy, token: str, hub: Client, unique_name: str) -> None:
    proxy.fault("POST", r"/datasets$", "draining")  # 503 + Retry-After: the server did nothing
    proxy.fault("POST", r"/datasets$", "reset-after", skip=2)  # created, but the answer was lost
    with Client(proxy.url, token=token, retries=3, retry_max_s=30, on_retry=lambda _: None) as client:
        client.datasets.create(unique_name)
        with pytest.raises(ServerUnreachable, match="lost the connection") as lost:
            client.datasets.create(f"{unique_name}-2")
    assert "gave up" not in lost.value.detail  # not retried: a second create would be refused as a duplicate
    assert proxy.count("POST", r"/datasets$") == 3
    assert hub.datasets.get(f"{unique_name}-2").name == f"{unique_name}-2"  # the server did create it, once


# --- bounded -------------------------------------------------------------------------------------

def test_a_server_that_goes_away_fails_within_the_attempts(proxy: FaultProxy, token: str) -> None:
    with Client(proxy.url, token=token, retries=3, retry_max_s=60, on_retry=lambda _: None) as client:
        client.datasets.list()
        proxy.stop()
        started = time.monotonic()
        with pytest.raises(ServerUnreachable) as gone:
            client.datasets.list()
        took = time.monotonic() - started
    assert "gave up after 4 attempts" in gone.value.detail
    assert "it may be restarting" in gone.value.extra["hint"]
    assert 0.25 + 0.5 + 1 <= took <= 0.5 + 1 + 2 + 2  # three backoff waits (half random), never more


def test_an_upload_the_server_walks_away_from_fails_without_waiting_to_clean_up(
        proxy: FaultProxy, token: str, unique_name: str) -> None:
    """The session of a failed in-memory upload is cancelled with one try: a server that is gone
    expires it by itself, and waiting for it once more would only delay the error."""
    proxy.fault("PUT", r"/parts/2$", "stop")
    lines: list[str] = []
    with Client(proxy.url, token=token, retries=2, retry_max_s=30, on_retry=lines.append) as client:
        dataset = client.datasets.create(unique_name)
        with pytest.raises(ServerUnreachable, match="gave up after 3 attempts"):
            dataset.upload(episode_arrays(episodes=30, length=50, obs_dim=16, seed=5), part_size=PART, parallel=1)
    assert any(line.startswith("retrying PUT /api/v1/uploads/") for line in lines), lines
    assert not [line for line in lines if "DELETE" in line]


def test_a_server_that_stays_down_fails_within_the_seconds(proxy: FaultProxy, token: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUPLEHUB_CLIENT_RETRIES", "100")
    monkeypatch.setenv("TUPLEHUB_CLIENT_RETRY_MAX_S", "2.5")
    proxy.fault("GET", r"/datasets", "draining", times=1000)
    with Client(proxy.url, token=token, on_retry=lambda _: None) as client:
        started = time.monotonic()
        with pytest.raises(TuplehubError, match="draining") as refused:
            client.datasets.list()
        took = time.monotonic() - started
    assert refused.value.status == 503  # type: ignore[attr-defined]
    assert proxy.count("GET", r"/datasets") == 3  # Retry-After: 1, twice, then a third wait would pass 2.5 s
    assert 2 <= took <= 2.5 + 1


def test_a_wait_longer_than_the_client_would_wait_is_not_waited_for(proxy: FaultProxy, token: str) -> None:
    """A login rate limit's hour is told at once, not sat through (or retried until the bound)."""
    proxy.fault("GET", r"/datasets", "limited")
    with Client(proxy.url, token=token, on_retry=lambda _: None) as client:
        started = time.monotonic()
        with pytest.raises(RateLimited, match="too many attempts"):
            client.datasets.list()
        assert time.monotonic() - started < 1
        assert client.datasets.list().total >= 0  # a short Retry-After is waited for, as the other tests show
    assert proxy.count("GET", r"/datasets") == 2


def test_a_server_never_reached_fails_at_once(token: str) -> None:
    """A refused first connection is a wrong URL or a stopped server, not a restart: no waiting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with Client(url, token=token, retries=5, retry_max_s=60) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match="cannot reach the server"):
            client.datasets.list()
        assert time.monotonic() - started < 1


# --- settings and the command line ---------------------------------------------------------------

def test_the_cli_says_in_one_line_on_stderr_that_it_retries(proxy: FaultProxy, token: str) -> None:
    proxy.fault("GET", r"/datasets", "draining")
    result = CliRunner(env={"TUPLEHUB_TOKEN": token}).invoke(app, ["datasets", "list", "--url", proxy.url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] >= 0  # stdout stays one JSON document
    [line] = result.stderr.splitlines()
    assert line.startswith("retrying GET /api/v1/datasets in 1.0 s (the server answered 503")
    assert "attempt 2 of 9" in line


def test_retry_settings_are_checked(monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy, token: str) -> None:
    monkeypatch.setenv("TUPLEHUB_CLIENT_RETRIES", "many")
    with pytest.raises(InvalidRequest, match="TUPLEHUB_CLIENT_RETRIES='many' is not a whole number"):
        Client(proxy.url, token=token)
    result = CliRunner(env={"TUPLEHUB_TOKEN": token}).invoke(app, ["datasets", "list", "--url", proxy.url])
    assert result.exit_code == 1
    assert "TUPLEHUB_CLIENT_RETRIES='many' is not a whole number" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(InvalidRequest, match="must not be negative"):
        Client(proxy.url, token=token, retries=-1)


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})
    assert retry_after(answer("7")) == 7
    later = retry_after(answer(format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)))
    assert later is not None
    assert 28 <= later <= 30
    assert retry_after(answer(format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True))) == 0
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(503)) is None


def test_retries_off_means_one_attempt_and_the_error_as_it_came(proxy: FaultProxy, token: str) -> None:
    proxy.fault("GET", r"/datasets", "reset-after")
    with Client(proxy.url, token=token, retries=0) as client:
        with pytest.raises(ServerUnreachable) as lost:
            client.datasets.list()
        assert "gave up" not in lost.value.detail
        assert client.datasets.list().total >= 0
    assert proxy.count("GET", r"/datasets") == 2
