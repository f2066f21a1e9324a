"""The ``metrics`` job end to end on a stored version shaped like ant-expert (2 M rows, obs 105, act 8).

Starts a fresh embedded server (``tuplehub serve``), uploads the data, then measures:

- the cheap metrics job that follows the ingest (returns, return improvement, coverage, with the
  benchmark's frame frozen on the way), from ingest success to job success;
- a requested job with both kNN entropies on their default 500,000-row subsample;
- optionally (``--fqe``, needs torch) a job with the average Q-value on its 500,000-row subsample;
- the server process's peak RSS (VmHWM) after each job, API and worker together, ingest included.

    python tests/perf/metrics_job.py [--shape ant-expert] [--fqe]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from roundtrip import SHAPES, peak_rss_mb, start_server, synthetic

from tuplehub.client import Client
from tuplehub.client.discovery import embedded_credentials


def timed_job(hub: Client, dataset: str, metrics: list) -> tuple[float, dict]:
    started = time.perf_counter()
    job = hub.metrics.compute(dataset, metrics).wait(timeout=3600, progress=False)
    return time.perf_counter() - started, job.result or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="ant-expert", choices=[s.name for s in SHAPES])
    parser.add_argument("--fqe", action="store_true", help="also time the average Q-value (needs torch)")
    args = parser.parse_args()
    shape = next(s for s in SHAPES if s.name == args.shape)
    arrays = synthetic(shape)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuplehub-perf-") as tmp:
        folder = Path(tmp)
        process, url = start_server(folder / "server", auto_metrics=True)
        try:
            with Client(url, timeout=600) as hub:
                hub.login(*embedded_credentials(url, folder / "server"), remember=False)
                low, high = np.full(shape.obs_dim, -np.inf, np.float32), np.full(shape.obs_dim, np.inf, np.float32)
                env = gym.make("Pendulum-v1")  # any env: only the spaces matter for the frame
                env.observation_space = gym.spaces.Box(low, high)
                env.action_space = gym.spaces.Box(-1.0, 1.0, (shape.act_dim,), np.float32)
                benchmark = hub.benchmarks.create_from_env(env, name=f"{shape.name}-like")
                dataset = hub.datasets.create(shape.name, benchmark=benchmark.id)
                dataset.upload(arrays).wait(progress=False)
                ingested = time.perf_counter()
                auto = [j for j in hub.jobs.list(kind="metrics").items if j.params["dataset"] == shape.name]
                done = hub.jobs.get(auto[0].id).wait(timeout=3600, progress=False)
                seconds = (done.record.finished_at - done.record.started_at).total_seconds()
                rows.append(("cheap set after ingest", seconds, done.result, peak_rss_mb(process.pid)))
                print(f"after ingest: {time.perf_counter() - ingested:.1f} s to success", flush=True)
                seconds, result = timed_job(hub, shape.name, ["shannon_entropy", "behavioral_entropy"])
                rows.append(("kNN entropies (500 k rows)", seconds, result, peak_rss_mb(process.pid)))
                if args.fqe:
                    seconds, result = timed_job(hub, shape.name, ["average_q"])
                    rows.append(("average Q (500 k rows)", seconds, result, peak_rss_mb(process.pid)))
            rss = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"| job on {shape.name} ({shape.transitions} rows) | seconds | server peak RSS MB so far | computed |")
    print("|---|---|---|---|")
    for name, seconds, result, peak in rows:
        print(f"| {name} | {seconds:.1f} | {peak:.0f} | {', '.join(result.get('computed', []))} |")
    print(f"\nserver peak RSS (API + worker, ingest included): {rss:.0f} MB")


if __name__ == "__main__":
    main()
