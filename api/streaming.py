"""Streaming stored objects over HTTP, honouring ``Range`` (RFC 9110) so interrupted downloads resume."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import StreamingResponse

from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.objects import ObjectStore

STREAM_CHUNK = 4 * 2**20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BEYOND = 10**21  # a position past the end of any file
RANGE_RESPONSES: dict[int | str, dict[str, Any]] = {206: {"description": "The requested byte range."},
                   416: {"description": "The range lies outside the file."}}


async def stream_object(objects: ObjectStore, key: str, request: Request, *, filename: str,
                        media_type: str) -> StreamingResponse:
    """The object, or the byte range the request asks for, as a streamed attachment."""
    size = await asyncio.to_thread(objects.size, key)
    byte_range = _byte_range(request.headers.get("range"), size)
    start, end = byte_range or (0, size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start),
               "Content-Disposition": _disposition(filename)}
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(_chunks(objects, key, start, end), status_code=206 if byte_range else 200,
                             headers=headers, media_type=media_type)


def _disposition(filename: str) -> str:
    """An attachment header any name survives: an ASCII fallback plus the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f'attachment; filename="{fallback}"; filename*=UTF-8\'\'{quote(filename, safe="")}'''


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single satisfiable range, as RFC 9110 reads it.

    No header, several ranges or a malformed one mean "the whole file" (the header is ignored);
    a well-formed range that lies outside the file is a 416.
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = (_position(group) for group in match.groups())
    assert header is not None  # it matched
    shown = header if len(header) <= 80 else header[:77] + "..."
    if first is None:  # the last N bytes
        assert last is not None
        if last == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {shown!r} selects no byte of the {size}-byte file", size=size)
        return max(0, size - last), size
    if last is not None and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(f"range {shown!r} starts past the end of the {size}-byte file", size=size)
    return first, min(size, last + 1) if last is not None else size


def _position(digits: str) -> int | None:
    """A byte position; one of more than 20 digits lies past any file (and past ``int``'s digit limit)."""
    if digits == "":
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else _BEYOND



class RangeNotSatisfiable(InvalidRequest):
    code, status = "range-not-satisfiable", 416

    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail, size=size)
        self.headers = {"Content-Range": f"bytes */{size}"}


def _chunks(objects: ObjectStore, key: str, start: int, end: int) -> Iterator[bytes]:
    """Read ``[start, end)`` in chunks; Starlette runs this in a thread."""
    with objects.open_read(key) as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk
