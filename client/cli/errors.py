"""The one place where a failed command becomes one or two lines (what is wrong, how to fix it) and an exit code.

Every command runs inside :func:`reported_errors` (the ``tuplehub`` group does it, see
``tuplehub.client.cli.options.Commands``), so no user mistake reaches Python's traceback printer:

    error: cannot reach the server at http://127.0.0.1:8470 ([Errno 111] Connection refused)
    hint: start one with `tuplehub serve`, or set TUPLEHUB_URL (or --url) to the server's address

With ``--json`` the same error goes to stdout as ``{"error": {"code": ..., "detail": ..., "hint": ...}}``
so a script reads one document whatever happened. Exit codes: 1 for a failed request or job, 2 for
a mistake on the command line (as click uses), 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer >= 0.29 ships its own click

from tuplehub.client.errors import CommandLineError, UploadInterrupted
from tuplehub.storage.errors import TuplehubError, Unauthenticated

FAILED = 1
USAGE = 2
INTERRUPTED = 130

# How the API's validation messages read in command-line words: (pattern of the message, the CLI's words).
_NAME_RULE = "use letters, digits, '.', '_' and '-' (first a letter or digit), at most 128 characters"
_TAG_RULE = "use letters, digits, '.', '_', ':' and '-' (first a letter or digit), at most 64 characters"
_PRINCIPAL_RULE = ("use lower-case letters, digits, '_' and '-' (first a letter, last a letter or digit), "
                   "3 to 40 characters")
_ROLE_RULE = "use lower-case letters, digits and '_' (first a letter), 2 to 40 characters"
_MEDIA_TYPE_RULE = "must look like type/subtype, e.g. application/octet-stream or text/csv"
_MESSAGES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"String should match pattern '\^\[A-Za-z0-9\]\[A-Za-z0-9\._-\]\{0,127\}\$'"), _NAME_RULE),
    (re.compile(r"String should match pattern '\^\[A-Za-z0-9\]\[A-Za-z0-9\._:-\]\{0,63\}\$'"), _TAG_RULE),
    (re.compile(r"String should match pattern '\^\[a-z\]\[a-z0-9_-\]\{1,38\}\[a-z0-9\]\$'"), _PRINCIPAL_RULE),
    (re.compile(r"String should match pattern '\^\[a-z\]\[a-z0-9_\]\{1,39\}\$'"), _ROLE_RULE),
    (re.compile(r"String should match pattern '\^\[A-Za-z0-9\]\[A-Za-z0-9!#\$&\^_\.\+-\].*'"), _MEDIA_TYPE_RULE),
    (re.compile(r"String should match pattern '\^\[0-9a-f\]\{64\}\$'"),
     "must be an artifact id: 64 hexadecimal digits, as `tuplehub artifacts list` shows"),
    (re.compile(r"String should match pattern '\^\[0-9a-f\]\{32\}\$'"),
     "is a benchmark id: 32 hexadecimal digits, as `tuplehub benchmarks list` shows"),
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be (('[^']*'(, | or ))+'[^']*')"), r"must be one of \1"),
    (re.compile(r"String should have at most (\d+) characters?"), r"must be at most \1 characters long"),
    (re.compile(r"String should have at least (\d+) characters?"), r"must be at least \1 characters long"),
    (re.compile(r"Input tag '([^']*)' found using '[^']*' does not match any of the expected tags: (.*)"),
     r"'\1' is not one of \2"),
    (re.compile(r"Input should be a valid (number|integer|boolean)\b.*"), r"must be a \1"),
    (re.compile(r"Extra inputs are not permitted"), "is not a known option"),
    (re.compile(r"Field required"), "is required"),
]
# What the API calls a field, as the command line shows it.
_FIELDS = {"version": "the version (NAME@VERSION)", "tags": "tags", "kind": "--kind", "status": "--status",
           "benchmark": "--benchmark", "offset": "--offset", "limit": "--limit", "mode": "--mode",
           "metrics": "-m/--metric", "rights": "--right", "media_type": "--media-type",
           "dataset": "dataset names"}
_NOUNS = {"datasets": "dataset", "groups": "group", "users": "user", "tokens": "token", "roles": "role",
          "artifacts": "artifact", "benchmarks": "benchmark", "derive": "dataset", "upload": "dataset"}


def _plain_validation(error: TuplehubError, command: str) -> str | None:
    """``body.name: String should match pattern '...'`` as the command line says it, or None if unknown."""
    errors = error.extra.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    return plain_words(str(errors[0].get("location", "")), str(errors[0].get("message", "")), command)


def plain_words(where: str, message: str, command: str = "") -> str | None:
    """One pydantic message about the field at ``where`` (``body.name``) in CLI words, or None if unknown."""
    location = [part for part in where.split(".") if part not in ("body", "query", "path") and not part.isdigit()]
    field = location[0] if location else ""
    if field == "metrics" and len(location) == 3:  # metrics.<metric>.<parameter>: what -p set
        subject = f"-p {location[1]}.{location[2]}"
    elif field == "name":
        subject = f"{_NOUNS.get(command.partition(' ')[0], 'the')} names"
    else:
        subject = _FIELDS.get(field, f"'{'.'.join(location)}'" if location else "the request")
    for pattern, words in _MESSAGES:
        if pattern.search(message):
            return f"{subject} {pattern.sub(words, message)}"
    return None


def _hint(error: TuplehubError, command: str) -> str | None:
    if isinstance(error.extra.get("hint"), str):
        return error.extra["hint"]
    if isinstance(error, Unauthenticated) and command != "login":
        return "run `tuplehub login`, or set TUPLEHUB_TOKEN to an API token"
    return None


# Phrases of the server's messages that name a Python/HTTP argument, as the command line spells it.
_PHRASES = [("upload with mode=replace", "upload with --mode replace")]


def with_where(detail: str, fields: dict[str, Any]) -> str:
    """``detail`` and where an upload broke and why (``column``, ``row``, ``reason``), unless it already says so."""
    shown = {key: value for key, value in fields.items()
             if key in ("column", "row", "reason") and value is not None and str(value) not in detail}
    return detail + (" (" + ", ".join(f"{key}={value}" for key, value in shown.items()) + ")" if shown else "")


def describe(error: TuplehubError, command: str = "") -> dict[str, Any]:
    """What the user reads: ``detail`` (what is wrong), ``hint`` (how to fix it), and the error's own fields."""
    detail = _plain_validation(error, command) or error.detail
    for api, cli in _PHRASES:
        detail = detail.replace(api, cli)
    detail = with_where(detail, error.extra)
    out: dict[str, Any] = {"code": error.code, "detail": detail}
    hint = _hint(error, command)
    if hint:
        out["hint"] = hint
    return out


