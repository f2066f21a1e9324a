"""``--json`` on the commands that run something rather than print a record: serve, worker and demo.

README: "Every command takes --json for scripts (errors come as JSON too)". A script starting a
server reads its URL from one JSON line; one running the demo reads one JSON document; a failure
to start is ``{"error": ...}`` on stdout. (``tests/test_cli_help.py`` checks that every command
takes ``--json``.)
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_token
from .processes import Processes, cli, isolated_env, stop, wait_for_server


def _error(output: str) -> dict[str, str]:
    return json.loads(output)["error"]


def test_serve_on_a_busy_port_answers_json_and_creates_nothing(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 2
    error = _error(result.stdout)
    assert error["code"] == "command-line"
    assert f"127.0.0.1:{port} is already in use" in error["detail"]
    assert "--port" in error["detail"]
    assert not (tmp_path / "d").exists()


def test_worker_says_it_started_and_why_it_cannot_start_in_json(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    runner = CliRunner(env={"TUPLEHUB_REDIS_URL": None})
    result = runner.invoke(app, ["worker", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    error = _error(result.stdout)
    assert (error["code"], "TUPLEHUB_REDIS_URL" in error["detail"]) == ("config-error", True)
    assert "tuplehub serve" in error["hint"]
    plain = runner.invoke(app, ["worker", "--data-dir", str(tmp_path)])
    assert plain.stderr.startswith("error: tuplehub worker needs TUPLEHUB_REDIS_URL")
    assert "Traceback" not in plain.output

    async def stopped_at_once(settings: object) -> int:  # the worker's loop; what it prints first is tested
        return 0
    monkeypatch.setattr("tuplehub.workers.__main__.run", stopped_at_once)
    secret = "redis://:hunter2@127.0.0.1:1/0"
    started = CliRunner(env={"TUPLEHUB_REDIS_URL": secret}).invoke(app, ["worker", "--data-dir", str(tmp_path),
                                                                         "--json"])
    assert started.exit_code == 0, started.output
    line = json.loads(started.stdout.splitlines()[0])
    assert (line["status"], line["data_dir"]) == ("working", str(tmp_path))
    assert "hunter2" not in started.output  # the queue's password is never printed


@pytest.mark.e2e
def test_serve_json_prints_one_line_when_serving_and_one_when_stopped(tmp_path: Path, running: Processes) -> None:
    data_dir, out, err = tmp_path / "data", tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        server = running.add(subprocess.Popen(
            cli("serve", "--port", "0", "--data-dir", str(data_dir), "--json"), env=isolated_env(tmp_path / "c"),
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True))
    url = wait_for_server(data_dir, server, err)
    assert stop(server) == 0
    serving, stopped = (json.loads(line) for line in out.read_text().splitlines())  # stdout holds JSON only
    assert serving == {"status": "serving", "url": url, "data_dir": str(data_dir), "pid": server.pid,
                       "stop": "SIGINT (Ctrl-C) or SIGTERM"}
    assert stopped == {"status": "stopped", "url": url}


def test_demo_json_is_one_document(hub_server: EmbeddedServer) -> None:
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    result = runner.invoke(app, ["demo", "--episodes", "2", "--url", hub_server.url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress lines went to stderr
    assert f"server: {hub_server.url}" in result.stderr
    assert (report["server"], report["dataset"], report["episodes"]) == (hub_server.url, "cartpole-demo", 2)
    assert report["version"] >= 1
    assert report["tuplehub"]
    assert set(report["timings_s"]) == {"record", "upload_to_ingested", "export_to_numpy"} or report["reused_version"]
    assert {policy: figures["episodes"] for policy, figures in report["policies"].items()} == {
        "random": 1, "heuristic": 1}
    assert report["filter"]["kept_rows"] <= report["filter"]["heuristic_rows"] <= report["filter"]["rows"]
    assert report["transitions"] == report["filter"]["rows"]
    assert {"return_mean", "state_action_cells"} <= set(report["quality"]), report["quality"]

    again = runner.invoke(app, ["demo", "--episodes", "2", "--url", hub_server.url])  # people: the same figures
    assert again.exit_code == 0, again.output
    assert f"dataset cartpole-demo version {report['version']}: 2 episodes" in again.stdout
    assert "quality (computed after the ingest): return mean" in again.stdout
