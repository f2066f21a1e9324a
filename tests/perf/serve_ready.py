"""Time from ``tuplehub serve`` to a ready API (``/api/v1/health/ready`` answers 200).

Starts real ``tuplehub serve`` processes on a free port, on a fresh data folder and then again
on the same (existing) folder, several times each, and prints every run and the medians. For
reference it also times ``python -c pass`` in the same run, so figures from a busy machine can
be compared as ratios. ``--against PYTHON`` also times another checkout's interpreter (say the
main branch's ``.venv/bin/python``), interleaved run by run so both see the same load.

    python tests/perf/serve_ready.py [--runs 5] [--against /path/to/other/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.processes import free_port, isolated_env, start_serve, stop


def time_to_ready(data_dir: Path, python: str) -> float:
    port = free_port()
    started = time.perf_counter()
    process = start_serve(data_dir, port, env=isolated_env(data_dir.parent / "config"), python=python)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/health/ready"
        for _ in range(1200):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise SystemExit(f"tuplehub serve exited with {process.returncode}")
            time.sleep(0.025)
        raise SystemExit("tuplehub serve was not ready within 30 s")
    finally:
        stop(process)


def python_startup() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", help="another interpreter whose tuplehub to time as well")
    options = parser.parse_args()
    pythons = {"this checkout": sys.executable, **({options.against: options.against} if options.against else {})}
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(options.runs):
        for name, python in pythons.items():
            with tempfile.TemporaryDirectory(prefix="tuplehub-ready-") as folder:
                data_dir = Path(folder) / "data"
                figures.setdefault((name, "fresh data folder"), []).append(time_to_ready(data_dir, python))
                figures.setdefault((name, "existing data folder"), []).append(time_to_ready(data_dir, python))
    reference = statistics.median(python_startup() for _ in range(options.runs))
    print(f"python -c pass (reference): median {reference:.2f} s")
    for (name, case), runs in figures.items():
        print(f"{name}, {case}: median {statistics.median(runs):.2f} s  (runs: {', '.join(f'{s:.2f}' for s in runs)})")


if __name__ == "__main__":
    main()
