"""Rolling restarts with real processes: SIGTERM to a worker or to the API loses no job and no request.

A worker that gets SIGTERM takes no new job, lets its running job finish the step it is in and
hands the job back at the next checkpoint; another worker then runs it to one version with every
tuple once. The API, on SIGTERM, stops accepting connections and finishes the requests in flight
for up to ``TUPLEHUB_SHUTDOWN_GRACE_S``; one still running then is answered 503 with ``Retry-After``
if its response had not started. A start on a catalog that a newer release upgraded stops
with one line saying so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from arq import Retry

from tuplehub.client import Client
from tuplehub.storage.catalog.migrations import SCHEMA_VERSION
from tuplehub.storage.models import JobKind, JobRecord, JobStatus
from tuplehub.storage.queue import RETRY_KEY
from tuplehub.workers.context import JobRun, WorkerContext, run_job

from .factories import episode_arrays
from .processes import Processes, wait_for_server, wait_until
from .test_jobs import ctx  # the fixture

__all__ = ["ctx"]

PASSWORD = "upgrade-Passphrase-3"


def deployment_env(folder: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """An API and workers as separate processes on one SQLite catalog, one object folder and one queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUPLEHUB_")}
    return {**env, "TUPLEHUB_CONFIG_DIR": os.environ["TUPLEHUB_CONFIG_DIR"],
            "TUPLEHUB_DATA_DIR": str(folder / "api"), "TUPLEHUB_PORT": "0",
            "TUPLEHUB_CATALOG_URL": f"sqlite:///{folder}/catalog.db",
            "TUPLEHUB_OBJECTS_URL": (folder / "objects").as_uri(), "TUPLEHUB_REDIS_URL": redis_url,
            "TUPLEHUB_QUEUE_NAME": f"upgrades:{folder.name}", "TUPLEHUB_HEARTBEAT_S": "0.5",
            "TUPLEHUB_ADMIN_PASSWORD": PASSWORD, "TUPLEHUB_JWT_SECRET": "upgrades-" + "k" * 40, **extra}


def start_api(running: Processes, folder: Path, env: dict[str, str]) -> tuple[str, object]:
    log = folder / "api.log"
    api = running.start("serve", "--no-worker", env=env, log=log)
    return wait_for_server(folder / "api", api, log), api


async def test_a_draining_worker_s_job_finishes_its_step_then_hands_itself_back(ctx: WorkerContext) -> None:
    job = await ctx["catalog"].create_job(JobRecord(kind=JobKind.export, owner="local"))
    stopping = asyncio.Event()
    done: list[str] = []

    async def steps(run: JobRun) -> dict[str, Any]:
        await run.checkpoint(0.1, "export", "block 1")
        stopping.set()  # SIGTERM arrives during the second step...
        await asyncio.sleep(0.2)
        done.append("block 2")  # ...which still finishes
        await run.checkpoint(0.5, "export", "block 2")
        done.append("block 3")
        return {}

    tries = RETRY_KEY + job.id
    await ctx["queue"].pool.set(tries, 3)  # Arq counted this pick (the third) before running the job
    with pytest.raises(Retry):  # left in Arq's queue, so another worker takes it at once
        await run_job({**ctx, "stopping": stopping}, job.id, steps, timeout_s=60)
    assert done == ["block 2"]
    # Not one of Arq's tries: rolling restarts of several workers used to exhaust its max_tries,
    # after which Arq dropped the job unrun and the catalog kept it queued.
    assert int(await ctx["queue"].pool.get(tries)) == 2
    handed_back = await ctx["catalog"].get_job(job.id)
    assert (handed_back.status, handed_back.worker, handed_back.attempts, handed_back.lost) == (
        JobStatus.queued, None, 1, 0)


