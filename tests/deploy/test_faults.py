"""Faults on the compose stack, with the real client through the proxy over HTTPS: an API replica and a
worker killed (SIGKILL) mid-upload and mid-ingest, the stack restarted with jobs queued, and a rolling
restart (SIGTERM, one replica at a time) under a client that keeps uploading and exporting.

What must hold each time: the client finishes (it retries where the proxy or the API say it may),
every upload makes exactly one version whose content hash is the one the local file gives
(:func:`local_content_hash` runs the ingest's own reader on it), and no job stays queued or running.
Each test leaves the stack as it found it, two API replicas and two workers, all healthy, for the
other tier tests that share it. The tier's workers find a killed worker's job after 20 s of silence
(``compose.tier.yaml``; the default is a minute). Figures (what was killed when, how long the client
and the stack took, the client's retries) go to the tier's summary.

The stack's MongoDB and MinIO stand-ins (mongoeco, radosgw on memstore) keep their data in memory
only, so "restart the stack" restarts everything else: the proxy, the API replicas, the workers and
Redis, whose persistence (append-only file) is what keeps the queued jobs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tuplehub.client import Client
from tuplehub.client import parts as client_parts
from tuplehub.client.jobs import Job
from tuplehub.client.sessions import SessionStore
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.models import JobStatus, SegmentRef, VersionRecord
from tuplehub.storage.objects import S3_MIN_PART, open_object_store
from tuplehub.workers.jobs.ingest import UploadReader

from ..factories import episode_arrays
from .conftest import FIGURES
from .podman import podman
from .stack import Stack

pytestmark = pytest.mark.timeout(900)

SCALE = {"api": 2, "worker": 2}
SCALE_ARGS = ("--scale", "api=2", "--scale", "worker=2")
PART = S3_MIN_PART  # the smallest part an S3 store takes: many parts from little data
JOB_TIMEOUT_S = 180
QUEUE = "tuplehub:jobs"  # the Arq queue (a sorted set) in Redis: storage/settings.py queue_name
# What the catalog holds of a job (the API shows neither its worker nor its lost attempts), read with
# the image's pymongo: opening the tuplehub catalog would check the migrations and indexes each time.
JOB_RECORD = """
import json, os, sys
from pymongo import MongoClient
with MongoClient(os.environ["TUPLEHUB_CATALOG_URL"], serverSelectionTimeoutMS=60_000) as client:
    job = client.get_default_database(default="tuplehub").jobs.find_one({"_id": sys.argv[1]})
    print(json.dumps({key: job.get(key) for key in ("status", "attempts", "lost", "worker")}))
"""


# --- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def hub(stack: Stack, client: Client, tmp_path: Path) -> Iterator[tuple[Client, list[str]]]:
    """A client of its own, signed in as the admin, and the retry lines it logs (the session's ``client``
    keeps its own policy); ``client`` is asked for so that SSL_CERT_FILE trusts pebble's root."""
    lines: list[str] = []
    with Client(stack.url, timeout=120, sessions=SessionStore(tmp_path / "sessions", use_keyring=False),
                on_retry=lines.append) as faulty:
        faulty.login("admin", stack.env["TUPLEHUB_ADMIN_PASSWORD"], remember=False)
        yield faulty, lines


@pytest.fixture(autouse=True)
def restored(stack: Stack) -> Iterator[None]:
    """Whatever happened, the stack ends the test at its scale with every replica healthy."""
    yield
    stack.up("--no-recreate", *SCALE_ARGS)
    stack.wait_healthy(**SCALE)


