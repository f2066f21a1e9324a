"""Start-up cost of the CLI (issue 11, "time to ready"): the commands people type most import only what they use.

Measured in a fresh interpreter each, since this test process has long imported everything. The
times themselves are measured by tests/perf/startup.py (figures in docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_token

HEAVY = ("numpy", "pyarrow", "gymnasium", "torch", "pandas", "tqdm", "opentelemetry")
PROBE = """
import json, sys
from tuplehub.client.cli import app
try:
    app(sys.argv[1:], prog_name="tuplehub")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def _loaded(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", PROBE % ((*HEAVY, "pydantic"),), *args], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **(env or {})})
    return json.loads(result.stdout.splitlines()[-1])


def test_help_imports_no_numpy_pyarrow_gymnasium_torch_opentelemetry_or_pydantic() -> None:
    assert _loaded("--help") == {"code": 0, "loaded": []}
    # traces configured (tuplehub[otel]) are the server's business: the client's commands still import none of it
    assert _loaded("--help", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == {"code": 0, "loaded": []}
    # typer itself coerces option values with pydantic, so a subcommand's help loads it; nothing heavier
    assert _loaded("datasets", "create", "--help") == {"code": 0, "loaded": ["pydantic"]}


def test_listing_commands_import_no_numpy_pyarrow_or_gymnasium(hub_server: EmbeddedServer) -> None:
    env = {"TUPLEHUB_TOKEN": admin_token(hub_server), "TUPLEHUB_URL": hub_server.url}
    for command in (["datasets", "list"], ["jobs", "list"]):
        assert _loaded(*command, env=env) == {"code": 0, "loaded": ["pydantic"]}, command


def test_the_client_package_loads_its_parts_on_first_use() -> None:
    import tuplehub.client as package

    assert sorted(package._HOMES) == package.__all__
    # every error a script may catch, Ctrl-C during an upload included
    assert {"JobFailed", "ServerUnreachable", "UploadInterrupted"} <= set(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None
