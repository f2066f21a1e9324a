"""Artifacts from the client: upload any file (stored once per content), find it, download it.

    art = hub.artifacts.upload("policy.d3", metadata={"algorithm": "CQL"}, datasets=["pendulum-mixed"])
    art.download("copy.d3")
"""

from __future__ import annotations

import contextlib
import math
import mimetypes
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tuplehub.client.errors import UploadInterrupted, raise_for_problem
from tuplehub.client.jobs import Job
from tuplehub.client.progress import content_length, save
from tuplehub.client.retries import IDEMPOTENT
from tuplehub.client.sharing import Shareable
from tuplehub.client.uploads import DEFAULT_PART_SIZE, MAX_PARTS, PartSink, send_file
from tuplehub.storage.artifacts import ArtifactRead
from tuplehub.storage.models import Page

DOWNLOAD_CHUNK = 4 * 2**20


class Artifact(Shareable[ArtifactRead]):
    @property
    def _path(self) -> str:
        return f"/artifacts/{self.id}"

    @property
    def id(self) -> str:
        return self.record.id

    def _stream(self) -> Any:
        response = self._http.get(f"/artifacts/{self.id}/url")
        raise_for_problem(response)
        answer = response.json()
        if answer.get("expires_at") is None:  # through the API, with our credentials
            return self._http.stream("GET", answer["url"], timeout=600)
        return httpx.stream("GET", answer["url"], timeout=600)  # presigned: no API credentials go along

    def download(self, path: str | Path, *, progress: bool | None = None) -> Path:
        """Write the bytes to ``path`` (streamed; memory stays at one chunk; a byte bar on a terminal)."""
        target = Path(path)
        with self._stream() as response:
            if response.status_code >= 400:
                response.read()
                raise_for_problem(response)
            return save(response.iter_bytes(DOWNLOAD_CHUNK), target, desc=f"download {target.name}",
                        total=content_length(response), progress=progress)

    def read(self) -> bytes:
        """The whole content in memory (for small artifacts: hyperparameters, configs)."""
        with self._stream() as response:
            if response.status_code >= 400:
                response.read()
                raise_for_problem(response)
            return response.read()

    def link(self, *, benchmarks: Iterable[str] = (), datasets: Iterable[str] = ()) -> Artifact:
        """Replace the benchmarks (ids) and datasets (names) this artifact is linked to."""
        return self._apply(self._http.put(f"{self._path}/links",
                                          json={"benchmarks": list(benchmarks), "datasets": list(datasets)}))

    def __repr__(self) -> str:
        return f"<Artifact {self.record.name} {self.id[:12]}>"


class Artifacts:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def upload(self, source: str | Path | bytes, *, name: str | None = None, media_type: str | None = None,
               metadata: Mapping[str, Any] | None = None, benchmarks: Iterable[str] = (),
               datasets: Iterable[str] = (), part_size: int = DEFAULT_PART_SIZE,
               progress: bool | None = None) -> Artifact:
        """Upload a file (or bytes) in parts and wait until it is stored; the same bytes get the same id.

        A file goes from disk a chunk at a time, with a byte bar on a terminal (``progress``).
        """
        if isinstance(source, bytes) and name is None:
            raise ValueError("give a name for an artifact uploaded from bytes")
        label = name or Path(source).name  # type: ignore[arg-type]
        guessed = mimetypes.guess_type(label)[0] if media_type is None else media_type
        # the size is declared, so the server checks it against its limits before a byte is sent
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        response = self._http.post("/artifacts/uploads", json={
            "name": label, "media_type": guessed or "application/octet-stream", "metadata": dict(metadata or {}),
            "benchmarks": list(benchmarks), "datasets": list(datasets), "size": size,
            "part_size": max(part_size, math.ceil(size / MAX_PARTS))}, extensions=IDEMPOTENT)  # see .retries
        raise_for_problem(response)
        session = response.json()
        try:
            if isinstance(source, bytes):
                sink = PartSink(self._http, session)
                sink.write(source)
                parts = sink.finish()
            else:
                parts = send_file(self._http, session, Path(source), progress=progress)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._http.delete(f"/uploads/{session['id']}")
            if isinstance(exc, KeyboardInterrupt):
                raise UploadInterrupted(session["id"], 0, 0) from None
            raise
        response = self._http.post(f"/uploads/{session['id']}/complete", json={"parts": parts}, extensions=IDEMPOTENT)
        raise_for_problem(response)
        job = Job(self._http, response.json()).wait(progress=False)
        return self.get(job.result["artifact_id"])  # type: ignore[index]

    def get(self, artifact_id: str) -> Artifact:
        response = self._http.get(f"/artifacts/{artifact_id}")
        raise_for_problem(response)
        return Artifact(self._http, ArtifactRead.model_validate(response.json()))

    def list(self, *, name: str | None = None, benchmark: str | None = None, dataset: str | None = None,
             offset: int = 0, limit: int = 100) -> Page[ArtifactRead]:
        params = {k: v for k, v in {"name": name, "benchmark": benchmark, "dataset": dataset, "offset": offset,
                                    "limit": limit}.items() if v is not None}
        response = self._http.get("/artifacts", params=params)
        raise_for_problem(response)
        return Page[ArtifactRead].model_validate(response.json())
