"""Per-user quotas: off by default, and when set, refused with a 403 that names quota, usage and limit.

Runs against a real server thread (real Redis, real worker) with small limits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app as cli_app
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.errors import QuotaExceeded
from tuplehub.storage.models import JobKind, JobRecord, JobStatus
from tuplehub.storage.settings import Settings

from .conftest import admin_client, admin_token, api, hub_server_with, login, make_settings, new_user
from .factories import episode_arrays

STORED, DATASETS, JOBS = 200_000, 2, 1


hub_server = hub_server_with(quota_stored_bytes=STORED, quota_datasets=DATASETS, quota_concurrent_jobs=JOBS)


@pytest.fixture
def token(hub_server: EmbeddedServer, admin: Client) -> str:
    """An ordinary user's access token."""
    return login(hub_server, new_user(admin))["access_token"]


@pytest.fixture
def user(hub_server: EmbeddedServer, token: str) -> Iterator[Client]:
    with Client(hub_server.url, token=token) as client:
        yield client


@pytest.fixture
def raw(hub_server: EmbeddedServer, token: str) -> Iterator[httpx.Client]:
    with api(hub_server, token) as http:
        yield http


def test_quotas_are_off_by_default() -> None:
    settings = Settings(_env_file=None)
    assert (settings.quota_stored_bytes, settings.quota_datasets, settings.quota_concurrent_jobs) == (None, None, None)


def test_a_dataset_past_the_quota_is_refused(user: Client) -> None:
    for _ in range(DATASETS):
        user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")
    with pytest.raises(QuotaExceeded) as refused:
        user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")
    assert refused.value.status == 403
    assert refused.value.extra == {"quota": "datasets", "usage": DATASETS, "limit": DATASETS}
    assert "delete one first" in refused.value.detail
    assert user.whoami(usage=True).usage.datasets == DATASETS  # type: ignore[union-attr]


