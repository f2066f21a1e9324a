"""The client's peak memory while it uploads Parquet files of growing size (issue 11, C14).

Starts one embedded server (``tuplehub serve``) in a fresh folder, writes Parquet files of about
the given sizes (random float32 tuples, uncompressed, so the bytes on the wire are the file's
size), and runs ``tuplehub upload DATASET FILE --no-wait`` for each in its own process, which
reports its own peak RSS (VmHWM) as it exits. Each ingest job is cancelled at once, so the server's
work does not share the cores with the next upload.

The reference, measured in the same run, is the peak RSS of a client process that only imports
what the upload command imports and exits: what is left is what the upload itself holds.
``--baseline-python`` also runs the same uploads with another checkout's interpreter (for
example the code before a change) for a before/after in one run.

    python tests/perf/upload_memory.py                           # 75, 230, 460 and 2000 MB
    python tests/perf/upload_memory.py --sizes 75,230 --baseline-python /path/to/old/.venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from roundtrip import start_server

from tuplehub.client import Client
from tuplehub.client.discovery import embedded_credentials

OBS_DIM = 64
ROWS_PER_GROUP = 100_000
EPISODE_LENGTH = 1_000
IMPORTS_ONLY = "import tuplehub.client.cli, tuplehub.client.datasets, tuplehub.client.uploads"
UPLOAD = "import sys; from tuplehub.client.cli import main; sys.argv[0] = 'tuplehub'; main()"


def write_file(path: Path, megabytes: int, seed: int = 0) -> int:
    """A Parquet file of about ``megabytes`` MB of tuples, written a row group at a time; its size."""
    row_bytes = 4 * OBS_DIM + 4 * 2 + 8 + 8 + 2
    rows = megabytes * 10**6 // row_bytes
    rng = np.random.default_rng(seed)
    schema = pa.schema([("episode_id", pa.int64()), ("observation", pa.list_(pa.float32(), OBS_DIM)),
                        ("action", pa.list_(pa.float32(), 2)), ("reward", pa.float64()),
                        ("terminated", pa.bool_()), ("truncated", pa.bool_())])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, rows, ROWS_PER_GROUP):
            n = min(ROWS_PER_GROUP, rows - start)
            index = np.arange(start, start + n)
            last = (index % EPISODE_LENGTH == EPISODE_LENGTH - 1) | (index == rows - 1)
            writer.write_table(pa.table({
                "episode_id": index // EPISODE_LENGTH,
                "observation": pa.FixedSizeListArray.from_arrays(
                    pa.array(rng.standard_normal(n * OBS_DIM, dtype=np.float32)), OBS_DIM),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-1, 1, n * 2).astype(np.float32)), 2),
                "reward": rng.standard_normal(n), "terminated": last, "truncated": np.zeros(n, dtype=bool)},
                schema=schema))
    return path.stat().st_size


# The process reports its own peak (VmHWM of its own memory map): a parent's ``wait4`` figure would
# also count the pages of the parent it was forked from.
REPORTING = """
import atexit, sys
def report(path=sys.argv.pop(1)):
    peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    open(path, "w").write(peak)
atexit.register(report)
exec(sys.argv.pop(1))
"""


def peak_rss_mb(python: str, code: str, args: list[str], env: dict[str, str], folder: Path) -> float:
    """Run ``code`` with ``args`` in a fresh ``python``; the peak resident memory of that process, in MB."""
    report = folder / "peak.txt"
    done = subprocess.run([python, "-c", REPORTING, str(report), code, *args], env=env, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed: {done.stderr.decode()[-2000:]}")
    return int(report.read_text()) / 1024  # kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="75,230,460,2000", help="comma-separated file sizes in MB")
    parser.add_argument("--baseline-python", help="also upload with this interpreter (another checkout)")
    args = parser.parse_args()
    pythons = {"this checkout": sys.executable}
    if args.baseline_python:
        pythons["baseline"] = args.baseline_python
    with tempfile.TemporaryDirectory(prefix="tuplehub-perf-upload-") as tmp:
        folder = Path(tmp)
        process, url = start_server(folder / "server")
        try:
            with Client(url, timeout=600) as hub:
                hub.login(*embedded_credentials(url, folder / "server"), remember=False)
                env = {**os.environ, "TUPLEHUB_URL": url, "TUPLEHUB_TOKEN": hub.tokens.create("perf").token,
                       "PYTHONDONTWRITEBYTECODE": "1"}  # leave the baseline checkout as it is
                print("reference (imports only): " + ", ".join(
                    f"{label} {peak_rss_mb(python, IMPORTS_ONLY, [], env, folder):.0f} MB"
                    for label, python in pythons.items()), flush=True)
                for megabytes in (int(size) for size in args.sizes.split(",")):
                    path = folder / f"tuples-{megabytes}.parquet"
                    size = write_file(path, megabytes)
                    figures = []
                    for label, python in pythons.items():
                        name = f"upload-{megabytes}-{len(figures)}"
                        hub.datasets.create(name)
                        rss = peak_rss_mb(python, UPLOAD, ["upload", name, str(path), "--no-wait"], env, folder)
                        for job in hub.jobs.list(kind="ingest", limit=5).items:
                            if not job.status.finished:
                                hub.jobs.get(job.id).cancel()
                        figures.append(f"{label} {rss:.0f} MB")
                    print(f"file {size / 1e6:.0f} MB: client peak RSS " + ", ".join(figures), flush=True)
                    path.unlink()
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
