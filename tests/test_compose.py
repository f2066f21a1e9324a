"""compose/ (issue 12), read statically: the Compose spec, who publishes ports and who sits on which
network, secrets only from the .env, healthchecks, grace periods, the Caddyfile's variables, and the
Prometheus files against the compose services and the metrics tuplehub defines. The checks that need
tools (real `docker compose config`, promtool, caddy) are tests/deploy/test_compose_static.py."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
CADDYFILE = COMPOSE_DIR / "Caddyfile"
PROMETHEUS = COMPOSE_DIR / "prometheus"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
REFERENCE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY")
RUNS_TUPLEHUB = ("api", "worker", "torch-worker")


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_references() -> list[tuple[str, str, str]]:
    """Every ``${...}`` in compose.yaml's values (not its comments): (name, operator, default or message)."""
    return [found for text in _strings(compose()) for found in REFERENCE.findall(text)]


def _seconds(duration: str) -> float:
    """A Compose duration such as ``40s``, ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_it_validates_against_the_compose_spec() -> None:
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 40s", "stop_grace_period: [40]", 1))
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_the_project_is_named_and_has_no_version_key() -> None:
    assert compose()["name"] == "tuplehub"
    assert "version" not in compose()


def test_only_the_proxy_publishes_ports() -> None:
    services = compose()["services"]
    assert {name for name, service in services.items() if service.get("ports") or service.get("expose")} == {"proxy"}
    assert services["proxy"]["ports"] == ["${TUPLEHUB_BIND:-0.0.0.0}:${TUPLEHUB_HTTP_PORT:-80}:80",
                                          "${TUPLEHUB_BIND:-0.0.0.0}:${TUPLEHUB_HTTPS_PORT:-443}:443"]
    for name, service in services.items():
        assert "network_mode" not in service, name
        assert not service.get("privileged"), name


def test_every_service_but_the_proxy_is_on_internal_networks_only() -> None:
    spec = compose()
    networks = spec["networks"]
    assert networks["backend"] == {"internal": True}
    assert not (networks["edge"] or {}).get("internal")
    for name, service in spec["services"].items():
        joined = set(service.get("networks") or ["default"])
        if name == "proxy":
            assert joined == {"edge", "backend"}
        else:
            assert all((networks.get(network) or {}).get("internal") for network in joined), (name, joined)


def test_every_secret_comes_from_the_env_file_and_is_required() -> None:
    references = compose_references()
    secret = [(name, operator, message) for name, operator, message in references
              if any(word in name for word in SECRET_WORDS)]
    assert {name for name, _, _ in secret} >= {
        "TUPLEHUB_JWT_SECRET", "TUPLEHUB_ADMIN_PASSWORD", "TUPLEHUB_MONGO_PASSWORD", "TUPLEHUB_REDIS_PASSWORD",
        "TUPLEHUB_S3_ACCESS_KEY_ID", "TUPLEHUB_S3_SECRET_ACCESS_KEY", "TUPLEHUB_METRICS_TOKEN"}
    for name, operator, message in secret:
        assert operator == ":?", f"{name} must be ${{{name}:?...}}: compose refuses to start without it"
        assert message == "run tuplehub deploy init first", name
    # and no literal value that looks like one
    for service in compose()["services"].values():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if any(word in key for word in SECRET_WORDS) and key != "TUPLEHUB_METRICS_TOKEN_FILE":
                assert "${" in str(value), f"{key} holds a literal value"


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy() -> None:
    for name, service in compose()["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} turns its healthcheck off"
        assert _seconds(check["timeout"]) < _seconds(check["interval"]), name
        assert service.get("restart") == "unless-stopped", name


def test_tuplehub_services_stop_after_their_grace_and_wait_for_their_backends() -> None:
    services = compose()["services"]
    grace = re.fullmatch(r"\$\{TUPLEHUB_SHUTDOWN_GRACE_S:-(\d+)\}",
                         services["api"]["environment"]["TUPLEHUB_SHUTDOWN_GRACE_S"])
    assert grace, "TUPLEHUB_SHUTDOWN_GRACE_S needs a default"
    for name in RUNS_TUPLEHUB:
        service = services[name]
        assert service["environment"]["TUPLEHUB_SHUTDOWN_GRACE_S"] == grace.group(0)
        assert _seconds(service["stop_grace_period"]) >= float(grace.group(1)) + 10, name
        assert service["depends_on"] == {backend: {"condition": "service_healthy"}
                                         for backend in ("mongo", "minio", "redis")}, name
        assert service["environment"]["TUPLEHUB_LOG_FORMAT"] == "json"
        assert "--json" in service["command"], f"{name} prints a plain start line among its JSON log lines"
    assert services["api"]["command"][:3] == ["tuplehub", "serve", "--no-worker"]  # workers are their own service
    for name in ("worker", "torch-worker"):
        assert services[name]["command"] == ["tuplehub", "worker", "--json"]
        assert services[name]["environment"]["TUPLEHUB_WORKER_METRICS_PORT"] == "9100"
    assert services["torch-worker"]["profiles"] == ["torch"]
    assert services["torch-worker"]["build"]["args"]["EXTRAS"] == "d3rlpy"
    assert services["torch-worker"]["image"] != services["worker"]["image"]


def test_volumes_are_named_and_public_images_pinned() -> None:
    spec = compose()
    declared = set(spec["volumes"])
    for name, service in spec["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in declared, (name, volume)
        image = service["image"]
        if not image.startswith("${"):
            tag = image.rsplit(":", 1)[1]
            assert re.search(r"\d+\.\d+\.\d+|RELEASE\.\d{4}", tag), f"{name}: pin {image} to a full version"


def test_the_proxy_gets_every_variable_the_caddyfile_reads() -> None:
    text = CADDYFILE.read_text()
    placeholders = set(re.findall(r"\{\$(\w+)(?::[^}]*)?\}", text))
    assert placeholders == {"TUPLEHUB_DOMAIN", "TUPLEHUB_TLS", "TUPLEHUB_ACME_CA", "TUPLEHUB_ACME_CA_ROOT"}
    assert placeholders <= set(compose()["services"]["proxy"]["environment"])
    assert 'Strict-Transport-Security "max-age=31536000; includeSubDomains"' in text
    assert re.search(r"@metrics path /metrics /metrics/\*\s+respond @metrics 404", text)
    assert "dynamic a api 8000" in text
    assert re.search(r"^s3\.\{\$TUPLEHUB_DOMAIN\} \{", text, re.MULTILINE)
    assert "reverse_proxy minio:9000" in text
    assert "header_up Host" not in text  # S3 signatures cover the Host header: it must pass unchanged


def test_prometheus_scrapes_the_compose_services_with_the_token_file() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    services = compose()["services"]
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in (("api", 8000), ("worker", 9100), ("torch-worker", 9100)):
        assert name in services
        assert jobs[name]["dns_sd_configs"] == [{"names": [name], "type": "A", "port": port, "refresh_interval": "15s"}]
        assert jobs[name]["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    assert services["prometheus"]["profiles"] == ["monitoring"]


def _defined_metrics() -> set[str]:
    """The series tuplehub exports, as Prometheus names them (counters get ``_total``)."""
    names: set[str] = set()
    for module in (ROOT / "api" / "monitoring.py", ROOT / "workers" / "monitoring.py"):
        text = module.read_text()
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*\"(tuplehub_\w+)\"", text):
            names |= {f"{name}_total"} if kind == "Counter" else {name}
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


@pytest.mark.parametrize("name", ["alerts.yml", "alerts.test.yml"])
def test_the_alert_rules_read_only_series_tuplehub_exports(name: str) -> None:
    defined = _defined_metrics()
    assert {"tuplehub_dependency_up", "tuplehub_disk_free_bytes", "tuplehub_queue_depth"} <= defined
    used = set(re.findall(r"\btuplehub_[a-z_]+", (PROMETHEUS / name).read_text()))
    assert used, name
    assert used <= defined, f"{name} reads series nothing exports: {sorted(used - defined)}"


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    firing = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == firing
    assert {"TuplehubJobKindFailing", "TuplehubQueueGrowing", "TuplehubDependencyDown",
            "TuplehubDiskAlmostFull"} <= alerts
