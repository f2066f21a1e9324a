"""The ``tuplehub`` command.

Importing this package must stay cheap: ``tuplehub --help`` loads no numpy, pyarrow, gymnasium,
torch or pydantic (``tests/test_layering.py``); commands import the client when they run.
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Annotated

import typer

from tuplehub.client.cli import access, artifacts, backup, benchmarks, data, deploy, lineage, metrics
from tuplehub.client.cli.demo import demo
from tuplehub.client.cli.options import group
from tuplehub.client.cli.output import AsJson

# What a bug report needs: this package and the libraries whose versions change behaviour.
REPORTED_DISTRIBUTIONS = ("httpx", "pydantic", "numpy", "pyarrow", "gymnasium", "typer", "fastapi", "uvicorn",
                          "arq", "redis", "pymongo", "torch", "d3rlpy", "matplotlib", "pandas", "minari")

app = group("tuplehub: store, version, filter and share offline-RL datasets. Every command takes --json and "
            "--url; filters are JSON, see docs/tuples-and-filters.md.")
app.add_typer(data.datasets_app, name="datasets")
app.add_typer(data.jobs_app, name="jobs")
app.add_typer(benchmarks.benchmarks_app, name="benchmarks")
app.add_typer(artifacts.artifacts_app, name="artifacts")
app.add_typer(metrics.metrics_app, name="metrics")
app.command("show")(data.show)
app.command("derive")(lineage.derive)
app.command("lineage")(lineage.lineage)
app.command("upload")(data.upload)
app.command("export")(data.export)
app.command("demo")(demo)
app.command("login")(access.login)
app.command("logout")(access.logout)
app.command("whoami")(access.whoami)
app.command("audit")(access.audit)
app.add_typer(access.tokens_app, name="tokens")
app.add_typer(access.users_app, name="users")
app.add_typer(access.groups_app, name="groups")
app.add_typer(access.roles_app, name="roles")
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
app.add_typer(deploy.deploy_app, name="deploy")

DataDir = Annotated[Path | None, typer.Option(envvar="TUPLEHUB_DATA_DIR", help="Data folder of the embedded default.")]


def versions() -> str:
    """``tuplehub --version``: this package, Python and the installed key libraries, one per line."""
    lines = [f"tuplehub {importlib.metadata.version('tuplehub')}",
             f"python {platform.python_version()} ({platform.platform()})"]
    for name in REPORTED_DISTRIBUTIONS:
        try:
            lines.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the versions of tuplehub, Python and key libraries (for bug reports).")] = False) -> None:
    """tuplehub: store, version, filter and share offline-RL datasets."""


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1, or "
                                                         "TUPLEHUB_HOST).")] = None,
          port: Annotated[int | None, typer.Option(help="Port; 0 picks a free one (default 8470, or "
                                                        "TUPLEHUB_PORT).")] = None,
          data_dir: DataDir = None,
          worker: Annotated[bool, typer.Option(help="Run a job worker in this process.")] = True,
          as_json: AsJson = False) -> None:
    """Run the API (and a worker); with nothing configured, the embedded default with a bundled Redis.

    Prints its URL and data folder once it answers (--json: {"status": "serving", "url": ...,
    "data_dir": ..., "pid": ...} on one line); Ctrl-C or SIGTERM stops it.
    """
    from tuplehub.client.cli.server import load_settings
    from tuplehub.client.cli.server import serve as run

    run(load_settings(host=host, port=port, data_dir=data_dir), with_worker=worker, as_json=as_json)


@app.command("worker")
def worker_cmd(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Run a job worker against TUPLEHUB_REDIS_URL (deployments); Ctrl-C or SIGTERM stops it."""
    from tuplehub.client.cli.server import load_settings, run_worker

    run_worker(load_settings(data_dir=data_dir), as_json=as_json)


def main() -> None:
    app()
