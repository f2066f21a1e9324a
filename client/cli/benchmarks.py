"""Benchmark commands: list a family, show one, and what was recorded on it."""

from __future__ import annotations

from typing import Annotated

import typer

from tuplehub.client.cli.output import AsJson, Url, emit, json_or_word, reported_errors
from tuplehub.client.client import Client

benchmarks_app = typer.Typer(help="Benchmarks: fully specified environments.", no_args_is_help=True)


@benchmarks_app.command("list")
def list_benchmarks(family: Annotated[str | None, typer.Option(help="Env id or entry point.")] = None,
                    param: Annotated[list[str] | None, typer.Option("--param", help="key=value; repeat.")] = None,
                    limit: int = 100, url: Url = None, as_json: AsJson = False) -> None:
    """Benchmarks, newest first; --family with --param picks points of a parameter sweep."""
    params = {key: json_or_word(raw) for key, _, raw in (text.partition("=") for text in param or [])}
    with reported_errors(), Client(url) as hub:
        emit(hub.benchmarks.list(family=family, params=params, limit=limit), as_json=as_json,
             columns=("id", "name", "family", "visibility", "created_at"))


@benchmarks_app.command("show")
def show_benchmark(benchmark_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """A benchmark's full spec and the datasets recorded on it."""
    with reported_errors(), Client(url) as hub:
        benchmark = hub.benchmarks.get(benchmark_id)
        if as_json:
            emit(benchmark.record, as_json=True)
            return
        emit(benchmark.record, as_json=False, columns=("id", "name", "family", "owner", "visibility",
                                                       "random_return", "expert_return"))
        typer.echo(f"spec: {benchmark.spec.model_dump_json(indent=2)}")
        emit(benchmark.datasets(), as_json=False, columns=("name", "latest_version", "episodes", "transitions"))
