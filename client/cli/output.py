"""How commands print: a short table for people, JSON with ``--json`` for scripts; errors to stderr."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import httpx
import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from tuplehub.client.errors import UploadInterrupted
from tuplehub.storage.errors import InvalidFilter, TuplehubError, Unauthenticated
from tuplehub.storage.filters.language import Filter, FilterNode

_FILTER = TypeAdapter(Filter)

# The options every command takes.
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Url = Annotated[str | None, typer.Option("--url", envvar="TUPLEHUB_URL", help="Server URL.")]


def json_or_word(raw: str) -> Any:
    """A command-line value: JSON (``9.81``, ``"hard"``, ``[1, 2]``), else the bare word as a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def emit(value: Any, *, as_json: bool, columns: Sequence[str] = ()) -> None:
    """Print ``value``: its JSON, or for people the ``columns`` of each row (or every field)."""
    data = _plain(value)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data.get("items", data) if isinstance(data, dict) and "items" in data else data
    if isinstance(rows, list):
        names = list(columns) or (list(rows[0]) if rows else [])
        widths = {n: max([len(n), *(len(_cell(r.get(n))) for r in rows)]) for n in names}
        typer.echo("  ".join(n.upper().ljust(widths[n]) for n in names))
        for row in rows:
            typer.echo("  ".join(_cell(row.get(n)).ljust(widths[n]) for n in names))
        if isinstance(data, dict) and "total" in data:
            typer.echo(f"({len(rows)} of {data['total']})")
        return
    for key, item in data.items():
        if key not in columns and columns:
            continue
        typer.echo(f"{key}: {_cell(item)}")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def parse_filter(text: str | None, option: str) -> FilterNode | None:
    if not text:
        return None
    try:
        return _FILTER.validate_json(text)
    except ValidationError as exc:
        raise InvalidFilter(f"{option}: {exc.errors()[0]['msg']} (expected JSON like "
                            '\'{"op": "gt", "field": "reward", "value": 0}\')') from exc


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn tuplehub errors into one line on stderr and exit code 1, not a traceback."""
    try:
        yield
    except TuplehubError as exc:
        extra = ", ".join(f"{k}={v}" for k, v in exc.extra.items() if k in ("column", "row", "reason"))
        typer.echo(f"error: {exc.detail}" + (f" ({extra})" if extra else ""), err=True)
        if isinstance(exc, Unauthenticated):
            typer.echo("hint: run `tuplehub login`, or set TUPLEHUB_TOKEN to an API token", err=True)
        raise typer.Exit(1) from exc
    except UploadInterrupted as exc:  # Ctrl-C while bytes moved: say what the server kept
        typer.echo(exc.detail, err=True)
        raise typer.Exit(130) from None
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the server at {exc.request.url.host}:{exc.request.url.port} ({exc}); "
                   "start one with `tuplehub serve` or set TUPLEHUB_URL", err=True)
        raise typer.Exit(1) from exc
