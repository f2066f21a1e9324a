"""The ``tuplehub`` command against a running server, as a script would use it (``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays

from .conftest import admin_token
from .factories import episode_arrays


def test_dataset_upload_export_job_commands(hub_cli, tmp_path: Path, unique_name: str) -> None:
    created = json.loads(hub_cli("datasets", "create", unique_name, "--tag", "cli", "--json"))
    assert created["tags"] == ["cli"]
    arrays = episode_arrays(episodes=4, length=10)
    source = tmp_path / "tuples.parquet"
    pq.write_table(table_from_arrays(arrays), source)
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"0": {"policy": "expert"}}))

    job = json.loads(hub_cli("upload", unique_name, str(source), "--metadata", str(metadata), "--json"))
    assert (job["status"], job["result"]["episodes"]) == ("succeeded", 4)
    listed = json.loads(hub_cli("datasets", "list", "--tag", "cli", "--json"))
    assert [d["name"] for d in listed["items"]] == [unique_name]
    shown = json.loads(hub_cli("datasets", "show", unique_name, "--json"))
    assert shown["versions"][0]["episodes"] == 4
    episodes = json.loads(hub_cli("datasets", "episodes", f"{unique_name}@1", "--where",
                              '{"op": "eq", "field": "metadata.policy", "value": "expert"}', "--json"))
    assert [e["episode_id"] for e in episodes["items"]] == [0]

    out = tmp_path / "out.parquet"
    exported = json.loads(hub_cli("export", unique_name, "--where", '{"op": "gt", "field": "reward", "value": 0}',
                              "--next-observation", "-o", str(out), "--json"))
    table = pq.read_table(out)
    assert table.num_rows == exported["result"]["rows"] == int((arrays["reward"] > 0).sum())
    assert "next_observation" in table.column_names
    jobs = json.loads(hub_cli("jobs", "list", "--json"))
    assert exported["id"] in [j["id"] for j in jobs["items"]]
    shown_job = json.loads(hub_cli("jobs", "show", exported["id"], "--json"))
    assert (shown_job["status"], shown_job["owner_name"]) == ("succeeded", "admin")
    assert len(shown_job["owner"]) == 32  # the id stays for scripts
    person_view = hub_cli("jobs", "show", exported["id"]).splitlines()
    assert "owner_name: admin" in person_view
    assert not [line for line in person_view if line.startswith("owner:")]  # no 32-hex id for people
    assert {job["owner_name"] for job in jobs["items"]} == {"admin"}
    human = hub_cli("datasets", "show", unique_name)
    assert "VERSION" in human
    assert unique_name in human


def test_cli_errors_are_one_line_and_exit_1(hub_cli, unique_name: str) -> None:
    assert "no dataset named" in hub_cli("datasets", "show", unique_name, code=1)
    hub_cli("datasets", "create", unique_name)
    output = hub_cli("export", unique_name, "--where", '{"op": "gt"}', code=1)
    assert output.startswith("error: --where:")
    assert "Traceback" not in output


def test_account_commands(hub_server: EmbeddedServer, tmp_path: Path, unique_name: str) -> None:
    """Sign in and out, tokens, users, groups, roles and sharing, as a person at a terminal would."""
    admin = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    person = CliRunner(env={"TUPLEHUB_TOKEN": None, "TUPLEHUB_CONFIG_DIR": str(tmp_path / "config")})
    password = "cli-Passphrase-42\n"

    def invoke(runner: CliRunner, *args: str, code: int = 0, input: str | None = None) -> str:
        result = runner.invoke(app, [*args, "--url", hub_server.url], input=input)
        assert result.exit_code == code, result.output
        return result.output

    user = f"cli-{unique_name[3:]}"
    created = json.loads(invoke(admin, "users", "create", user, "--role", "contributor", "--password-stdin",
                                "--json", input=password))
    assert created["site_roles"] == ["contributor"]
    assert user in invoke(admin, "users", "list")

    assert "signed in" in invoke(person, "login", "--username", user, "--password-stdin", input=password)
    sessions = tmp_path / "config" / "sessions.json"
    assert oct(sessions.stat().st_mode & 0o777) == "0o600"
    assert json.loads(invoke(person, "whoami", "--json"))["name"] == user

    token = json.loads(invoke(person, "tokens", "create", "ci", "--right", "dataset:read", "--json"))
    listed = json.loads(invoke(person, "tokens", "list", "--json"))
    assert [t["name"] for t in listed] == ["ci"]
    assert "token" not in listed[0]
    assert json.loads(invoke(person, "tokens", "revoke", token["id"], "--yes", "--json"))["revoked"] is True

    group = f"grp-{unique_name[3:]}"
    invoke(person, "groups", "create", group)
    invoke(admin, "users", "create", f"{user}-b", "--password-stdin", input=password)
    shown = json.loads(invoke(person, "groups", "add", group, f"{user}-b", "--role", "member", "--json"))
    assert {m["user"] for m in shown["members"]} == {user, f"{user}-b"}
    invoke(person, "datasets", "create", unique_name)
    published = json.loads(invoke(person, "datasets", "publish", unique_name, "--group", group, "--json"))
    assert published["published_to"] == [group]
    assert published["visibility"] == "groups"
    assert json.loads(invoke(person, "datasets", "unpublish", unique_name, "--group", group,
                             "--json"))["visibility"] == "private"
    invoke(person, "groups", "remove", group, f"{user}-b")
    invoke(person, "groups", "delete", group, "--yes")

    assert "contributor" in invoke(person, "roles", "list")
    invoke(admin, "roles", "create", "cli_reader", "--right", "dataset:read")
    assert "role:manage" in invoke(person, "roles", "create", "nope", "--right", "dataset:read", code=1)
    invoke(admin, "roles", "delete", "cli_reader", "--yes")
    assert "dataset.publish" in invoke(admin, "audit", "--actor", user, "--json")

    invoke(person, "datasets", "delete", unique_name, "--yes")
    assert "signed out" in invoke(person, "logout")
    assert "sign in first" in invoke(person, "whoami", code=1)