def _print(error: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": error}, indent=2, default=str))
        return
    typer.echo(f"error: {error['detail']}", err=True)
    if error.get("hint"):
        typer.echo(f"hint: {error['hint']}", err=True)


@contextlib.contextmanager
def reported_errors(as_json: bool = False, command: str = "") -> Iterator[None]:
    """Run a command; a tuplehub error, a usage mistake or an unwritable file ends it with one or two lines."""
    try:
        yield
    except CommandLineError as exc:
        _print(describe(exc, command), as_json=as_json)
        raise typer.Exit(USAGE) from exc
    except TuplehubError as exc:
        _print(describe(exc, command), as_json=as_json)
        raise typer.Exit(FAILED) from exc
    except UploadInterrupted as exc:  # Ctrl-C while bytes moved: say what the server kept
        _print({"code": "interrupted", "detail": exc.detail}, as_json=as_json)
        raise typer.Exit(INTERRUPTED) from None
    except NoArgsIsHelpError:
        raise
    except ClickException as exc:
        if not as_json:
            raise  # click prints usage, the mistake and where to find help
        _print({"code": "usage", "detail": exc.format_message(), "hint": f"see `tuplehub {command} --help`"},
               as_json=True)
        raise typer.Exit(exc.exit_code) from exc
    except OSError as exc:  # a file the user named: missing folder, no permission, full disk
        where = f": {exc.filename}" if exc.filename else ""
        _print({"code": "os-error", "detail": f"{exc.strerror or exc}{where}"}, as_json=as_json)
        raise typer.Exit(FAILED) from exc
