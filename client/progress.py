"""Byte progress bars for uploads and downloads: size, rate and time left, on stderr.

``progress=None`` shows a bar only when stderr is a terminal, so scripts, pipes and CI logs stay
quiet; ``True`` and ``False`` force it on or off. Job bars (``Job.wait``) follow the same rule.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import httpx
from tqdm.auto import tqdm


class ByteBar:
    """A tqdm byte counter that several sending threads may advance at once."""

    def __init__(self, desc: str, total: int | None, *, progress: bool | None, initial: int = 0) -> None:
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         disable=None if progress is None else not progress, dynamic_ncols=True, leave=True)
        self._lock = threading.Lock()

    def update(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)

    def close(self) -> None:
        with self._lock:
            self._bar.close()

    def __enter__(self) -> ByteBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save(chunks: Iterable[bytes], path: Path, *, desc: str, total: int | None, progress: bool | None) -> Path:
    """Write a download's chunks to ``path`` with a byte bar (``total`` from Content-Length, if any).

    The bytes go to a hidden ``.NAME.part`` beside it, renamed to ``path`` only once complete: Ctrl-C,
    a dropped connection or a full disk leaves neither a truncated file nor a clobbered older copy.
    """
    partial = path.with_name(f".{path.name}.part")
    try:
        with partial.open("wb") as handle, ByteBar(desc, total, progress=progress) as bar:
            for chunk in chunks:
                handle.write(chunk)
                bar.update(len(chunk))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def content_length(response: httpx.Response) -> int | None:
    """A response's Content-Length as a number; None when absent (a bar without a total still counts)."""
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None
