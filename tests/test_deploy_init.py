"""``tuplehub deploy init`` (issue 12): the deployment's .env, private from its first byte, with fresh
secrets, never overwritten by accident, and holding every variable compose.yaml needs."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tuplehub.client.cli import app

from .test_compose import compose_references

SECRETS = ("TUPLEHUB_JWT_SECRET", "TUPLEHUB_ADMIN_PASSWORD", "TUPLEHUB_MONGO_PASSWORD", "TUPLEHUB_S3_ACCESS_KEY_ID",
           "TUPLEHUB_S3_SECRET_ACCESS_KEY", "TUPLEHUB_REDIS_PASSWORD", "TUPLEHUB_METRICS_TOKEN")


def _init(*args: str) -> Result:
    return CliRunner().invoke(app, ["deploy", "init", *args])


def _env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that hides nothing: the files must be private by their own mode, not by luck."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_the_env_file_is_private_and_holds_fresh_secrets(tmp_path: Path, loose_umask: None) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for folder in (first, second):
        result = _init("--domain", "hub.example.org", "--email", "ops@example.org", "--dir", str(folder))
        assert result.exit_code == 0, result.output
    assert _mode(first / ".env") == 0o600
    assert _mode(first / "secrets") == 0o700  # the token is 0444 for Prometheus (nobody): the folder guards it
    assert _mode(first / "secrets" / "metrics-token") == 0o444
    one, two = _env(first / ".env"), _env(second / ".env")
    for name in SECRETS:
        assert len(one[name]) >= 20, name
        assert one[name] != two[name], f"{name} is the same in two deployments"
    assert len({one[name] for name in SECRETS}) == len(SECRETS)  # no secret reused for another
    assert len(one["TUPLEHUB_JWT_SECRET"].encode()) >= 32  # what the API asks of an HS256 key
    assert (first / "secrets" / "metrics-token").read_text() == one["TUPLEHUB_METRICS_TOKEN"]
    assert one["TUPLEHUB_METRICS_TOKEN_FILE"] == str((first / "secrets" / "metrics-token").absolute())
    assert (one["TUPLEHUB_DOMAIN"], one["TUPLEHUB_TLS"]) == ("hub.example.org", "ops@example.org")
    assert one["TUPLEHUB_S3_PUBLIC_ENDPOINT_URL"] == "https://s3.hub.example.org"
    # MinIO's limits on its root credentials, which these are
    assert 3 <= len(one["TUPLEHUB_S3_ACCESS_KEY_ID"]) <= 20
    assert 8 <= len(one["TUPLEHUB_S3_SECRET_ACCESS_KEY"]) <= 40
    # they go into mongodb:// and redis:// URLs unescaped
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", one[name]) for name in SECRETS)


def test_every_variable_compose_uses_is_written_or_has_a_harmless_default(tmp_path: Path) -> None:
    assert _init("--dir", str(tmp_path)).exit_code == 0
    written = _env(tmp_path / ".env")
    references = compose_references()
    assert len(references) > 20
    for name, operator, default in references:
        if operator.endswith("-"):
            assert not any(word in name for word in ("SECRET", "PASSWORD", "TOKEN")), name
            assert default, f"{name} has an empty default"
        else:  # required (:?) or bare: deploy init must write it, and not empty
            assert written.get(name), f"compose.yaml needs {name}, which deploy init does not write"
    for name in SECRETS:
        assert (name, ":?", "run tuplehub deploy init first") in references, f"{name} must be required by compose"


def test_an_existing_deployment_is_not_overwritten_without_force(tmp_path: Path) -> None:
    assert _init("--dir", str(tmp_path)).exit_code == 0
    before = (tmp_path / ".env").read_text()
    refused = _init("--dir", str(tmp_path))
    assert refused.exit_code == 2
    assert f"{(tmp_path / '.env').absolute()} already exists" in refused.output
    assert "--force" in refused.output
    assert "Traceback" not in refused.output
    assert (tmp_path / ".env").read_text() == before
    as_json = _init("--dir", str(tmp_path), "--json")
    assert json.loads(as_json.output)["error"]["code"] == "command-line"
    # a token file left alone (an .env deleted by hand) is refused too, before the .env is written
    (tmp_path / ".env").unlink()
    assert _init("--dir", str(tmp_path)).exit_code == 2
    assert not (tmp_path / ".env").exists()
    forced = _init("--dir", str(tmp_path), "--force")
    assert forced.exit_code == 0, forced.output
    assert _mode(tmp_path / ".env") == 0o600
    key = _env(tmp_path / ".env")["TUPLEHUB_JWT_SECRET"]
    assert _init("--dir", str(tmp_path), "--force").exit_code == 0
    assert _env(tmp_path / ".env")["TUPLEHUB_JWT_SECRET"] != key
    assert _mode(tmp_path / ".env") == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == [".env", "secrets"]  # no temporary file left


def test_json_output_says_what_to_do_and_holds_no_secret(tmp_path: Path) -> None:
    result = _init("--domain", "Hub.Example.org.", "--email", "ops@example.org", "--dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["domain"] == "hub.example.org"
    assert (out["tls"], out["acme_email"], out["domain_from"]) == ("acme", "ops@example.org", "option")
    assert out["dns_names"] == ["hub.example.org", "s3.hub.example.org"]
    assert out["env_file"] == str((tmp_path / ".env").absolute())
    assert any(step.startswith("docker compose ") and " up -d" in step and str(tmp_path / ".env") in step
               for step in out["next"])
    assert "TUPLEHUB_ADMIN_PASSWORD" in out["admin_password"]
    for name in SECRETS:
        assert _env(tmp_path / ".env")[name] not in result.output, f"{name} was printed"


def test_without_a_domain_it_is_a_lan_named_after_this_machine(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "LabServer")
    result = _init("--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "domain: labserver (this machine's hostname; choose another with --domain)" in result.output
    assert "tls internal" in result.output
    written = _env(tmp_path / ".env")
    assert (written["TUPLEHUB_DOMAIN"], written["TUPLEHUB_TLS"]) == ("labserver", "internal")
    lan = _init("--domain", "hub.lab", "--lan", "--dir", str(tmp_path / "lan"))
    assert lan.exit_code == 0, lan.output
    assert _env(tmp_path / "lan" / ".env")["TUPLEHUB_TLS"] == "internal"


@pytest.mark.parametrize(("args", "says"), [
    (["--domain", "hub.example.org"], "certificates by ACME need an e-mail address"),
    (["--domain", "hub.example.org", "--email", "ops"], "--email 'ops' is not an e-mail address"),
    (["--domain", "192.168.1.5"], "is an address; the proxy needs a name"),
    (["--domain", "hub_1.example.org", "--lan"], "is not a DNS name"),
])
def test_mistakes_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    result = _init(*args, "--dir", str(tmp_path / "d"))
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "d" / ".env").exists()
