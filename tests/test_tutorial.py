"""docs/tutorial.md, run as a script against a real server, so the tutorial cannot go stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_token

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def test_the_tutorial_runs_from_environment_to_trained_agent(hub_server: EmbeddedServer, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    assert len(blocks) >= 5
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "TUPLEHUB_URL": hub_server.url, "TUPLEHUB_TOKEN": admin_token(hub_server)}
    result = subprocess.run([sys.executable, "-W", "ignore", str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    mean = re.search(r"the trained agent: mean return (\d+)", result.stdout)
    assert mean is not None, result.stdout
    assert int(mean.group(1)) >= 100  # random play lasts ~20 steps; cloning the heuristic lasts far longer
    assert re.search(r"kept \d+ episodes", result.stdout)
