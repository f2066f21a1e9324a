"""``tuplehub serve`` as a user runs it: real processes, real signals, a real bundled Redis.

A busy port is one line and leaves the data folder untouched; Ctrl-C (SIGINT to the whole
process group, as a terminal sends it) and SIGTERM stop everything with one line and exit 0;
everything written to the data folder is private to its user; a job that crashes its worker
process costs attempts, not the API, and fails with a reason after the attempt limit.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tuplehub.client.cli.server import loose_entries
from tuplehub.storage.models import JobStatus
from tuplehub.storage.settings import Settings

from .factories import episode_arrays
from .processes import (
    Processes,
    children_of,
    cli,
    command_of,
    embedded_client,
    free_port,
    isolated_env,
    start_serve,
    stop,
    wait_for_server,
    wait_until,
)

pytestmark = pytest.mark.e2e

# In the worker process only, the ingest body segfaults: a job that kills its process mid-attempt.
CRASHING_SITECUSTOMIZE = textwrap.dedent("""
    import sys
    if "tuplehub.workers" in sys.orig_argv:
        import ctypes
        import tuplehub.workers.jobs.ingest as ingest

        async def crash(run):
            ctypes.string_at(0)  # SIGSEGV

        ingest._ingest = crash
""")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "config")


def test_a_busy_port_is_one_line_and_creates_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        done = subprocess.run(cli("serve", "--port", str(port), "--data-dir", str(data_dir)), env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert f"127.0.0.1:{port} is already in use" in line
    assert "--port" in line
    assert not data_dir.exists()
    assert not (tmp_path / "config").exists()  # no admin was made either


def test_help_shows_the_default_address() -> None:
    from typer.testing import CliRunner

    from tuplehub.client.cli import app

    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}, terminal_width=200).output
    defaults = Settings(_env_file=None)
    assert f"default {defaults.host}" in shown
    assert f"default {defaults.port}" in shown


@pytest.mark.slow
def test_serve_stops_with_one_line_and_keeps_the_data_folder_private(tmp_path: Path, env: dict[str, str],
                                                                     running: Processes) -> None:
    """SIGTERM, then Ctrl-C to the whole process group (as a terminal sends it, children included)."""
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, free_port(), env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    with embedded_client(data_dir, env) as hub:
        hub.datasets.create("private").upload(episode_arrays(episodes=2, length=5)).wait(timeout=60)
    assert stop(server) == 0
    assert log.read_text().splitlines() == [
        f"tuplehub serving {url} (data in {data_dir}); press Ctrl-C to stop", "tuplehub stopped"]
    assert not (data_dir / "server.json").exists()
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"

    (data_dir / "catalog.db").chmod(0o644)  # as an older tuplehub (or a copy) left it
    log.unlink()
    server = running.add(start_serve(data_dir, free_port(), env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    children = children_of(server.pid)
    assert any("redis-server" in command_of(pid) for pid in children)
    assert any("tuplehub.workers" in command_of(pid) for pid in children)
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait(30) == 0
    warning, *lines = log.read_text().splitlines()
    assert "catalog.db" in warning
    assert f"chmod -R go= {data_dir}" in warning
    assert lines == [f"tuplehub serving {url} (data in {data_dir}); press Ctrl-C to stop", "tuplehub stopped"]
    assert not (data_dir / "server.json").exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert loose_entries(data_dir) == [data_dir / "catalog.db"]


@pytest.mark.slow
def test_a_job_that_crashes_its_worker_process_fails_and_the_api_stays_up(tmp_path: Path, env: dict[str, str],
                                                                         running: Processes) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_SITECUSTOMIZE)
    env = {**env, "PYTHONPATH": str(site), "TUPLEHUB_JOB_MAX_TRIES": "2", "TUPLEHUB_AUTO_METRICS": "false"}
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    server = running.add(start_serve(data_dir, free_port(), env=env, log=log))
    url = wait_for_server(data_dir, server, log)
    with embedded_client(data_dir, env) as hub:
        job = hub.datasets.create("crashing").upload(episode_arrays(episodes=2, length=5))

        def failed() -> bool:
            assert httpx.get(f"{url}/api/v1/health/live", timeout=5).status_code == 200  # the API never went away
            return hub.jobs.get(job.id).status == JobStatus.failed

        wait_until(failed, 60, "the crashing job to fail", every=0.2)
        ended = hub.jobs.get(job.id).record
        assert ended.error is not None
        assert ended.error.code == "max-attempts"
        assert "the worker process died while running this job 2 times" in ended.error.detail
        time.sleep(1.5)  # no loop: nothing runs it again
        assert hub.jobs.get(job.id).record.attempts == ended.attempts
        assert hub.datasets.create("still-works").name == "still-works"
    assert stop(server) == 0
    assert log.read_text().count("was killed by SIGSEGV") == 2