@pytest.mark.e2e
def test_a_worker_stopped_mid_ingest_hands_the_job_back_and_another_finishes_it(
        tmp_path: Path, redis_url: str, running: Processes) -> None:
    env = deployment_env(tmp_path, redis_url, TUPLEHUB_SHUTDOWN_GRACE_S="60", TUPLEHUB_LOG_LEVEL="INFO")
    url, _ = start_api(running, tmp_path, env)
    log = tmp_path / "workers.log"
    first = running.start("worker", env=env, log=log)

    arrays = episode_arrays(episodes=40, length=5_000, obs_dim=48, act_dim=8, seed=21, ragged=False)
    with Client(url, timeout=120) as hub:
        hub.login("admin", PASSWORD, remember=False)
        dataset = hub.datasets.create("rolling")
        job = dataset.upload(arrays, compression=None)

        def ingest_under_way() -> bool:
            record = job.refresh().record
            assert record.status in (JobStatus.queued, JobStatus.running), record
            return record.status == JobStatus.running and 0.05 < record.progress.fraction < 0.6

        wait_until(ingest_under_way, 120, "the ingest to be under way")
        assert running.stop(first, signal.SIGTERM) == 0, log.read_text()[-3000:]
        handed_back = stored_job(tmp_path, job.id)
        assert (handed_back.status, handed_back.worker, handed_back.attempts, handed_back.lost) == (
            JobStatus.queued, None, 1, 0), handed_back
        assert "handed back at a checkpoint" in log.read_text()  # its step finished; it was not cut off

        running.start("worker", env=env, log=log)
        job.wait(timeout=180)
        finished = stored_job(tmp_path, job.id)
        assert (finished.status, finished.attempts, finished.lost) == (JobStatus.succeeded, 2, 0)
        assert job.record.result["transitions"] == len(arrays["reward"])
        out = dataset.export().to_numpy()
        keys = np.stack([out["episode_id"], out["step"]], axis=1)
        assert len(np.unique(keys, axis=0)) == len(keys) == len(arrays["reward"])  # none lost, none twice
        np.testing.assert_array_equal(out["observation"], arrays["observation"])
        assert [v.number for v in dataset.refresh().record.versions] == [1]


def stored_job(folder: Path, job_id: str) -> JobRecord:
    """The job as the catalog holds it (with its worker and lost attempts, which the API does not show)."""
    with sqlite3.connect(folder / "catalog.db") as conn:
        (doc,) = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    return JobRecord.model_validate_json(doc)


def slow_body(chunks: int, pause_s: float, on_first: object) -> Iterator[bytes]:
    for index in range(chunks):
        yield bytes([index % 251]) * 2**16
        if index == 0:
            on_first()  # type: ignore[operator]
        time.sleep(pause_s)


@pytest.mark.e2e
@pytest.mark.parametrize(("grace_s", "completes"), [(30.0, True), (0.5, False)])
def test_an_api_stopped_during_a_slow_request_finishes_it_within_its_grace(
        tmp_path: Path, redis_url: str, running: Processes, grace_s: float, completes: bool) -> None:
    env = deployment_env(tmp_path, redis_url, TUPLEHUB_SHUTDOWN_GRACE_S=str(grace_s))
    url, api = start_api(running, tmp_path, env)
    with Client(url) as hub:
        hub.login("admin", PASSWORD, remember=False)
        hub.datasets.create("slow")
        token = hub.tokens.create("upgrades").token
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        upload = http.post("/datasets/slow/uploads", json={"part_size": 2**20}).json()
        body = slow_body(8, 0.4, lambda: api.send_signal(signal.SIGTERM))  # type: ignore[attr-defined]
        if completes:  # 3 s of body after the signal: the API waits for it, then exits
            response = http.put(f"/uploads/{upload['id']}/parts/1", content=body)
            assert response.status_code == 200, response.text
            assert response.json()["number"] == 1
        else:  # the grace ends before the body does: uvicorn cancels the request, which says "send it again"
            response = http.put(f"/uploads/{upload['id']}/parts/1", content=body)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "2"
            assert response.headers["x-content-type-options"] == "nosniff"  # answered inside the usual headers
            assert response.json()["type"] == "/problems/server-stopping"
            log_text = (tmp_path / "api.log").read_text()
            assert "timeout graceful shutdown exceeded" in log_text
            assert "Traceback" not in log_text
    # It got its SIGTERM mid-request and exits by itself (a second one, as stop() would send while
    # the 503 is still being flushed, makes uvicorn re-raise it: -15).
    assert api.wait(timeout=30) == 0  # type: ignore[attr-defined]
    with pytest.raises(httpx.TransportError):  # and it is gone
        httpx.get(f"{url}/api/v1/health/live", timeout=2)


@pytest.mark.e2e
def test_a_start_on_a_catalog_a_newer_release_upgraded_stops_with_one_line(
        tmp_path: Path, redis_url: str, running: Processes) -> None:
    env = deployment_env(tmp_path, redis_url)
    with sqlite3.connect(tmp_path / "catalog.db", isolation_level=None) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for command in (("serve", "--no-worker"), ("worker",)):
        log = tmp_path / f"{command[0]}.log"
        process = running.start(*command, env=env, log=log)
        process.wait(timeout=60)
        output = log.read_text()
        assert process.returncode == 1, output
        assert f"schema version {SCHEMA_VERSION + 1}, newer than this tuplehub understands" in output
        assert "Traceback" not in output
