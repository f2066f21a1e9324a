"""README.md's "From the command line" block, run as a shell script against a real server, so README and CLI
cannot drift apart (as docs/tutorial.md is kept true by tests/test_tutorial.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays

from .conftest import admin_token
from .factories import episode_arrays

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_line_block() -> list[str]:
    section = README.read_text().split("## From the command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the README's command-line section has no bash block"
    # The test runs its own server; every other line runs as written.
    return [line for line in block.group(1).splitlines() if not line.startswith("tuplehub serve")]


def _pendulum_like(path: Path, *, seed: int, episodes: int, reward_shift: float) -> None:
    """Episodes with Pendulum-v1's shapes (3 float32 observations, 1 float32 action)."""
    arrays = episode_arrays(episodes=episodes, length=30, obs_dim=3, act_dim=1, seed=seed)
    arrays["reward"] = (arrays["reward"] - reward_shift).astype(np.float32)
    pq.write_table(table_from_arrays(arrays), path)


def test_the_readme_command_line_block_runs(hub_server: EmbeddedServer, tmp_path: Path) -> None:
    _pendulum_like(tmp_path / "tuples.parquet", seed=0, episodes=10, reward_shift=1.0)
    _pendulum_like(tmp_path / "expert.parquet", seed=1, episodes=6, reward_shift=0.0)
    (tmp_path / "episode-metadata.json").write_text(json.dumps({str(i): {"policy": "random" if i < 5 else "expert"}
                                                                for i in range(10)}))
    script = tmp_path / "readme.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(_command_line_block()) + "\n")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TUPLEHUB_URL": hub_server.url,
           "TUPLEHUB_TOKEN": admin_token(hub_server), "COLUMNS": "100"}
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "subset.parquet").exists()
    assert (tmp_path / "half.parquet").exists()
    assert "observation float32[3]" in result.stdout
    assert "pendulum-expert" in result.stdout  # the comparison table
