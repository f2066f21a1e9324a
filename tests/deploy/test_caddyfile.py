"""compose/Caddyfile run by a real Caddy (Debian's) on loopback, with `tls internal` (issue 12): plain HTTP
is redirected, HSTS is sent, /metrics is not served, a request waits for an API replica that is
restarting instead of failing, the store's site passes the Host header and the signed query through
unchanged, and a client trusts Caddy's root through SSL_CERT_FILE (what docs/deployment.md tells a
LAN to do). Only what compose provides is rewritten: the ports, the upstream addresses (the service
names `api` and `minio` resolve only inside compose) and Caddy's storage folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import FIGURES

CADDYFILE = Path(__file__).parent.parent.parent / "compose" / "Caddyfile"
DOMAIN = "hub.tuplehub.test"
START_TIMEOUT_S = 30


@dataclass
class Backend:
    """An HTTP server on 127.0.0.1 that answers every request with what it received."""

    seen: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    def start(self) -> None:
        seen = self.seen

        class Echo(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = {"host": self.headers.get("Host", ""), "path": self.path,
                           "forwarded_for": self.headers.get("X-Forwarded-For", "")}
                seen.append(request)
                body = json.dumps(request).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # the body is echoed too
                length = int(self.headers.get("Content-Length", "0"))
                request = {"host": self.headers.get("Host", ""), "path": self.path,
                           "body": self.rfile.read(length).decode(errors="replace")}
                seen.append(request)
                body = json.dumps(request).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Echo)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@dataclass
class Proxy:
    http_port: int
    https_port: int
    root: Path
    api: Backend
    store: Backend

    def curl(self, url: str, *args: str) -> tuple[int, dict[str, str], str]:
        """Status, headers (lower-case names) and body of ``url``, with the names resolving to Caddy."""
        port = self.https_port if url.startswith("https:") else self.http_port
        host = re.match(r"https?://([^/:]+)", url).group(1)  # type: ignore[union-attr]
        result = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", str(self.root), "--resolve",
                                 f"{host}:{port}:127.0.0.1", "-D", "-", url, *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        head, _, body = result.stdout.partition("\n\n")  # text mode: curl's CRLFs read as newlines
        lines = head.split("\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), {key.lower(): value for key, value in headers.items()}, body

    def url(self, path: str, site: str = DOMAIN) -> str:
        return f"https://{site}:{self.https_port}{path}"


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _local_caddyfile(folder: Path, http_port: int, https_port: int, admin_port: int, api: int, store: int) -> Path:
    text = CADDYFILE.read_text()
    text = text.replace("{\n\tacme_ca ", f"{{\n\tadmin 127.0.0.1:{admin_port}\n\thttp_port {http_port}\n"
                                        f"\thttps_port {https_port}\n\tstorage file_system {folder / 'data'}\n"
                                        "\tskip_install_trust\n\tacme_ca ", 1)
    assert f"http_port {http_port}" in text, "the Caddyfile's global options block moved"
    for compose_name, local in (("dynamic a api 8000", f"dynamic a localhost {api}"),
                                ("reverse_proxy minio:9000", f"reverse_proxy 127.0.0.1:{store}")):
        assert compose_name in text
        text = text.replace(compose_name, local)
    path = folder / "Caddyfile"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    caddy = shutil.which("caddy")
    if caddy is None:
        raise AssertionError("caddy is missing: tests/deploy/run.sh installs it")
    folder = tmp_path_factory.mktemp("caddy")
    api, store = Backend(), Backend()
    api.start()
    store.start()
    http_port, https_port, admin_port = _free_ports(3)
    config = _local_caddyfile(folder, http_port, https_port, admin_port, api.port, store.port)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "XDG_DATA_HOME": str(folder / "xdg"),
           "XDG_CONFIG_HOME": str(folder / "xdg-config"), "TUPLEHUB_DOMAIN": DOMAIN, "TUPLEHUB_TLS": "internal"}
    started = time.monotonic()
    with (folder / "caddy.log").open("w") as log:
        process = subprocess.Popen([caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        root = folder / "data" / "pki" / "authorities" / "local" / "root.crt"
        certificate = folder / "data" / "certificates" / "local" / DOMAIN / f"{DOMAIN}.crt"
        while not (root.exists() and certificate.exists()) and time.monotonic() - started < START_TIMEOUT_S:
            assert process.poll() is None, (folder / "caddy.log").read_text()
            time.sleep(0.05)
        assert certificate.exists(), (folder / "caddy.log").read_text()
        FIGURES.append(f"caddy (tls internal): certificate {time.monotonic() - started:.1f} s after start")
        yield Proxy(http_port, https_port, root, api, store)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        api.stop()
        store.stop()


def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    status, headers, _ = proxy.curl(f"http://{DOMAIN}:{proxy.http_port}/api/v1/datasets?limit=5")
    assert status == 308
    assert headers["location"].startswith(f"https://{DOMAIN}")
    assert headers["location"].endswith("/api/v1/datasets?limit=5")


def test_the_api_is_proxied_with_hsts(proxy: Proxy) -> None:
    status, headers, body = proxy.curl(proxy.url("/api/v1/health/live"))
    assert status == 200
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    answered = json.loads(body)
    assert answered["path"] == "/api/v1/health/live"
    assert answered["host"] == f"{DOMAIN}:{proxy.https_port}"
    assert answered["forwarded_for"] == "127.0.0.1"  # the API counts sign-in attempts per client address


def test_metrics_are_not_served_publicly(proxy: Proxy) -> None:
    before = len(proxy.api.seen)
    for path in ("/metrics", "/metrics/", "/metrics/anything"):
        status, _, _ = proxy.curl(proxy.url(path))
        assert status == 404, path
    assert len(proxy.api.seen) == before  # never reached the API


def test_a_request_waits_for_a_restarting_replica(proxy: Proxy) -> None:
    proxy.api.stop()
    threading.Timer(1.5, proxy.api.start).start()  # same port, 1.5 s later: a replica restarting
    started = time.monotonic()
    status, _, body = proxy.curl(proxy.url("/api/v1/datasets"))
    waited = time.monotonic() - started
    assert status == 200, body
    assert json.loads(body)["path"] == "/api/v1/datasets"
    assert waited >= 1.0
    FIGURES.append(f"caddy: a request during a 1.5 s replica restart answered after {waited:.1f} s")


def test_a_post_during_a_replica_restart_is_answered_as_one_to_send_again(proxy: Proxy) -> None:
    """Caddy cannot resend a body after a failed connection (caddyserver/caddy#7546): its retry fails
    with a 502 that a client must not resend a POST after. No replica got the request, so the Caddyfile
    answers 503 with Retry-After (the client resends any method then); a Caddy that resends the body
    delivers it. Either way, never a bare 502 (found by tests/deploy/test_faults.py)."""
    proxy.api.stop()
    threading.Timer(1.5, proxy.api.start).start()
    sent = '{"name": "restarting"}'
    args = ("-X", "POST", "-H", "Content-Type: application/json", "--data", sent)
    status, headers, body = proxy.curl(proxy.url("/api/v1/datasets"), *args)
    if status == 200:
        assert json.loads(body)["body"] == sent
    else:
        assert (status, headers.get("retry-after")) == (503, "1"), (status, headers, body)
        status, _, body = proxy.curl(proxy.url("/api/v1/datasets"), *args)  # sent again, as the client does
        assert status == 200, body
        assert json.loads(body)["body"] == sent
    FIGURES.append(f"caddy: a POST during a 1.5 s replica restart answered {status} at first")


def test_the_store_site_keeps_host_path_and_signature(proxy: Proxy) -> None:
    signed = "/tuplehub/data/uploads/u1?partNumber=1&uploadId=abc&X-Amz-Signature=0f1e2d&X-Amz-Expires=600"
    status, headers, body = proxy.curl(proxy.url(signed, site=f"s3.{DOMAIN}"))
    assert status == 200
    assert "strict-transport-security" in headers
    received = json.loads(body)
    assert received["host"] == f"s3.{DOMAIN}:{proxy.https_port}"  # what the presigned URL was signed for
    assert received["path"] == signed
    assert proxy.api.seen[-1]["path"] != signed  # the store's requests never reach the API


def test_a_client_trusts_the_lan_root_through_ssl_cert_file(proxy: Proxy) -> None:
    probe = (f"import socket, httpx\n"
             f"real = socket.getaddrinfo\n"
             f"socket.getaddrinfo = lambda host, *a, **k: real('127.0.0.1' if host == {DOMAIN!r} else host, *a, **k)\n"
             f"print(httpx.get({proxy.url('/api/v1/health/live')!r}, timeout=30).status_code)\n")
    trusted = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SSL_CERT_FILE": str(proxy.root)})
    assert trusted.stdout.strip() == "200", trusted.stderr
    without = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                             env={key: value for key, value in os.environ.items() if key != "SSL_CERT_FILE"})
    assert without.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in without.stderr
