"""End to end: real ``tuplehub serve`` and ``tuplehub worker`` processes on loopback.

The distributed test runs the API and separate workers against a real Redis (the bundled
server), an S3 endpoint over HTTP (moto's server mode) and a shared catalog, uploads through
presigned multipart URLs, kills the worker in the middle of the ingest and checks that a new
worker finishes it with every tuple present exactly once. The embedded test checks that the
default server keeps its datasets across a restart.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from tuplehub.client import Client
from tuplehub.storage.models import JobStatus

from .factories import episode_arrays
from .processes import Processes, wait_for_server, wait_until

pytestmark = pytest.mark.e2e


def test_distributed_ingest_survives_a_killed_worker(tmp_path: Path, redis_url: str, s3_endpoint: str,
                                                     running: Processes) -> None:
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    catalog_url = os.environ.get("TUPLEHUB_TEST_MONGODB_URL", "").rstrip("/")
    catalog_url = f"{catalog_url}/tuplehub_e2e_{os.getpid()}" if catalog_url else f"sqlite:///{tmp_path}/catalog.db"
    env = {**os.environ, **credentials,
           "TUPLEHUB_DATA_DIR": str(tmp_path / "api"), "TUPLEHUB_PORT": "0",
           "TUPLEHUB_CATALOG_URL": catalog_url, "TUPLEHUB_OBJECTS_URL": "s3://tuplehub/e2e",
           "TUPLEHUB_S3_ENDPOINT_URL": s3_endpoint, "TUPLEHUB_REDIS_URL": redis_url,
           "TUPLEHUB_QUEUE_NAME": f"e2e:{os.getpid()}", "TUPLEHUB_HEARTBEAT_S": "0.5",
           "TUPLEHUB_STALE_AFTER_S": "3", "TUPLEHUB_REQUEUE_EVERY_S": "1",
           # A deployment's first start: the admin and the signing key come from settings, never from code.
           "TUPLEHUB_ADMIN_PASSWORD": "e2e-Passphrase-7", "TUPLEHUB_JWT_SECRET": "e2e-" + "k" * 40}
    env.pop("TUPLEHUB_URL", None)
    log = tmp_path / "processes.log"
    api = running.start("serve", "--no-worker", env=env, log=log)
    url = wait_for_server(tmp_path / "api", api, log)
    first_worker = running.start("worker", env=env, log=log)

    arrays = episode_arrays(episodes=40, length=5_000, obs_dim=48, act_dim=8, seed=11, ragged=False)
    with Client(url, timeout=120) as hub:
        hub.login("admin", "e2e-Passphrase-7", remember=False)
        dataset = hub.datasets.create("distributed")
        job = dataset.upload(arrays, part_size=5 * 2**20, compression=None)
        token = hub.tokens.create("e2e").token
        upload = httpx.get(f"{url}/api/v1/uploads/{job.record.params['upload_id']}",
                           headers={"Authorization": f"Bearer {token}"}).json()
        assert upload["transport"] == "presigned"

        def ingest_is_half_done() -> bool:
            record = job.refresh().record
            assert record.status in (JobStatus.queued, JobStatus.running), record
            return record.status == JobStatus.running and 0.05 < record.progress.fraction < 0.8

        wait_until(ingest_is_half_done, 60, "the ingest to be under way")
        running.stop(first_worker, signal.SIGKILL)
        assert job.refresh().record.status == JobStatus.running
        running.start("worker", env=env, log=log)
        job.wait(timeout=120)
        assert job.record.attempts >= 2, log.read_text()[-3000:]
        assert job.record.result["transitions"] == len(arrays["reward"])

        out = dataset.export(next_observation=True).to_numpy()
        keys = np.stack([out["episode_id"], out["step"]], axis=1)
        assert len(np.unique(keys, axis=0)) == len(keys) == len(arrays["reward"])  # no tuple twice, none lost
        for name in ("episode_id", "step", "observation", "action", "reward", "terminated", "truncated",
                     "next_observation"):
            np.testing.assert_array_equal(out[name], arrays[name], err_msg=name)
        assert [v.number for v in dataset.refresh().record.versions] == [1]


def test_embedded_server_keeps_datasets_across_restarts(tmp_path: Path, running: Processes,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUPLEHUB_")}
    env |= {"TUPLEHUB_DATA_DIR": str(tmp_path / "data"), "TUPLEHUB_PORT": "0",
            "TUPLEHUB_CONFIG_DIR": os.environ["TUPLEHUB_CONFIG_DIR"]}
    # As for a user: the client finds the embedded server and its local admin with no typing at all.
    monkeypatch.setenv("TUPLEHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TUPLEHUB_URL", raising=False)
    log = tmp_path / "serve.log"
    arrays = episode_arrays(episodes=5, length=20, seed=12)

    server = running.start("serve", env=env, log=log)
    wait_for_server(tmp_path / "data", server, log)
    with Client() as hub:
        hub.datasets.create("kept", tags=["restart"]).upload(arrays).wait()
    running.stop(server)
    assert server.returncode == 0, log.read_text()[-3000:]
    assert not (tmp_path / "data" / "server.json").exists()
    assert not (tmp_path / "data" / "redis" / "redis.sock").exists()  # the bundled Redis stopped with it

    server = running.start("serve", env=env, log=log)
    wait_for_server(tmp_path / "data", server, log)
    with Client() as hub:  # the session stored at the first start still works after the restart
        assert hub.whoami().name == "admin"
        dataset = hub.datasets.get("kept")
        assert [v.episodes for v in dataset.record.versions] == [5]
        np.testing.assert_array_equal(dataset.export().to_numpy()["observation"], arrays["observation"])
