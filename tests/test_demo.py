"""``tuplehub demo`` on a shared machine: someone else's server holds the default address.

The stranger answers its readiness probe like a tuplehub server and 401 to everything else, as
another account's server would. The demo must use its own data folder's server instead (its
own, started and stopped for it, the first time; the one running there, the second time) and
must not add a version when it runs again.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import (
    Processes,
    cli,
    embedded_client,
    isolated_env,
    start_serve,
    stop,
    wait_for_server,
)

pytestmark = pytest.mark.e2e


class Stranger(http.server.BaseHTTPRequestHandler):
    """Another account's server: ready, but nothing for us."""

    def do_GET(self) -> None:
        ready = self.path.startswith("/api/v1/health/")
        body = json.dumps({"status": "ok"} if ready else {"detail": "sign in first"}).encode()
        self.send_response(200 if ready else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stranger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_demo_uses_its_own_server_and_adds_no_version_when_run_again(tmp_path: Path, stranger: str,
                                                                       running: Processes) -> None:
    data_dir = tmp_path / "data"
    env = isolated_env(tmp_path / "config", TUPLEHUB_URL=stranger)
    first = subprocess.run(cli("demo", "--episodes", "4", "--data-dir", str(data_dir)), env=env,
                           capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "dataset cartpole-demo version 1: 4 episodes" in first.stdout
    assert stranger not in first.stdout
    assert not (data_dir / "server.json").exists()  # its server was stopped at the end

    log = tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, 0, env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    second = subprocess.run(cli("demo", "--episodes", "4", "--data-dir", str(data_dir)), env=env,
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"server: {url}" in second.stdout  # the server already running in its data folder
    assert "version 1 already holds this recording" in second.stdout
    assert "dataset cartpole-demo version 1: 4 episodes" in second.stdout
    with embedded_client(data_dir, env) as hub:
        assert [version.number for version in hub.datasets.get("cartpole-demo").record.versions] == [1]
    assert stop(server) == 0
