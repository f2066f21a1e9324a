"""One fitted-Q Adam step with 1 and 2 torch threads, on an idle machine and beside a CPU burner process.

    python tests/perf/torch_threads.py [--steps 300] [--batch 256]

The step is FQE's: a 2x256 ReLU MLP on obs 17 + act 6 inputs, a TD target from a second network, MSE,
backward and Adam, as ``workers/metrics/fqe.py`` trains it. The burner stands for what shares the cores
in the embedded server: the API, another job. Each figure is the mean step time (what a job's length
follows; a spinning thread shows as a long tail) and the median, each configuration in its own fresh
process (``--one``), so one thread pool never carries into the next. The last line is what
``TUPLEHUB_METRICS_THREADS`` defaults to here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BURN = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def step_times(threads: int, steps: int, batch: int) -> list[float]:
    import torch

    from tuplehub.workers.metrics.fqe import _mlp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, target = _mlp(23, (256, 256), 1), _mlp(23, (256, 256), 1).requires_grad_(False)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-4)
    states, after, reward = torch.randn(batch, 23), torch.randn(batch, 23), torch.randn(batch)
    times = []
    for step in range(steps + 20):  # 20 warm-up steps, not timed
        started = time.perf_counter()
        with torch.no_grad():
            goal = reward + 0.99 * target(after).squeeze(1)
        loss = torch.nn.functional.mse_loss(net(states).squeeze(1), goal)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step >= 20:
            times.append(time.perf_counter() - started)
    return times


def measure(threads: int, steps: int, batch: int, *, burner: bool) -> str:
    """Mean and median milliseconds per step in a fresh process, with a burner process beside it if asked."""
    spinning = subprocess.Popen([sys.executable, "-c", BURN]) if burner else None
    try:
        out = subprocess.run([sys.executable, __file__, "--one", str(threads), "--steps", str(steps), "--batch",
                              str(batch)], capture_output=True, text=True, check=True, timeout=600)
    finally:
        if spinning is not None:
            spinning.kill()
            spinning.wait(timeout=10)
    figures = json.loads(out.stdout)
    return f"{figures['mean_ms']} ({figures['median_ms']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        times = step_times(args.one, args.steps, args.batch)
        print(json.dumps({"mean_ms": round(1000 * statistics.fmean(times), 2),
                          "median_ms": round(1000 * statistics.median(times), 2)}))
        return
    from tuplehub.storage.settings import Settings, available_cpus

    print(f"{available_cpus()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| torch threads | idle: ms per Adam step, mean (median) | beside a CPU burner |")
    print("|---|---|---|")
    for threads in (1, 2):
        idle = measure(threads, args.steps, args.batch, burner=False)
        loaded = measure(threads, args.steps, args.batch, burner=True)
        print(f"| {threads} | {idle} | {loaded} |")
    print(f"TUPLEHUB_METRICS_THREADS defaults to {Settings(_env_file=None).metrics_threads} here "
          f"(CPUs / max_concurrent_jobs)")


if __name__ == "__main__":
    main()
