"""How commands print: a table that fits the terminal (100 columns at most) for people, JSON with ``--json``.

Errors are printed by :mod:`tuplehub.client.cli.errors` (``reported_errors`` is also importable
from here, where the server and demo commands find it).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.errors import reported_errors
from tuplehub.client.cli.options import EPISODE_FILTER_EXAMPLE, TUPLE_FILTER_EXAMPLE
from tuplehub.client.errors import CommandLineError

if TYPE_CHECKING:
    from tuplehub.storage.filters.language import FilterNode

__all__ = ["AsJson", "Url", "done", "emit", "json_kind", "json_or_word", "note", "parse_filter",
           "read_json_file", "reported_errors", "table"]

# The options every command takes.
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (errors too, on stdout).")]
Url = Annotated[str | None, typer.Option("--url", envvar="TUPLEHUB_URL", help=(
    "Server URL, e.g. http://127.0.0.1:8470; by default the server `tuplehub serve` runs here."))]

_KINDS = {dict: "a JSON object", list: "a JSON list", str: "a string", int: "a number", float: "a number",
          bool: "true or false", type(None): "null"}
MAX_WIDTH = 100
GAP = "  "
MIN_COLUMN = 8


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in words: 'a JSON list', 'a number'."""
    return _KINDS.get(type(value), "a value")


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
        table([n.upper() for n in names], [[_cell(row.get(n)) for n in names] for row in rows])
        if isinstance(data, dict) and "total" in data:
            typer.echo(f"({len(rows)} of {data['total']})")
        return
    for key, item in data.items():
        if (key not in columns and columns) or item in (None, "", [], {}):
            continue  # an unset field says nothing; --json shows every field
        typer.echo(f"{key}: {_cell(item)}")


def done(message: str, *, as_json: bool, **fields: Any) -> None:
    """What a command that returns nothing did: a sentence for people, ``fields`` as JSON for scripts."""
    typer.echo(json.dumps(fields, indent=2, default=str) if as_json else message)


def note(text: str, *, err: bool = False) -> None:
    """A sentence under a table, wrapped at word boundaries to the table's width (100 columns at most)."""
    typer.echo(textwrap.fill(text, width=_width(), subsequent_indent="  ", break_long_words=False,
                             break_on_hyphens=False), err=err)


def fits(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> bool:
    """Whether a table fits the terminal uncut."""
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    return sum(widths) + len(GAP) * (len(widths) - 1) <= _width()


def _width() -> int:
    return min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; if the table is wider than the terminal (100 columns at most),
    the widest cells are cut with '…', except in the first column, which names the row (an id, a name)."""
    limit = _width()
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    room = limit - len(GAP) * (len(widths) - 1)
    while len(widths) > 1 and sum(widths) > room and max(widths[1:]) > MIN_COLUMN:
        widest = max(range(1, len(widths)), key=widths.__getitem__)
        widths[widest] -= 1
    for row in [list(headers), *rows]:
        pairs = zip(row, widths, strict=True)
        cells = [cell if len(cell) <= width else cell[:width - 1] + "…" for cell, width in pairs]
        typer.echo(GAP.join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model, recognised without importing pydantic
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T" and value.endswith("Z"):
        return value[:19] + "Z"  # an ISO time from the API: to the second
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def parse_filter(text: str | None, option: str, *, episodes: bool = False) -> FilterNode | None:
    """A filter given as JSON on the command line; a mistake names the option and shows an example."""
    from tuplehub.storage.filters.language import parse_filter_json  # pydantic: not for --help

    return parse_filter_json(text, source=option, example=EPISODE_FILTER_EXAMPLE if episodes else TUPLE_FILTER_EXAMPLE)


def read_json_file(path: Any, option: str, *, shape: type, example: str) -> Any:
    """A JSON file named on the command line, refused in one line if it is missing, broken or the wrong shape."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandLineError(f"{option} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise CommandLineError(f"{option} {path} is not UTF-8 text (byte {exc.start}), so not JSON",
                               hint=f"write it like {example}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandLineError(f"{option} {path} is not valid JSON: {exc}", hint=f"write it like {example}") from exc
    if not isinstance(value, shape):
        raise CommandLineError(f"{option} {path} holds {json_kind(value)}, not "
                               f"{_KINDS.get(shape, shape.__name__)}", hint=f"write it like {example}")
    return value
