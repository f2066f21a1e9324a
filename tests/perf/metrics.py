"""Time and peak memory of each dataset-quality metric on the ant-expert shape (2 M rows, obs 105, act 8).

    python tests/perf/metrics.py [--rows 2000000] [--queries 20000]

Each metric runs in a fresh process (peak RSS is per process); prints one table row per metric.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

EPISODE_LENGTH = 1000
FQE_ROWS = 400_000  # the metrics job caps fitted Q evaluation at this many sampled transitions


def data(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    episodes = rows // EPISODE_LENGTH
    ids = np.repeat(np.arange(episodes), EPISODE_LENGTH)
    # States near a low-dimensional manifold, as a robot's are: 8 latent factors seen through 105 sensors.
    latent = rng.normal(size=(rows, 8)).astype(np.float32)
    observation = latent @ rng.normal(size=(8, 105)).astype(np.float32)
    action = np.tanh(latent @ rng.normal(size=(8, 8)).astype(np.float32))
    reward = rng.normal(loc=3.0, size=rows).astype(np.float32)
    ends = np.zeros(rows, dtype=bool)
    ends[EPISODE_LENGTH - 1::EPISODE_LENGTH] = True
    return {"episode_id": ids, "observation": observation, "action": action, "reward": reward, "ends": ends}


def fqe_sample(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """A seeded sample of transitions, next observations shifted inside episodes (episode ends terminate)."""
    total = len(arrays["reward"])
    chosen = np.sort(np.random.default_rng(0).choice(total, size=min(rows, total), replace=False))
    ends = arrays["ends"][chosen]
    following = np.where(ends, chosen, np.minimum(chosen + 1, total - 1))
    return {"observation": arrays["observation"][chosen], "action": arrays["action"][chosen],
            "reward": arrays["reward"][chosen], "next_observation": arrays["observation"][following],
            "terminated": ends, "initial": chosen % EPISODE_LENGTH == 0}


def run(metric: str, rows: int, queries: int) -> dict[str, object]:
    from tuplehub.workers.metrics import coverage, entropy, quality, returns
    from tuplehub.workers.metrics.episodes import episode_returns

    arrays = data(rows)
    started = time.perf_counter()
    if metric == "returns":
        never = np.zeros_like(arrays["ends"])
        result = returns.return_statistics(arrays["episode_id"], arrays["reward"], arrays["ends"], never)
    elif metric == "trajectory_quality":
        result = quality.trajectory_quality(episode_returns(arrays["episode_id"], arrays["reward"]),
                                            random_return=0.0, expert_return=6000.0)
    elif metric == "return_improvement":
        result = quality.estimated_return_improvement(episode_returns(arrays["episode_id"], arrays["reward"]))
    elif metric == "coverage":
        # A frozen 6-d projection (the first 6 observation sensors) and 2 action dimensions, 20 bins each.
        features = np.column_stack([arrays["observation"][:, :6], arrays["action"][:, :2]])
        cells, _ = coverage.quantise(features, [-30.0] * 6 + [-1.0] * 2, [30.0] * 6 + [1.0] * 2, 20)
        result = coverage.state_action_coverage(cells)
    elif metric == "average_q":
        from tuplehub.workers.metrics import fqe

        sample = fqe_sample(arrays, FQE_ROWS)
        arrays.clear()  # the full data is no longer needed: free it before torch allocates its copy
        from tuplehub.storage.settings import Settings

        # The threads a worker would use here (TUPLEHUB_METRICS_THREADS, by default one job's share of the CPUs).
        result = fqe.average_q_value(sample["observation"], sample["action"], sample["reward"],
                                     sample["next_observation"], sample["terminated"], initial=sample["initial"],
                                     threads=Settings(_env_file=None).metrics_threads)
    elif metric == "shannon_entropy":
        result = entropy.shannon_entropy(arrays["observation"][:1_000_000, :16], queries=queries)
    else:
        result = entropy.behavioral_entropy(arrays["observation"][:1_000_000, :16], alpha=0.5, queries=queries)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"metric": metric, "seconds": round(seconds, 2), "peak_mb": round(peak), "value": result.value,
            "interval": [result.ci_low, result.ci_high], "rows_used": result.n_rows_used,
            "queried": result.details.get("queried"), "threads": result.details.get("threads"),
            "per_seed": result.details.get("per_seed"), "warnings": result.warnings}


METRICS = ["returns", "trajectory_quality", "return_improvement", "coverage", "shannon_entropy", "behavioral_entropy",
           "average_q"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one, args.rows, args.queries)))
        return
    print("| metric | seconds | peak MB | value | interval | queried |")
    print("|---|---|---|---|---|---|")
    for metric in METRICS:
        out = subprocess.run([sys.executable, __file__, "--one", metric, "--rows", str(args.rows), "--queries",
                              str(args.queries)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        print(f"| {row['metric']} | {row['seconds']} | {row['peak_mb']} | {row['value']:.4g} | {row['interval']} | "
              f"{row['queried']} |")


if __name__ == "__main__":
    main()
