"""A file sent as upload parts straight from disk, a chunk at a time, ``parallel`` parts at once.

Each sending thread reads its part in chunks of ``READ_CHUNK`` bytes and streams them as the
request body, so the client holds ``parallel`` chunks, never a whole part or the file: its memory
does not grow with the upload. Every part's MD5 is computed on the way and compared with the
etag the store answers (the MD5 of what it wrote), and the same MD5 tells which parts an
interrupted upload already has (:meth:`FileParts.md5`).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tuplehub.client.errors import ServerError, UploadInterrupted, raise_for_problem
from tuplehub.client.progress import ByteBar
from tuplehub.client.retries import IDEMPOTENT, retry_policy

READ_CHUNK = 2**20
PRESIGN_BATCH = 16
SAMPLE_BYTES = 2**20
PART_TIMEOUT_S = 600


@dataclass(frozen=True)
class FileParts:
    """``path`` cut into parts of ``part_size`` bytes (the last may be shorter, or empty for an empty file)."""

    path: Path
    size: int
    part_size: int

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.size / self.part_size))

    def length(self, number: int) -> int:
        return max(0, min(self.part_size, self.size - (number - 1) * self.part_size))

    def chunks(self, number: int) -> Iterator[bytes]:
        """Part ``number``'s bytes, ``READ_CHUNK`` at a time."""
        left = self.length(number)
        with self.path.open("rb") as handle:
            handle.seek((number - 1) * self.part_size)
            while left > 0:
                chunk = handle.read(min(READ_CHUNK, left))
                if not chunk:
                    raise ValueError(f"{self.path} became shorter while it was being uploaded")
                left -= len(chunk)
                yield chunk

    def md5(self, number: int) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in self.chunks(number):
            digest.update(chunk)
        return digest.hexdigest()


def fingerprint(path: Path) -> str:
    """A cheap name for a file's content: its size and a hash of its first and last MiB.

    It only picks which open session an upload resumes; every part the server already holds is
    then checked by its MD5, so a file that changed since still uploads exactly as it is now.
    """
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        handle.seek(max(0, size - SAMPLE_BYTES))
        digest.update(handle.read(SAMPLE_BYTES))
    return f"{size}:{digest.hexdigest()}"


def held_parts(http: httpx.Client, upload_id: str, parts: FileParts, *, progress: bool | None) -> dict[int, str]:
    """The parts the server holds that match the file, by number, with their etags."""
    response = http.get(f"/uploads/{upload_id}/parts")
    raise_for_problem(response)
    candidates = [item for item in response.json()
                  if item["number"] <= parts.count and item["size"] == parts.length(item["number"])]
    held: dict[int, str] = {}
    if not candidates:
        return held
    with ByteBar("checking sent parts", sum(item["size"] for item in candidates), progress=progress) as bar:
        for item in candidates:
            if item["etag"].strip('"') == parts.md5(item["number"]):
                held[item["number"]] = item["etag"]
            bar.update(item["size"])
    return held


class PresignedURLs:
    """Presigned part URLs, asked for ``PRESIGN_BATCH`` at a time as the sending threads need them."""

    def __init__(self, http: httpx.Client, upload_id: str, last: int | None = None) -> None:
        self._http, self._upload_id, self._last = http, upload_id, last
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def get(self, number: int) -> str:
        with self._lock:
            if number not in self._urls:
                end = number + PRESIGN_BATCH if self._last is None else min(number + PRESIGN_BATCH, self._last + 1)
                numbers = list(range(number, end))
                response = self._http.post(f"/uploads/{self._upload_id}/parts", json={"numbers": numbers},
                                           extensions=IDEMPOTENT)
                raise_for_problem(response)
                self._urls.update({item["number"]: item["url"] for item in response.json()})
            return self._urls.pop(number)


class _Stopped(Exception):
    """Raised inside a part's body to abandon it: another part failed, or the user pressed Ctrl-C."""


def send_parts(http: httpx.Client, session: Mapping[str, Any], parts: FileParts, *, held: Mapping[int, str],
               parallel: int, bar: ByteBar) -> list[dict[str, Any]]:
    """Send every part not in ``held``; the ``parts`` list for ``complete``, in order.

    Ctrl-C stops every thread within a chunk and raises :class:`UploadInterrupted` counting the
    parts the server holds; the session itself is left as it is (the caller decides).
    """
    upload_id = str(session["id"])
    presigned = session["transport"] == "presigned"
    urls = PresignedURLs(http, upload_id, parts.count) if presigned else None
    # Presigned URLs carry their own authorisation; the API client's headers must not go along.
    direct = httpx.Client(timeout=PART_TIMEOUT_S) if presigned else None
    stop = threading.Event()
    retries = retry_policy(http)

    def put(number: int) -> str:
        """Send part ``number``, read from disk again for each attempt the retry policy makes."""
        headers = {"Content-Length": str(parts.length(number))}
        url = urls.get(number) if urls is not None else f"/uploads/{upload_id}/parts/{number}"
        digest = hashlib.md5(usedforsecurity=False)
        counted = 0  # bytes of this part the bar shows, taken back when an attempt fails

        def body() -> Iterator[bytes]:
            nonlocal counted
            for chunk in parts.chunks(number):
                if stop.is_set():
                    raise _Stopped
                digest.update(chunk)
                counted += len(chunk)
                bar.update(len(chunk))
                yield chunk

        def attempt() -> httpx.Response:
            nonlocal digest, counted
            digest = hashlib.md5(usedforsecurity=False)
            bar.update(-counted)
            counted = 0
            if direct is not None:
                return direct.put(url, content=body(), headers=headers)
            return http.put(url, content=body(), headers={**headers, "Content-Type": "application/octet-stream"},
                            timeout=PART_TIMEOUT_S)

        response = retries.call(attempt, request=f"PUT part {number}", idempotent=True, pause=stop.wait)
        raise_for_problem(response)
        etag = response.headers["ETag"] if direct is not None else response.json()["etag"]
        if etag.strip('"') != digest.hexdigest():
            raise ServerError(f"part {number} of upload {upload_id} arrived damaged (the store holds MD5 "
                              f"{etag}, the file {digest.hexdigest()}); send it again with resume")
        return etag

    etags = dict(held)
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tuplehub-upload")
    futures: dict[Future[str], int] = {pool.submit(put, n): n for n in range(1, parts.count + 1) if n not in held}
    try:
        for future in as_completed(futures):
            etags[futures[future]] = future.result()
    except BaseException as exc:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, number in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                etags[number] = future.result()
        if isinstance(exc, KeyboardInterrupt):
            raise UploadInterrupted(upload_id, len(etags), parts.count) from None
        raise
    finally:
        pool.shutdown(wait=True)
        if direct is not None:
            direct.close()
    return [{"number": number, "etag": etags[number]} for number in sorted(etags)]

