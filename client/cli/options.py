"""What the commands share: the command group that reports errors, ``NAME@VERSION``, choices and confirmation.

The choices repeat the API's enums as plain strings because importing the models would cost
``tuplehub --help`` pydantic; ``tests/test_cli_mistakes.py`` holds the two in step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from tuplehub.client.cli.errors import reported_errors
from tuplehub.client.errors import CommandLineError

if TYPE_CHECKING:
    from typer._click import Context

    from tuplehub.client.client import Client

HELP_WIDTH = 100
DOCS_FILTERS = "docs/tuples-and-filters.md"
TUPLE_FILTER_EXAMPLE = '\'{"op": "gt", "field": "reward", "value": 0}\''
EPISODE_FILTER_EXAMPLE = '\'{"op": "gt", "field": "return", "value": -200}\''

UploadModes = Literal["append", "replace"]
JobKinds = Literal["ingest", "export", "derive", "artifact", "metrics", "upload"]  # upload: what people call ingest
JobStatuses = Literal["queued", "running", "succeeded", "failed", "cancelled"]

Mode = Annotated[UploadModes, typer.Option(help="append keeps the previous version's episodes; replace starts over.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed without a terminal).")]


class Commands(TyperGroup):
    """A command group whose commands end in one or two lines on any tuplehub error, never a traceback."""

    def invoke(self, ctx: Context) -> Any:
        words = [*ctx._protected_args, *ctx.args]
        command = " ".join([*ctx.command_path.split()[1:], *words[:1]])  # e.g. "datasets create"
        with reported_errors(as_json="--json" in words, command=command):
            return super().invoke(ctx)


def group(help: str) -> typer.Typer:
    """A ``tuplehub`` command group: plain help text up to 100 columns, errors reported as :mod:`.errors` says."""
    return typer.Typer(help=help, no_args_is_help=True, cls=Commands, rich_markup_mode=None,
                       pretty_exceptions_enable=False, context_settings={"max_content_width": HELP_WIDTH})


def dataset_version(reference: str) -> tuple[str, int | None]:
    """``name``, ``name@3``, ``name@v3`` or ``name@latest`` as (name, version or None for the latest)."""
    name, at, version = reference.partition("@")
    if not at or version.lower() == "latest":
        return name, None
    if not version:  # `pendulum@$V` with V unset: not silently the latest
        raise CommandLineError(f"{reference!r}: no version after '@'",
                               hint=f"write {name}@2, {name}@latest, or just {name} for the latest")
    digits = version[1:] if version[:1] in "vV" else version
    if not digits.isdigit():
        raise CommandLineError(f"{reference!r}: the version after '@' is a number or 'latest'",
                               hint=f"write {name}@2, {name}@v2 or {name}@latest")
    if int(digits) < 1:
        raise CommandLineError(f"{reference!r}: versions are numbered from 1", hint=f"write {name}@1 for the first")
    return name, int(digits)


def writable(out: Path) -> None:
    """Refuse an output path that cannot be written before any job runs (the folder is not created: a typo
    in it should not make folders)."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CommandLineError(f"-o {out} is a folder", hint=f"name a file, e.g. -o {out / 'export.parquet'}")
    if not folder.is_dir():
        raise CommandLineError(f"-o {out}: the folder {folder} does not exist", hint=f"create it: mkdir -p {folder}")
    if not os.access(folder, os.W_OK):
        raise CommandLineError(f"-o {out}: the folder {folder} is not writable", hint="pick another folder")


def client(url: str | None) -> Client:
    """The client of a command, imported when the command runs (``tuplehub --help`` never loads it)."""
    from tuplehub.client.client import Client

    return Client(url, on_retry=lambda line: typer.echo(line, err=True))  # stderr: --json output stays one document


def bars(as_json: bool) -> bool | None:
    """Progress bars: never with ``--json``, else only on a terminal (None), so logs stay clean."""
    return False if as_json else None


def job_kind(kind: str | None) -> str | None:
    """``--kind``: ``upload`` is the ``ingest`` job an upload starts."""
    return "ingest" if kind == "upload" else kind


def confirm(action: str, yes: bool) -> None:
    """Ask before something that cannot be undone; without a terminal, only ``--yes`` goes ahead."""
    if yes:
        return
    if not on_terminal():
        raise CommandLineError(f"{action} cannot be undone, and there is no terminal to ask for confirmation",
                               hint="add --yes to go ahead")
    if not typer.confirm(f"{action}? This cannot be undone", default=False):
        typer.echo("nothing was changed", err=True)
        raise typer.Exit(1)


def on_terminal() -> bool:
    """Whether a person can answer a question: stdin is a terminal."""
    return sys.stdin.isatty()
