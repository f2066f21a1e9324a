"""Time and size of ``tuplehub backup`` and ``tuplehub restore`` for one dataset, beside a running server.

Starts ``tuplehub serve`` on a fresh data folder, uploads a synthetic dataset (smooth random walks,
float32), then runs ``tuplehub backup`` as its own process while the server runs, ``tuplehub restore
--check`` and ``tuplehub restore`` into a new folder, and prints seconds and bytes for each, next to
the reference of the same run: ``cp -r`` of the data folder (the bytes a plain copy moves).

    python tests/perf/backup.py                       # 100 episodes, 100,000 transitions
    python tests/perf/backup.py --transitions 1000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.processes import cli, embedded_client, free_port, isolated_env, start_serve, stop, wait_for_server


def synthetic(episodes: int, transitions: int, obs_dim: int, act_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    length = transitions // episodes
    ids = np.repeat(np.arange(episodes), length)
    steps = np.tile(np.arange(length), episodes)
    last = steps == length - 1
    return {"episode_id": ids, "step": steps,
            "observation": np.cumsum(rng.normal(0, 0.1, (ids.size, obs_dim)), axis=0).astype(np.float32),
            "action": rng.uniform(-1, 1, (ids.size, act_dim)).astype(np.float32),
            "reward": rng.normal(0, 1, ids.size).astype(np.float32),
            "terminated": last & (ids % 2 == 0), "truncated": last & (ids % 2 == 1)}


def _timed(*args: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(cli(*args, "--json"), env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise SystemExit(f"tuplehub {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return time.perf_counter() - started, json.loads(done.stdout)


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--obs-dim", type=int, default=29)
    parser.add_argument("--act-dim", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON document.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuplehub-perf-backup-") as scratch:
        root = Path(scratch)
        env = isolated_env(root / "config")
        data, log = root / "data", root / "serve.log"
        server = start_serve(data, free_port(), env=env, log=log)
        try:
            wait_for_server(data, server, log)
            with embedded_client(data, env) as hub:
                arrays = synthetic(options.episodes, options.transitions, options.obs_dim, options.act_dim)
                hub.datasets.create("perf").upload(arrays, progress=False).wait(timeout=600, progress=False)
            started = time.perf_counter()
            shutil.copytree(data / "catalog.db.blocks", root / "cp" / "blocks")
            shutil.copy2(data / "catalog.db", root / "cp" / "catalog.db")
            copy_s = time.perf_counter() - started
            backup_s, backup = _timed("backup", str(root / "backup"), "--data-dir", str(data), env=env)
        finally:
            stop(server)
        check_s, _ = _timed("restore", str(root / "backup"), "--check", "--data-dir", str(root / "unused"), env=env)
        restore_s, _ = _timed("restore", str(root / "backup"), "--data-dir", str(root / "restored"), env=env)
        figures = {"transitions": options.transitions, "episodes": options.episodes, "obs_dim": options.obs_dim,
                   "act_dim": options.act_dim, "data_dir_bytes": _size(data), "backup_bytes": _size(root / "backup"),
                   "backup_files": backup["files"], "backup_s": round(backup_s, 3),
                   "backup_inside_s": backup["seconds"], "check_s": round(check_s, 3),
                   "restore_s": round(restore_s, 3), "reference_copy_s": round(copy_s, 3),
                   "load": os.getloadavg()[0]}
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
