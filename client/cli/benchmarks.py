"""Benchmark commands: create one from an environment id, list a family, show one and what was recorded on it."""

from __future__ import annotations

import importlib
import json
import math
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.options import client, group
from tuplehub.client.cli.output import AsJson, Url, emit, json_or_word
from tuplehub.client.errors import CommandLineError

if TYPE_CHECKING:
    from tuplehub.client.client import Client

benchmarks_app = group("Benchmarks: fully specified environments that datasets are recorded on.")

BenchmarkRef = Annotated[str, typer.Argument(metavar="BENCHMARK", help="Benchmark id or name.")]
WRAPPER_EXAMPLE = '\'{"entry_point": "gymnasium.wrappers:TimeAwareObservation", "kwargs": {}}\''


def benchmark_id(hub: Client, reference: str) -> str:
    """A benchmark's id from its id or its (unique) name."""
    if re.fullmatch(r"[0-9a-f]{32}", reference):
        return reference
    named = [b for b in hub.benchmarks.list(name=reference, limit=100).items if b.name == reference]
    if len(named) == 1:
        return named[0].id
    if not named:
        raise CommandLineError(f"no benchmark is named {reference!r}",
                               hint="`tuplehub benchmarks list` shows names and ids; "
                                    "`tuplehub benchmarks create ENV_ID --name NAME` makes one")
    raise CommandLineError(f"{len(named)} benchmarks are named {reference!r}: "
                           + ", ".join(b.id for b in named), hint="give the id instead")


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandLineError(f"{option}: not valid JSON ({exc})", hint="write it like '{\"g\": 9.81}'") from exc
    if not isinstance(value, dict):
        raise CommandLineError(f"{option}: expected a JSON object", hint="write it like '{\"g\": 9.81}'")
    return value


def _wrap(env: Any, text: str) -> Any:
    """Apply ``--wrapper``: ``module:Class`` or ``{"entry_point": "module:Class", "kwargs": {...}}``."""
    import gymnasium

    spec = _json_object(text, "--wrapper") if text.lstrip().startswith("{") else {"entry_point": text}
    entry_point, kwargs = str(spec.get("entry_point", "")), spec.get("kwargs") or {}
    module, _, attribute = entry_point.partition(":")
    if not module or not attribute or not isinstance(kwargs, dict):
        raise CommandLineError(f"--wrapper {text!r}: write module:Class or {WRAPPER_EXAMPLE}")
    try:
        wrapper = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise CommandLineError(f"--wrapper {entry_point!r} cannot be imported ({exc})") from exc
    if not (isinstance(wrapper, type) and issubclass(wrapper, gymnasium.Wrapper)):
        raise CommandLineError(f"--wrapper {entry_point!r} is not a gymnasium wrapper class",
                               hint="name a subclass of gymnasium.Wrapper, e.g. gymnasium.wrappers:ClipAction")
    try:
        return wrapper(env, **kwargs)
    except (TypeError, ValueError) as exc:  # missing or unknown keyword arguments, or values it refuses
        raise CommandLineError(f"--wrapper {entry_point!r} with kwargs {json.dumps(kwargs)}: {exc}",
                               hint=f"give its keyword arguments as JSON: {WRAPPER_EXAMPLE}") from exc


def _finite(value: float | None) -> float | None:
    """A reference return is a number: nan and inf cannot be stored (nor sent as JSON)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


@benchmarks_app.command("create")
def create_benchmark(
        env_id: Annotated[str, typer.Argument(help="A registered gymnasium id, e.g. Pendulum-v1.")],
        kwargs: Annotated[str | None, typer.Option(help="JSON of gymnasium.make keyword arguments, e.g. "
                                                        "'{\"g\": 9.81}'.")] = None,
        wrapper: Annotated[list[str] | None, typer.Option("--wrapper", help=(
            f"A wrapper to apply, module:Class or {WRAPPER_EXAMPLE}; repeat, innermost first."))] = None,
        max_episode_steps: Annotated[int | None, typer.Option(
            min=1, help="Truncate episodes after this many steps.")] = None,
        name: Annotated[str, typer.Option(help="A short name to find it by (e.g. pendulum).")] = "",
        description: Annotated[str, typer.Option(help="One line on what it is.")] = "",
        random_return: Annotated[float | None, typer.Option(
            callback=_finite, help="Reference return of a random policy.")] = None,
        expert_return: Annotated[float | None, typer.Option(callback=_finite, help="Reference return of an expert.")]
        = None,
        url: Url = None, as_json: AsJson = False) -> None:
    """Store the benchmark of a gymnasium environment; the same environment always gets the same id."""
    import gymnasium

    options = _json_object(kwargs, "--kwargs") if kwargs else {}
    if max_episode_steps is not None:
        options["max_episode_steps"] = max_episode_steps
    try:
        env = gymnasium.make(env_id, **options)
    except gymnasium.error.Error as exc:
        raise CommandLineError(f"cannot make {env_id!r}: {exc}",
                               hint="use a registered id (gymnasium.pprint_registry() lists them)") from exc
    except TypeError as exc:
        raise CommandLineError(f"--kwargs do not fit {env_id!r}: {exc}") from exc
    try:
        for text in wrapper or []:
            env = _wrap(env, text)
        with client(url) as hub:
            created = hub.benchmarks.create_from_env(env, name=name, description=description,
                                                     random_return=random_return, expert_return=expert_return)
    finally:
        env.close()
    emit(created.record, as_json=as_json, columns=("id", "name", "family", "random_return", "expert_return"))


@benchmarks_app.command("list")
def list_benchmarks(family: Annotated[str | None, typer.Option(help="Env id or entry point.")] = None,
                    param: Annotated[list[str] | None, typer.Option(
                        "--param", help="key=value, e.g. g=9.81; repeat.")] = None,
                    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
                    url: Url = None, as_json: AsJson = False) -> None:
    """Benchmarks, newest first; --family with --param picks points of a parameter sweep."""
    params = {key: json_or_word(raw) for key, _, raw in (text.partition("=") for text in param or [])}
    with client(url) as hub:
        emit(hub.benchmarks.list(family=family, params=params, limit=limit), as_json=as_json,
             columns=("id", "name", "family", "visibility", "created_at"))


@benchmarks_app.command("show")
def show_benchmark(benchmark: BenchmarkRef, url: Url = None, as_json: AsJson = False) -> None:
    """A benchmark's full spec and the datasets recorded on it."""
    with client(url) as hub:
        found = hub.benchmarks.get(benchmark_id(hub, benchmark))
        if as_json:
            emit(found.record, as_json=True)
            return
        emit(found.record, as_json=False, columns=("id", "name", "family", "owner", "visibility",
                                                   "random_return", "expert_return"))
        typer.echo(f"spec: {found.spec.model_dump_json(indent=2)}")
        emit(found.datasets(), as_json=False, columns=("name", "latest_version", "episodes", "transitions"))
