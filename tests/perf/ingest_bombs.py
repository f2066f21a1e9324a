"""Memory bombs an upload can be: what ingesting them costs, before and after the limits.

Two uploads from issue 11:

- *wide rows*: a tiny Parquet file (a few KB) of 8 rows whose observation is 16 M float32 zeros
  (64 MB a row once decoded; Parquet's run-length encoding hides it);
- *tiny episodes*: 2 M one-step episodes (2.5 MB of Parquet).

Each is ingested by the worker's own ``ingest`` job function, in a fresh child process with its
own embedded catalog and object folder, and the script prints the seconds, the child's peak RSS,
the data folder's size on disk and how the job ended. The reference is the same job run from the
code before the limits (``--before``, a git revision, extracted to a temporary folder and put
first on ``sys.path``), in the same run on the same files. Each upload is also ingested with its
limit raised (tensors to 1 GiB, episodes to all of them), to show what byte-sized batches and
bounded steps do on their own.

    nice python tests/perf/ingest_bombs.py                  # both uploads, before and after
    nice python tests/perf/ingest_bombs.py --only tiny --episodes 500000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
BEFORE = "82a7437"  # main when issue 11 was measured: no tensor or episode limits, 64-row batches
WIDE_ROWS, WIDE_ELEMENTS = 8, 16_000_000


def wide_rows(path: Path) -> None:
    obs = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(WIDE_ROWS * WIDE_ELEMENTS, np.float32)),
                                            WIDE_ELEMENTS)
    ends = np.arange(WIDE_ROWS) == WIDE_ROWS - 1
    pq.write_table(pa.table({
        "episode_id": np.zeros(WIDE_ROWS, np.int64), "observation": obs, "action": np.zeros(WIDE_ROWS, np.float32),
        "reward": np.zeros(WIDE_ROWS, np.float32), "terminated": ends, "truncated": np.zeros(WIDE_ROWS, bool),
    }), path, compression="zstd")


def tiny_episodes(path: Path, episodes: int) -> None:
    pq.write_table(pa.table({
        "episode_id": np.arange(episodes, dtype=np.int64), "observation": np.zeros(episodes, np.float32),
        "action": np.zeros(episodes, np.float32), "reward": np.zeros(episodes, np.float32),
        "terminated": np.ones(episodes, bool), "truncated": np.zeros(episodes, bool),
    }), path, compression="zstd")


async def ingest_once(upload: Path, folder: Path) -> dict[str, object]:
    """Stage ``upload`` as a completed upload session and run the ingest job on it, as a worker would."""
    from tuplehub.storage.catalog import open_catalog
    from tuplehub.storage.models import DatasetRecord, JobKind, JobRecord, UploadRecord, UploadStatus, utcnow
    from tuplehub.storage.objects import open_object_store
    from tuplehub.storage.settings import Settings
    from tuplehub.workers.context import WorkerContext
    from tuplehub.workers.jobs.ingest import ingest

    try:
        from tuplehub.workers.monitoring import WorkerMonitor

        monitor: dict[str, object] = {"monitor": WorkerMonitor()}
    except ImportError:  # the reference revision predates worker metrics
        monitor = {}
    settings = Settings(_env_file=None, data_dir=folder, redis_url="redis://unused", auto_metrics=False)
    catalog = await open_catalog(settings.resolved_catalog_url())
    objects = open_object_store(settings.resolved_objects_url())
    dataset = await catalog.create_dataset(DatasetRecord(name="bomb", owner="local"))
    session = UploadRecord(dataset_id=dataset.id, dataset=dataset.name, owner="local", mode="append",
                          part_size=2**20, status=UploadStatus.completed, object_key="uploads/bomb.parquet",
                          expires_at=utcnow() + timedelta(days=1))
    with objects.open_write(session.object_key) as sink:
        sink.write(await asyncio.to_thread(upload.read_bytes))
    await catalog.create_upload(session)
    job = await catalog.create_job(JobRecord(kind=JobKind.ingest, owner="local", params={
        "upload_id": session.id, "dataset_id": dataset.id, "dataset": dataset.name, "mode": "append"}))
    started = time.perf_counter()
    await ingest(WorkerContext(settings=settings, catalog=catalog, objects=objects, worker_id="perf",
                               **monitor), job.id)  # type: ignore[typeddict-item]
    seconds = time.perf_counter() - started
    done = await catalog.get_job(job.id)
    await catalog.aclose()
    return {"seconds": seconds, "status": str(done.status),
            "detail": done.error.detail if done.error is not None else done.result}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(upload: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tuplehub-bomb-") as folder:
        outcome = asyncio.run(ingest_once(upload, Path(folder)))
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    outcome["peak_rss_mb"] = peak_rss_mb()
    outcome["disk_mb"] = disk / 2**20
    print(json.dumps(outcome, default=str))


def measure(upload: Path, code: Path | None, **settings: str) -> dict[str, object]:
    env = dict(os.environ) | settings
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, "--child", str(upload)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        return {"status": f"crashed ({done.returncode})", "detail": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract(revision: str, folder: Path) -> Path:
    """The package as it was at ``revision``, importable as ``tuplehub`` from the returned folder."""
    package = folder / "tuplehub"
    package.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "api", "client", "storage", "workers"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(package)], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["wide", "tiny"])
    parser.add_argument("--episodes", type=int, default=2_000_000, help="Episodes of the tiny-episode upload.")
    parser.add_argument("--before", default=BEFORE, help="Git revision measured as the reference.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="tuplehub-bombs-") as tmp:
        folder = Path(tmp)
        before = extract(args.before, folder / "before")
        uploads = {"wide": folder / "wide.parquet", "tiny": folder / "tiny.parquet"}
        wide_rows(uploads["wide"])
        tiny_episodes(uploads["tiny"], args.episodes)
        for name, upload in uploads.items():
            if args.only and name != args.only:
                continue
            print(f"\n{name}: {upload.stat().st_size / 2**10:,.0f} KiB of Parquet")
            runs = [(f"before ({args.before})", before, {}), ("after", None, {})]
            # What byte-sized batches and bounded steps do on their own, with the limit out of the way.
            if name == "wide":
                runs.append(("after, limit 1 GiB", None, {"TUPLEHUB_MAX_TENSOR_BYTES": str(2**30)}))
            else:
                runs.append((f"after, limit {args.episodes:,}", None,
                             {"TUPLEHUB_MAX_UPLOAD_EPISODES": str(args.episodes)}))
            for label, code, settings in runs:
                m = measure(upload, code, **settings)
                figures = (f"{m['seconds']:7.2f} s  {m['peak_rss_mb']:6.0f} MB peak RSS  {m['disk_mb']:6.0f} MB disk"
                           if "seconds" in m else "")
                print(f"  {label:<24} {figures}  {m['status']}: {str(m['detail'])[:160]}", flush=True)

if __name__ == "__main__":
    main()
