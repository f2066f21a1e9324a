"""The ``metrics`` job end to end on a stored version shaped like ant-expert (2 M rows, obs 105, act 8).

Each job runs in a fresh embedded server (``tuplehub serve``, the automatic metrics after ingest
turned off so nothing else runs): upload the data, wait for the ingest, then time one job:

- the cheap set (returns, return improvement, coverage, freezing the benchmark's frame on the way:
  what runs after every ingest);
- both kNN entropies on their default 500,000-row subsample;
- with ``--fqe`` (needs torch), the average Q-value on its default 400,000-row subsample.

For each it prints the job's seconds and the server process's peak RSS (VmHWM; API, worker and
ingest included) after the ingest and after the job.

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
from roundtrip import SHAPES, Shape, peak_rss_mb, start_server, synthetic

from tuplehub.client import Client
from tuplehub.client.discovery import embedded_credentials

JOBS = {
    "cheap set (after every ingest)": ["returns", "return_improvement", "state_action_coverage"],
    "kNN entropies (500 k rows)": ["shannon_entropy", "behavioral_entropy"],
    "average Q (400 k rows, BC, 3 seeds)": ["average_q"],
}


def measure(shape: Shape, arrays: dict[str, np.ndarray], metrics: list[str]) -> tuple[float, float, float]:
    """(job seconds, peak RSS MB after the ingest, after the job) in a fresh server."""
    with tempfile.TemporaryDirectory(prefix="tuplehub-perf-") as tmp:
        folder = Path(tmp)
        process, url = start_server(folder / "server")
        try:
            with Client(url, timeout=600) as hub:
                hub.login(*embedded_credentials(url, folder / "server"), remember=False)
                env = gym.make("Pendulum-v1")  # only the spaces matter for the frame: unbounded, as MuJoCo's
                env.observation_space = gym.spaces.Box(-np.inf, np.inf, (shape.obs_dim,), np.float32)
                env.action_space = gym.spaces.Box(-1.0, 1.0, (shape.act_dim,), np.float32)
                benchmark = hub.benchmarks.create_from_env(env, name=f"{shape.name}-like")
                dataset = hub.datasets.create(shape.name, benchmark=benchmark.id)
                dataset.upload(arrays).wait(progress=False)
                after_ingest = peak_rss_mb(process.pid)
                started = time.perf_counter()
                hub.metrics.compute(shape.name, metrics).wait(timeout=3600, progress=False)
                seconds = time.perf_counter() - started
            return seconds, after_ingest, peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="ant-expert", choices=[s.name for s in SHAPES])
    parser.add_argument("--fqe", action="store_true", help="also time the average Q-value (needs torch)")
    args = parser.parse_args()
    shape = next(s for s in SHAPES if s.name == args.shape)
    arrays = synthetic(shape)
    print(f"| job on {shape.name} ({shape.transitions} rows) | seconds | server peak MB after ingest | "
          "after the job |")
    print("|---|---|---|---|")
    for name, metrics in JOBS.items():
        if metrics == ["average_q"] and not args.fqe:
            continue
        seconds, ingest, job = measure(shape, arrays, metrics)
        print(f"| {name} | {seconds:.1f} | {ingest:.0f} | {job:.0f} |", flush=True)


if __name__ == "__main__":
    main()
