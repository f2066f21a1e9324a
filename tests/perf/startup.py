"""Wall time of the CLI commands people type most, against ``python -c pass`` in the same run.

Each command runs as a fresh process (the console script), ``--runs`` times; the median is shown,
with the minimum (the least disturbed run on a shared machine) and the import time of
``tuplehub.client.cli`` alone. ``datasets list`` and ``jobs list`` talk to a ``tuplehub serve`` this
script starts in a temporary folder (and stops).

    python tests/perf/startup.py            # 7 runs each
    python tests/perf/startup.py --runs 15
    python tests/perf/startup.py --baseline /path/to/old/checkout/.venv/bin/tuplehub   # also an older build
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from roundtrip import start_server

BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", help="Another build's tuplehub console script, timed alike.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuplehub-startup-") as folder:
        server, url = start_server(Path(folder) / "data")
        try:
            env = {**os.environ, "TUPLEHUB_URL": url, "TUPLEHUB_DATA_DIR": str(Path(folder) / "data")}
            cases = {"python -c pass (reference)": [sys.executable, "-c", "pass"],
                     "python -c 'import tuplehub.client.cli'": [sys.executable, "-c", "import tuplehub.client.cli"]}
            for label, tuplehub in (("", str(BIN / "tuplehub")), ("baseline: ", args.baseline)):
                if tuplehub:
                    cases.update({f"{label}tuplehub --help": [tuplehub, "--help"],
                                  f"{label}tuplehub datasets list": [tuplehub, "datasets", "list"],
                                  f"{label}tuplehub jobs list": [tuplehub, "jobs", "list"]})
            print(f"{'command':<40} {'median s':>9} {'min s':>7}   ({args.runs} runs; load {os.getloadavg()[0]:.2f})")
            for label, command in cases.items():
                times = timed(command, env, args.runs)
                print(f"{label:<40} {statistics.median(times):9.3f} {min(times):7.3f}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