@contextmanager
def logs_on_failure(stack: Stack, *services: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(stack.logs(*services)[-20_000:])
        raise


def figure(line: str) -> None:
    FIGURES.append(f"faults: {line}")
    print(line)


def write_upload(path: Path, **shape: Any) -> Path:
    """A Parquet file of ``episode_arrays(**shape)``, uncompressed (noise: compression gains nothing)."""
    pq.write_table(table_from_arrays(episode_arrays(**shape)), path, compression="none")
    return path


def local_content_hash(path: Path, folder: Path) -> str | None:
    """The content hash the version made of ``path`` must have: the ingest's own reader on a local store."""
    objects = open_object_store((folder / "objects").as_uri())
    with objects.open_write(path.name) as sink:
        sink.write(path.read_bytes())
    reader = UploadReader(objects, path.name, "local", {}, max_tensor_bytes=None, max_episodes=None)
    for _ in reader.steps():
        pass
    segment = SegmentRef.model_construct(content_hash=reader.content.hexdigest({}))
    return VersionRecord.model_construct(segments=[segment]).content_hash


def hashes(hub: Client, name: str) -> list[str | None]:
    return [version.content_hash for version in hub.datasets.get(name).record.versions]


def jobs_of(hub: Client, dataset: str, kind: str = "ingest") -> list[Any]:
    listed = hub.jobs.list(kind=kind, everyone=True, limit=1000).items
    return [job for job in listed if job.params.get("dataset") == dataset]


def wait_for_no_live_jobs(hub: Client, timeout_s: float = 120) -> float:
    """Seconds until no job is queued or running (the metrics jobs that follow each ingest included)."""
    started = time.monotonic()
    while True:
        live = [job for status in (JobStatus.queued, JobStatus.running)
                for job in hub.jobs.list(status=status, everyone=True, limit=1000).items]
        if not live:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"jobs still live after {timeout_s:.0f} s: "
                                 f"{[(job.kind.value, job.id, job.status.value, job.progress) for job in live]}")
        time.sleep(0.5)


def job_record(stack: Stack, job_id: str) -> dict[str, Any]:
    """The catalog's record of a job: its status, attempts, lost attempts and worker (``host:pid``)."""
    return json.loads(stack.exec("api", "python3", "-c", JOB_RECORD, job_id).stdout.strip().splitlines()[-1])


