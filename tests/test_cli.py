"""The ``tuplehub`` command against a running server, as a script would use it (``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays

from .conftest import admin_token
from .factories import episode_arrays


@pytest.fixture
def run(hub_server: EmbeddedServer):
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--url", hub_server.url])
        assert result.exit_code == code, result.output
        return result.output
    return invoke


def test_dataset_upload_export_job_commands(run, tmp_path: Path, unique_name: str) -> None:
    created = json.loads(run("datasets", "create", unique_name, "--tag", "cli", "--json"))
    assert created["tags"] == ["cli"]
    arrays = episode_arrays(episodes=4, length=10)
    source = tmp_path / "tuples.parquet"
    pq.write_table(table_from_arrays(arrays), source)
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"0": {"policy": "expert"}}))

    job = json.loads(run("upload", unique_name, str(source), "--metadata", str(metadata), "--json"))
    assert (job["status"], job["result"]["episodes"]) == ("succeeded", 4)
    listed = json.loads(run("datasets", "list", "--tag", "cli", "--json"))
    assert [d["name"] for d in listed["items"]] == [unique_name]
    shown = json.loads(run("datasets", "show", unique_name, "--json"))
    assert shown["versions"][0]["episodes"] == 4
    episodes = json.loads(run("datasets", "episodes", f"{unique_name}@1", "--where",
                              '{"op": "eq", "field": "metadata.policy", "value": "expert"}', "--json"))
    assert [e["episode_id"] for e in episodes["items"]] == [0]

    out = tmp_path / "out.parquet"
    exported = json.loads(run("export", unique_name, "--where", '{"op": "gt", "field": "reward", "value": 0}',
                              "--next-observation", "-o", str(out), "--json"))
    table = pq.read_table(out)
    assert table.num_rows == exported["result"]["rows"] == int((arrays["reward"] > 0).sum())
    assert "next_observation" in table.column_names
    jobs = json.loads(run("jobs", "list", "--json"))
    assert exported["id"] in [j["id"] for j in jobs["items"]]
    assert json.loads(run("jobs", "show", exported["id"], "--json"))["status"] == "succeeded"
    human = run("datasets", "show", unique_name)
    assert "VERSION" in human
    assert unique_name in human


def test_cli_errors_are_one_line_and_exit_1(run, unique_name: str) -> None:
    assert "no dataset named" in run("datasets", "show", unique_name, code=1)
    run("datasets", "create", unique_name)
    output = run("export", unique_name, "--where", '{"op": "gt"}', code=1)
    assert output.startswith("error: --where:")
    assert "Traceback" not in output