def test_concurrent_creations_cannot_pass_the_dataset_quota(hub_server: EmbeddedServer, token: str) -> None:
    def create(_: int) -> int:
        with api(hub_server, token) as http:
            return http.post("/datasets", json={"name": f"q-{uuid.uuid4().hex[:8]}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(16)))
    assert set(answers) <= {201, 403}
    with api(hub_server, token) as http:
        owned = http.get("/auth/me", params={"usage": "true"}).json()["usage"]["datasets"]
    assert owned == answers.count(201) <= DATASETS


def test_stored_bytes_are_counted_and_refused_before_an_upload(user: Client) -> None:
    dataset = user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")

    def arrays(batch: int) -> dict[str, np.ndarray]:  # some 2,000 rows of 42 decoded bytes: 2 fit, 3 do not
        return episode_arrays(episodes=40, length=50, first_id=40 * batch)

    dataset.upload(arrays(0)).wait()
    usage = user.whoami(usage=True).usage
    assert usage is not None
    assert usage.stored_bytes == user.datasets.get(dataset.name).record.versions[-1].transitions * 42
    assert usage.limits == {"stored_bytes": STORED, "datasets": DATASETS, "concurrent_jobs": JOBS}
    dataset.upload(arrays(1)).wait()
    used = user.whoami(usage=True).usage.stored_bytes  # type: ignore[union-attr]
    with pytest.raises(QuotaExceeded) as refused:
        dataset.upload(arrays(2))
    assert refused.value.status == 403
    assert refused.value.extra["quota"] == "stored_bytes"
    assert (refused.value.extra["usage"], refused.value.extra["limit"]) == (used, STORED)
    assert used + refused.value.extra["incoming"] > STORED
    assert user.datasets.get(dataset.name).latest_version == 2  # nothing half-written
    with pytest.raises(QuotaExceeded):
        user.artifacts.upload(b"x" * (STORED - used + 1), name="policy.bin")


def test_a_derive_that_could_pass_the_quota_is_refused(user: Client, raw: httpx.Client) -> None:
    source = user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")
    source.upload(episode_arrays(episodes=40, length=50)).wait()  # some 84 kB of decoded rows
    target = user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")
    used = user.whoami(usage=True).usage.stored_bytes  # type: ignore[union-attr]
    refused = raw.post(f"/datasets/{target.name}/derive",  # three copies cannot fit the 200 kB quota
                       json={"sources": [{"dataset": source.name}] * 3, "renumber": True})
    assert refused.status_code == 403, refused.text
    assert (refused.json()["quota"], refused.json()["usage"], refused.json()["incoming"]) == (
        "stored_bytes", used, 3 * used)


def test_a_part_that_would_pass_the_quota_is_refused(raw: httpx.Client) -> None:
    session = raw.post("/artifacts/uploads", json={"name": "big.bin", "part_size": 2**20}).json()
    answer = raw.put(f"/uploads/{session['id']}/parts/1", content=b"x" * (STORED + 1))
    assert answer.status_code == 403, answer.text
    assert (answer.json()["quota"], answer.json()["limit"], answer.json()["incoming"]) == (
        "stored_bytes", STORED, STORED + 1)


def test_a_later_part_counts_the_parts_before_it(raw: httpx.Client) -> None:
    """Part n of a session without a declared size stands for at least n - 1 full parts before it."""
    part = STORED * 3 // 4  # one part fits; a second one would not
    session = raw.post("/artifacts/uploads", json={"name": "split.bin", "part_size": part}).json()
    assert raw.put(f"/uploads/{session['id']}/parts/1", content=b"x" * part).status_code == 200
    refused = raw.put(f"/uploads/{session['id']}/parts/2", content=b"x" * part)
    assert refused.status_code == 403, refused.text
    assert refused.json()["incoming"] == 2 * part


def test_sessions_that_together_pass_the_quota_are_refused_at_completion(raw: httpx.Client) -> None:
    """Each of two sessions fits alone; the one completed second finds the first stored and is refused."""
    part = STORED * 3 // 4
    sessions = [raw.post("/artifacts/uploads", json={"name": f"half-{n}.bin", "part_size": part}).json()
                for n in (1, 2)]
    parts = []
    for number, session in enumerate(sessions, 1):
        answer = raw.put(f"/uploads/{session['id']}/parts/1", content=bytes([number]) * part)
        assert answer.status_code == 200, answer.text
        parts.append(answer.json())
    first = raw.post(f"/uploads/{sessions[0]['id']}/complete", json={"parts": [parts[0]]})
    assert first.status_code == 202, first.text
    deadline = time.monotonic() + 60
    while raw.get(f"/jobs/{first.json()['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the first artifact was not stored"
        time.sleep(0.2)
    refused = raw.post(f"/uploads/{sessions[1]['id']}/complete", json={"parts": [parts[1]]})
    assert refused.status_code == 403, refused.text
    assert (refused.json()["quota"], refused.json()["usage"], refused.json()["incoming"]) == (
        "stored_bytes", part, part)
    assert raw.get(f"/uploads/{sessions[1]['id']}").json()["status"] == "aborted"  # its bytes are freed


def test_a_job_past_the_concurrency_quota_is_refused(hub_server: EmbeddedServer, user: Client,
                                                     raw: httpx.Client) -> None:
    dataset = user.datasets.create(f"q-{uuid.uuid4().hex[:8]}")
    dataset.upload(episode_arrays(episodes=4, length=5)).wait()
    busy = JobRecord(kind=JobKind.export, owner=user.whoami().id, status=JobStatus.running)  # never enqueued

    async def hold_a_slot() -> None:
        catalog = await open_catalog(hub_server.settings.resolved_catalog_url())
        try:
            await catalog.create_job(busy)
        finally:
            await catalog.aclose()

    asyncio.run(hold_a_slot())
    refused = raw.post(f"/datasets/{dataset.name}/exports", json={"format": "parquet"})
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert (body["title"], body["quota"], body["usage"], body["limit"]) == ("Quota Exceeded", "concurrent_jobs", 1, 1)
    assert "wait for one to finish" in body["detail"]


def test_whoami_shows_usage_and_limits(hub_server: EmbeddedServer, token: str) -> None:
    result = CliRunner().invoke(cli_app, ["whoami", "--url", hub_server.url], env={"TUPLEHUB_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert "usage: 0 bytes stored (of 200.0 kB), 0 datasets (of 2), 0 jobs queued or running (of 1)" in result.output


def test_a_full_quota_refuses_an_upload_session_before_any_byte(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, quota_stored_bytes=0)
    with serve_in_thread(settings) as server, admin_client(server) as admin:
        dataset = admin.datasets.create("full")
        with api(server, admin_token(server)) as http:
            for path in (f"/datasets/{dataset.name}/uploads", "/artifacts/uploads"):
                answer = http.post(path, json={"name": "a.bin"} if "artifacts" in path else {})
                assert answer.status_code == 403, answer.text
                assert (answer.json()["quota"], answer.json()["usage"], answer.json()["limit"]) == (
                    "stored_bytes", 0, 0)


def test_signing_in_does_not_count_usage(user: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting reads every version the user owns: only whoami's usage=true pays for it."""
    from tuplehub.storage import quotas

    async def never(*_: object) -> None:
        raise AssertionError("usage counted")

    monkeypatch.setattr(quotas, "usage", never)
    assert user.whoami().usage is None