def queue_depth(stack: Stack, timeout_s: float = 30) -> int:
    """Jobs in Redis's queue, asked as soon as Redis answers (it may be loading its append-only file)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = stack.exec("redis", "redis-cli", "zcard", QUEUE, check=False)
        if answer.returncode == 0 and answer.stdout.strip().isdigit():
            return int(answer.stdout.strip())
        if time.monotonic() > deadline:
            raise AssertionError(f"redis did not answer in {timeout_s:.0f} s: {answer.stdout} {answer.stderr}")
        time.sleep(0.5)


# --- the faults ---------------------------------------------------------------------------------

def test_an_upload_outlives_an_api_replica_killed_mid_upload(stack: Stack, hub: tuple[Client, list[str]],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every part asks an API replica for its URL (one URL per request), so after the kill the client's
    requests keep meeting the proxy's rotation with a dead replica in it; right after the kill the client
    also creates datasets, POSTs that must be neither lost nor sent twice (a second one answers 409)."""
    client, lines = hub
    path = write_upload(tmp_path / "kill-api.parquet", episodes=40, length=1_500, obs_dim=64, act_dim=8, seed=31)
    parts = -(-path.stat().st_size // PART)
    assert parts >= 6, parts
    expected = local_content_hash(path, tmp_path)
    kill_at, killed, after_kill, side = 3, [], [], []
    original = client_parts.PresignedURLs.get

    def presign(self: client_parts.PresignedURLs, number: int) -> str:
        if number == kill_at and not killed:
            killed.append(stack.containers("api")[0])
            podman("kill", "--signal", "KILL", killed[0])
            side.extend(client.datasets.create(f"faults-kill-api-side-{i}").name for i in range(4))
        asked = time.monotonic()
        url = original(self, number)
        if killed:
            after_kill.append(time.monotonic() - asked)
        return url

    monkeypatch.setattr(client_parts, "PRESIGN_BATCH", 1)
    monkeypatch.setattr(client_parts.PresignedURLs, "get", presign)
    with logs_on_failure(stack, "api", "proxy"):
        dataset = client.datasets.create("faults-kill-api")
        started = time.monotonic()
        job = dataset.upload(path, part_size=PART, parallel=2, progress=False)
        uploaded = time.monotonic() - started
        job.wait(timeout=JOB_TIMEOUT_S, progress=False)
        assert killed, "the upload ended before the replica was killed"
        assert hashes(client, dataset.name) == [expected]  # one version, the local file's content
        assert [j.id for j in jobs_of(client, dataset.name)] == [job.id]
        assert [client.datasets.get(name).latest_version for name in side] == [None] * 4
        restarted = "restarted by podman" if killed[0] in stack.containers("api") else "left stopped"
        back = stack.up("--no-recreate", *SCALE_ARGS) + stack.wait_healthy(**SCALE)
        for _ in range(10):  # both replicas answer through the proxy again
            client.whoami()
    figure(f"kill api: SIGKILL {killed[0]} before part {kill_at} of {parts} ({path.stat().st_size / 2**20:.0f} MiB); "
           f"upload {uploaded:.1f} s, presigning after the kill {max(after_kill):.2f} s at most; client retries "
           f"{len(lines)} {lines}; the killed replica was {restarted}, back and healthy in {back:.1f} s")


def test_an_ingest_outlives_its_worker_killed_mid_run(stack: Stack, hub: tuple[Client, list[str]],
                                                      tmp_path: Path) -> None:
    """Many short episodes make a slow ingest (each is a catalog document); the worker running it is
    killed as soon as the job is running, and the other one runs the job again (the attempt counted as
    lost, not handed back: the killed worker could not say anything)."""
    client, lines = hub
    path = write_upload(tmp_path / "kill-worker.parquet", episodes=400, length=10, obs_dim=4, act_dim=2, seed=32)
    expected = local_content_hash(path, tmp_path)
    with logs_on_failure(stack, "worker"):
        dataset = client.datasets.create("faults-kill-worker")
        job = dataset.upload(path, progress=False)
        started, deadline = time.monotonic(), time.monotonic() + 60
        while job.status != JobStatus.running:
            assert not job.status.finished, f"the ingest ended before a worker could be killed: {job.record}"
            assert time.monotonic() < deadline, f"the ingest did not start in 60 s: {job.record}"
            time.sleep(0.2)
            job.refresh()
        running = job_record(stack, job.id)
        assert running["status"] == "running", running
        host = running["worker"].partition(":")[0]
        victim = next(name for name in stack.containers("worker") if stack.hostname(name) == host)
        progress = job.record.progress
        podman("kill", "--signal", "KILL", victim)
        killed_at = time.monotonic()
        job.wait(timeout=JOB_TIMEOUT_S, progress=False)
        rerun = time.monotonic() - killed_at
        record = job_record(stack, job.id)
        assert (record["attempts"], record["lost"]) == (running["attempts"] + 1, 1), record
        assert record["worker"].partition(":")[0] != host
        assert hashes(client, dataset.name) == [expected]
        assert [j.id for j in jobs_of(client, dataset.name)] == [job.id]
        settled = wait_for_no_live_jobs(client)
        back = stack.up("--no-recreate", *SCALE_ARGS) + stack.wait_healthy(**SCALE)
    figure(f"kill worker: SIGKILL {victim} {killed_at - started:.1f} s after the upload ({progress.stage} "
           f"{progress.fraction:.0%}: {progress.message}); the other worker finished it {rerun:.1f} s later "
           f"(attempts {record['attempts']}, lost {record['lost']}); no live job {settled:.1f} s after; worker back "
           f"and healthy in {back:.1f} s; client retries {len(lines)}")


def test_queued_jobs_and_stored_data_outlive_a_stack_restart(stack: Stack, hub: tuple[Client, list[str]],
                                                             tmp_path: Path) -> None:
    """Workers stopped, three uploads completed (their ingests queued), then everything but the
    in-memory stand-ins stopped and started again; a client waits for the jobs all along."""
    client, lines = hub
    before = {summary.name: hashes(client, summary.name) for summary in client.datasets.list(limit=1000).items}
    paths = [write_upload(tmp_path / f"restart-{i}.parquet", episodes=20, length=200, obs_dim=8, seed=40 + i)
             for i in range(3)]
    expected = [local_content_hash(path, tmp_path / path.stem) for path in paths]
    with logs_on_failure(stack, "api", "worker", "redis", "proxy"):
        stack.compose("stop", "worker")
        jobs = [client.datasets.create(f"faults-restart-{i}").upload(path, progress=False)
                for i, path in enumerate(paths)]
        assert [job.refresh().status for job in jobs] == [JobStatus.queued] * 3
        queued = queue_depth(stack)
        waits: list[BaseException | Job] = []

        def wait(job: Job) -> None:
            try:
                waits.append(job.wait(timeout=JOB_TIMEOUT_S, progress=False))
            except BaseException as exc:  # reported by the test
                waits.append(exc)

        waiter = threading.Thread(target=lambda: [wait(job) for job in jobs], daemon=True)
        waiter.start()
        started = time.monotonic()
        stack.compose("stop", "proxy", "api", "redis")
        stopped = time.monotonic() - started
        stack.up("--no-recreate", "redis")
        kept = queue_depth(stack)
        stack.up("--no-recreate", *SCALE_ARGS)
        healthy = stack.wait_healthy(**SCALE) + time.monotonic() - started
        waiter.join(timeout=JOB_TIMEOUT_S + 30)
        assert not waiter.is_alive()
        assert all(isinstance(done, Job) for done in waits), waits
        finished = time.monotonic() - started
        assert kept == queued >= 3, (queued, kept)
        for i, job in enumerate(jobs):
            assert hashes(client, f"faults-restart-{i}") == [expected[i]]
            assert [j.id for j in jobs_of(client, f"faults-restart-{i}")] == [job.id]
        assert {name: hashes(client, name) for name in before} == before
        settled = wait_for_no_live_jobs(client)
    figure(f"restart: stopped workers, queued 3 ingests ({queued} in Redis), stopped proxy/api/redis in "
           f"{stopped:.1f} s; Redis kept {kept}; stack healthy {healthy:.1f} s and every job done {finished:.1f} s "
           f"after the stop; {len(before)} datasets' hashes unchanged; no live job {settled:.1f} s after; "
           f"client retries {len(lines)}")


def running_on(stack: Stack, job: Job, *, other_than: set[str], timeout_s: float = 60) -> str | None:
    """The host name of the worker running ``job``, once one not in ``other_than`` runs it; None if the
    job has finished."""
    deadline = time.monotonic() + timeout_s
    while not job.refresh().status.finished:
        if job.status == JobStatus.running:
            record = job_record(stack, job.id)
            host = (record["worker"] or "").partition(":")[0]
            if record["status"] == "running" and host and host not in other_than:
                return host
        assert time.monotonic() < deadline, f"no new worker ran {job.id} in {timeout_s:.0f} s: {job.record}"
        time.sleep(0.3)
    return None


def test_a_rolling_restart_loses_no_request_and_no_job(stack: Stack, hub: tuple[Client, list[str]],
                                                       tmp_path: Path) -> None:
    """Each API replica, then each worker, stopped with SIGTERM (compose's stop_grace_period is the
    container's stop timeout) and started again once the one before is healthy, while a client uploads,
    waits for the ingest and exports in a loop and another thread keeps creating datasets (POSTs that
    must not be sent twice). Each worker is stopped while it runs a slower ingest where it can: it
    hands the job back, and the other worker runs it again, not counted as lost."""
    client, lines = hub
    stop, deadline = threading.Event(), time.monotonic() + 300
    made: list[tuple[str, str, dict[str, np.ndarray]]] = []  # dataset, ingest job, the arrays sent
    created: list[str] = []
    failures: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                arrays = episode_arrays(episodes=40, length=200, obs_dim=16, seed=50 + len(made))
                dataset = client.datasets.create(f"faults-rolling-{len(made)}")
                job = dataset.upload(arrays, part_size=PART, compression=None, progress=False)
                job.wait(timeout=JOB_TIMEOUT_S, progress=False)
                out = dataset.export().to_numpy()
                for column in ("episode_id", "observation", "action", "reward"):
                    np.testing.assert_array_equal(out[column], arrays[column], err_msg=column)
                made.append((dataset.name, job.id, arrays))
        except BaseException as exc:  # the test reports it
            failures.append(exc)

    def create() -> None:
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                created.append(client.datasets.create(f"faults-rolling-empty-{len(created)}").name)
                time.sleep(0.2)
        except BaseException as exc:  # the test reports it
            failures.append(exc)

    def restart(name: str) -> str:
        grace = podman("inspect", "--format", "{{.Config.StopTimeout}}", name).stdout.strip()
        assert grace == "40", grace  # compose's stop_grace_period, longer than the drain
        during, t0 = len(made) + len(created), time.monotonic()
        podman("stop", name, timeout=120)
        drained = time.monotonic() - t0
        podman("start", name)
        back = stack.wait_healthy(**SCALE)
        assert not failures, failures
        return (f"{name}: stopped in {drained:.1f} s, healthy {back:.1f} s later, "
                f"{len(made) + len(created) - during} requests' worth of work meanwhile")

    # 1,500 short episodes: an ingest of 10 s or more on the tier's catalog, so each worker can be seen
    # running it before it ends (300 took about 4 s, and CI once saw it end before a worker was stopped).
    slow_path = write_upload(tmp_path / "handed-back.parquet", episodes=1_500, length=4, obs_dim=4, act_dim=2,
                             seed=60)
    slow_hash = local_content_hash(slow_path, tmp_path / "handed-back")
    restarts: list[str] = []
    handed: list[str] = []  # hosts of the workers stopped while they ran the slow ingest
    with logs_on_failure(stack, "api", "worker", "proxy"):
        threads = [threading.Thread(target=target, daemon=True) for target in (load, create)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            for name in stack.containers("api"):
                restarts.append(restart(name))
            slow = client.datasets.create("faults-rolling-handed-back").upload(slow_path, progress=False)
            left = stack.containers("worker")
            while left:
                host = running_on(stack, slow, other_than=set(handed))
                name = next((n for n in left if stack.hostname(n) == host), left[0])
                if host is not None and stack.hostname(name) == host:
                    handed.append(host)
                restarts.append(restart(name))
                left.remove(name)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=JOB_TIMEOUT_S + 60)
        rolled = time.monotonic() - started
        assert not any(thread.is_alive() for thread in threads)
        assert not failures, failures
        assert len(made) >= 3, made
        slow.wait(timeout=JOB_TIMEOUT_S, progress=False)
        record = job_record(stack, slow.id)
        assert handed, "no worker was stopped while it ran the slow ingest"
        assert (record["attempts"], record["lost"]) == (len(handed) + 1, 0), (record, handed)
        assert hashes(client, "faults-rolling-handed-back") == [slow_hash]
        assert [j.id for j in jobs_of(client, "faults-rolling-handed-back")] == [slow.id]
        handed_back = 0
        for name, job_id, arrays in made:
            path = tmp_path / f"{name}.parquet"
            pq.write_table(table_from_arrays(arrays), path, compression="none")
            assert hashes(client, name) == [local_content_hash(path, tmp_path / name)], name
            ingests = jobs_of(client, name)
            assert [(j.id, j.status) for j in ingests] == [(job_id, JobStatus.succeeded)], name
            exports = jobs_of(client, name, "export")
            assert [j.status for j in exports] == [JobStatus.succeeded], name
            handed_back += sum(j.attempts - 1 for j in [*ingests, *exports])
        assert len(set(created)) == len(created) >= 20
        assert all(client.datasets.get(name).latest_version is None for name in created[:: max(1, len(created) // 10)])
        settled = wait_for_no_live_jobs(client)
    figure(f"rolling restart in {rolled:.1f} s: " + "; ".join(restarts))
    figure(f"rolling restart: {len(made)} upload→ingest→export round trips and {len(created)} dataset creations, "
           f"none failed; the slow ingest handed back {len(handed)} times (attempts {record['attempts']}, lost "
           f"{record['lost']}), the loop's jobs {handed_back} times; no live job {settled:.1f} s after; client "
           f"retries {len(lines)} {lines}")
