"""Property-based fuzzing of every API operation, as an ordinary signed-in user: no input is a 500.

Schemathesis reads the OpenAPI document of a running hub (API, worker, embedded backends) and
generates requests from it, valid and invalid. The caller is a plain ``contributor`` who owns one
dataset, one benchmark and one artifact, so that operations on an existing item get past their
"not found" and reach the code behind it. Runs are seeded and bounded so the suite stays
deterministic and takes well under two minutes on a small machine.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import gymnasium as gym
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tuplehub.client import Client
from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_client

pytestmark = pytest.mark.slow
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
PASSWORD = "fuzzing-Passphrase-1"


@pytest.fixture(scope="module")
def ordinary(hub_server: EmbeddedServer) -> dict[str, Any]:
    """A contributor's access token and the ids of what they own."""
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    with admin_client(hub_server) as admin:
        admin.users.create(name, PASSWORD, site_roles=["contributor"])
    with Client(hub_server.url) as client:
        client.login(name, PASSWORD, remember=False)
        dataset = client.datasets.create(f"fuzzed-{uuid.uuid4().hex[:8]}").name
        with gym.make("CartPole-v1") as env:
            benchmark = client.benchmarks.create_from_env(env, name=f"fuzz-{name}").id
        artifact = client.artifacts.upload(b"policy bytes", name="policy.bin").id
    owned = {"name": dataset, "benchmark_id": benchmark, "artifact_id": artifact}
    return {"token": _token(hub_server, name), "path": owned}


def _token(server: EmbeddedServer, name: str) -> str:
    answer = requests.post(f"{server.url}/api/v1/auth/login", json={"username": name, "password": PASSWORD},
                           timeout=30)
    answer.raise_for_status()
    return answer.json()["access_token"]


def _known(operation: Any, owned: dict[str, str]) -> dict[str, str]:
    """Path parameters pinned to the caller's own items; deletes keep random ones so the items survive."""
    if operation.method.upper() == "DELETE":
        return {}
    names = {parameter.name for parameter in operation.path_parameters}
    return {key: value for key, value in owned.items() if key in names}


def test_no_operation_answers_a_server_error(hub_server: EmbeddedServer, ordinary: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{hub_server.url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = 0
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {ordinary['token']}"
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode, examples in EXAMPLES.items():
                strategy = operation.as_strategy(generation_mode=mode,
                                                 path_parameters=_known(operation, ordinary["path"]))

                @hypothesis.settings(max_examples=examples, database=None, deadline=None, derandomize=True,
                                     suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
                @hypothesis.given(case=strategy)
                def call(case: Any) -> None:
                    response = case.call(base_url=hub_server.url, session=session, timeout=60)
                    if response.status_code >= 500:
                        failures.append(f"{response.status_code} {case.operation.label}: {case.as_curl_command()}"
                                        f"\n  -> {response.text[:300]}")

                with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
                    call()
    assert operations >= 70
    assert not failures, "\n".join(failures)
