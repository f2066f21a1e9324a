"""Upload -> ingest -> export round trips on datasets shaped like Table 1 of the PyTupli paper.

For each shape this starts a fresh embedded server process (``tuplehub serve``), then measures,
over HTTP on loopback:

- seconds from upload start to the ingest job's success (the client writes Parquet and sends parts),
- seconds from export request to numpy arrays in hand, for all tuples and for a tuple filter that
  keeps about 10% (reward below its 10th percentile),
- the server process's peak RSS (VmHWM) over the whole run,
- and, in the same run on the same table, plain pyarrow Parquet write + read (defaults, vectors as
  FixedSizeList, read back into numpy) as the physical reference.

    python tests/perf/roundtrip.py                       # every shape
    python tests/perf/roundtrip.py --shapes antmaze-medium,ant-expert --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tuplehub.client import Client, F
from tuplehub.client.discovery import embedded_credentials


@dataclass(frozen=True)
class Shape:
    name: str
    episodes: int
    transitions: int
    obs_dim: int
    act_dim: int


SHAPES = [
    Shape("door-human", 25, 7_000, 39, 28),
    Shape("hammer-human", 25, 11_000, 46, 26),
    Shape("antmaze-medium", 1_000, 1_000_000, 29, 8),
    Shape("ant-expert", 2_000, 2_000_000, 105, 8),
    Shape("humanoid-expert", 1_000, 1_000_000, 348, 17),
]


def synthetic(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
    """Smooth random walks (float32) per episode, so compression is not trivial; lengths mean +-20%."""
    rng = np.random.default_rng(seed)
    mean = shape.transitions / shape.episodes
    lengths = rng.uniform(0.8 * mean, 1.2 * mean, shape.episodes)
    lengths = np.maximum(1, np.round(lengths * shape.transitions / lengths.sum())).astype(np.int64)
    lengths[-1] += shape.transitions - lengths.sum()
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    episode = np.repeat(np.arange(shape.episodes), lengths)

    def walk(dim: int) -> np.ndarray:
        scales = rng.lognormal(0.0, 1.0, dim).astype(np.float32)
        steps = rng.standard_normal((n, dim), dtype=np.float32) * (0.05 * scales)
        values = np.cumsum(steps, axis=0, dtype=np.float32)
        values -= np.repeat(values[starts], lengths, axis=0)  # each episode starts near 0
        return values

    observation = walk(shape.obs_dim)
    action = np.tanh(walk(shape.act_dim))
    reward = walk(1)[:, 0]
    last = np.zeros(n, dtype=bool)
    last[np.cumsum(lengths) - 1] = True
    terminated_episode = rng.random(shape.episodes) < 0.3
    terminated = last & terminated_episode[episode]
    return {"episode_id": episode, "observation": observation, "action": action, "reward": reward,
            "terminated": terminated, "truncated": last & ~terminated}


def pyarrow_reference(arrays: dict[str, np.ndarray], folder: Path) -> tuple[float, float]:
    """Plain pyarrow: Parquet write with defaults (FixedSizeList vectors), read back into numpy."""
    columns = {}
    for name, values in arrays.items():
        columns[name] = (pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
                         if values.ndim == 2 else pa.array(values))
    table = pa.table(columns)
    path = folder / "reference.parquet"
    started = time.perf_counter()
    pq.write_table(table, path)
    written = time.perf_counter()
    back = pq.read_table(path)
    out = {}
    for name in arrays:
        column = back.column(name)
        if pa.types.is_fixed_size_list(column.type):
            out[name] = np.concatenate([c.flatten().to_numpy() for c in column.chunks]).reshape(len(back), -1)
        else:
            out[name] = column.to_numpy()
    read = time.perf_counter()
    assert np.array_equal(out["observation"], arrays["observation"])
    path.unlink()
    return written - started, read - written


def start_server(folder: Path, *, auto_metrics: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """``tuplehub serve`` in a fresh folder; its URL. Without ``auto_metrics`` (what ``metrics_job.py``
    measures), so the metrics job after the ingest does not share the two cores with the exports."""
    # Its local admin's credentials go to a config folder of this run, not the user's.
    os.environ["TUPLEHUB_CONFIG_DIR"] = str(folder.parent / "config")
    env = {**os.environ, "TUPLEHUB_DATA_DIR": str(folder), "TUPLEHUB_AUTO_METRICS": str(auto_metrics).lower()}
    for name in ("TUPLEHUB_URL", "TUPLEHUB_CATALOG_URL", "TUPLEHUB_OBJECTS_URL", "TUPLEHUB_REDIS_URL"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "tuplehub.client.cli", "serve", "--port", "0"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    announce = folder / "server.json"
    for _ in range(600):
        if announce.exists():
            return process, json.loads(announce.read_text())["url"]
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 60 s")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(shape: Shape) -> dict[str, float | str]:
    arrays = synthetic(shape)
    raw_mb = sum(a.nbytes for a in arrays.values()) / 1e6
    with tempfile.TemporaryDirectory(prefix="tuplehub-perf-") as tmp:
        folder = Path(tmp)
        ref_write, ref_read = pyarrow_reference(arrays, folder)
        process, url = start_server(folder / "server")
        try:
            with Client(url, timeout=600) as hub:
                hub.login(*embedded_credentials(url, folder / "server"), remember=False)
                dataset = hub.datasets.create(shape.name)
                started = time.perf_counter()
                dataset.upload(arrays).wait(progress=False)
                ingest = time.perf_counter() - started

                started = time.perf_counter()
                full = dataset.export().to_numpy()
                export_all = time.perf_counter() - started
                assert np.array_equal(full["observation"], arrays["observation"])

                threshold = float(np.quantile(arrays["reward"], 0.1))
                started = time.perf_counter()
                kept = dataset.export(where=F.reward < threshold).to_numpy()
                export_10 = time.perf_counter() - started
                assert len(kept["reward"]) == int((arrays["reward"] < threshold).sum())
            rss = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    roundtrip = ingest + export_all
    reference = ref_write + ref_read
    return {"shape": shape.name, "episodes": shape.episodes, "transitions": shape.transitions,
            "raw_mb": round(raw_mb, 1), "upload_to_ingested_s": round(ingest, 2),
            "export_all_to_numpy_s": round(export_all, 2), "export_10pct_to_numpy_s": round(export_10, 2),
            "server_peak_rss_mb": round(rss), "pyarrow_write_s": round(ref_write, 2),
            "pyarrow_read_s": round(ref_read, 2), "roundtrip_over_pyarrow": round(roundtrip / reference, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES),
                        help="comma-separated shape names: " + ", ".join(s.name for s in SHAPES))
    parser.add_argument("--json", action="store_true", help="print one JSON object per shape")
    args = parser.parse_args()
    by_name = {shape.name: shape for shape in SHAPES}
    unknown = [name for name in args.shapes.split(",") if name not in by_name]
    if unknown:
        parser.error(f"unknown shapes {unknown}")
    rows = []
    for name in args.shapes.split(","):
        row = measure(by_name[name])
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if not args.json:
        print()
        print(markdown(rows))


def markdown(rows: list[dict[str, float | str]]) -> str:
    headers = ["shape", "raw MB", "upload→ingested s", "export all→numpy s", "export 10%→numpy s",
               "server peak RSS MB", "pyarrow write+read s", "round trip / pyarrow"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['raw_mb']} | {r['upload_to_ingested_s']} | {r['export_all_to_numpy_s']} | "
                     f"{r['export_10pct_to_numpy_s']} | {r['server_peak_rss_mb']} | "
                     f"{r['pyarrow_write_s']} + {r['pyarrow_read_s']} | {r['roundtrip_over_pyarrow']}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
