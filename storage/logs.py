"""Logging for the API and the workers: one line per event, JSON for machines, plain words on a terminal.

Every line carries the context of the work it belongs to: ``request_id`` and ``trace_id`` inside an
HTTP request, ``job_id`` and the same ``trace_id`` inside the job that request started (the trace id
travels in the job's catalog record; with traces on it is the OpenTelemetry trace id, see
:mod:`tuplehub.storage.tracing`), and ``user`` (the user's id) in both. The context lives in a
context variable holding one mutable dict per request or job, so what a route learns late (who the
caller is) still reaches the request's own closing line, and threads started with
``asyncio.to_thread`` carry it too.

:func:`configure_logging` is the one place a process sets up logging (``tuplehub serve``, ``tuplehub
worker``, ``python -m tuplehub.workers``); it needs nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["auto", "json", "text"]
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("tuplehub_log_context", default=None)
CONTEXT_KEYS = ("request_id", "trace_id", "job_id", "user")
# W3C Trace Context: version-trace_id-parent_id-flags; version ff is invalid, later versions may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# What a client may choose as its request id: short, and nothing that could forge a log line or a header.
# (``fullmatch``: ``$`` would let a trailing newline through.)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Every attribute a LogRecord has of its own; anything else on a record came in through ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "context"}


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_id_from(traceparent: str | None) -> str | None:
    """The trace id of a well-formed W3C ``traceparent`` header, else None (a new trace starts)."""
    match = _TRACEPARENT.fullmatch(traceparent.strip()) if traceparent else None
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` if it is well-formed, else a fresh one."""
    return header if header and _REQUEST_ID.fullmatch(header) else secrets.token_hex(8)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[dict[str, str]]:
    """Give every line logged inside the block (and in tasks and threads it starts) these fields."""
    token = _CONTEXT.set({key: value for key, value in fields.items() if value is not None})
    try:
        yield _CONTEXT.get()  # type: ignore[misc]
    finally:
        _CONTEXT.reset(token)


def annotate(**fields: str | None) -> None:
    """Add fields to the current request's or job's context (outside one, nothing happens)."""
    context = _CONTEXT.get()
    if context is not None:
        context.update({key: value for key, value in fields.items() if value is not None})


def current(key: str) -> str | None:
    context = _CONTEXT.get()
    return None if context is None else context.get(key)


class _WithContext(logging.Filter):
    """Copy the context onto the record in the thread that logs it, before any formatter runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_CONTEXT.get() or {})
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context, then what the call passed as ``extra=``."""
    extra = {key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS}
    return {**getattr(record, "context", {}), **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, the context, the extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            **_fields(record)}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _printable(value: object) -> str:
    """``value`` as text on one line: with a newline or a terminal escape in it (a request path's
    ``%0a``, a name), quoted and escaped, so no input can forge a line or restyle the terminal."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        words = [self.formatTime(record, self.datefmt), record.levelname, record.name,
                 _printable(record.getMessage())]
        words += (f"{key}={_printable(value)}" for key, value in _fields(record).items())
        text = " ".join(words)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # a traceback, below the line, is the code's and keeps its lines
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def make_handler(stream: IO[str], fmt: LogFormat = "auto") -> logging.Handler:
    """A handler writing to ``stream``: JSON unless ``fmt`` is "text", or "auto" and the stream is a terminal."""
    handler = logging.StreamHandler(stream)
    text = fmt == "text" or (fmt == "auto" and stream.isatty())
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    handler.addFilter(_WithContext())
    return handler


def configure_logging(level: str = "WARNING", fmt: LogFormat = "auto", stream: IO[str] | None = None) -> None:
    """Send this process's log lines to stderr (or ``stream``), replacing whatever was set up before.

    Arq's own line per job start and end stays off: the job runner logs each job's events itself.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(stream or sys.stderr, fmt))
    root.setLevel(level.upper())
    logging.getLogger("arq").setLevel(logging.WARNING)
