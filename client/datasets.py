"""Datasets from the client: create, find, upload to, list episodes of, and export from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel

from tuplehub.client.errors import raise_for_problem
from tuplehub.client.jobs import Job
from tuplehub.client.retries import IDEMPOTENT
from tuplehub.client.sharing import Shareable
from tuplehub.storage.errors import Conflict, NotFound
from tuplehub.storage.filters.language import FilterNode
from tuplehub.storage.models import (
    DatasetRead,
    DatasetSummary,
    DeriveSource,
    EpisodeRead,
    Page,
    Rebalance,
    Sampling,
    UploadMode,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    import pyarrow as pa

    from tuplehub.client.exports import Export

    # Also a pandas DataFrame (tensors as ``observation[i]`` columns), recognised without importing pandas.
    UploadSource: TypeAlias = Mapping[str, Any] | pa.Table | str | Path | Iterable[Mapping[str, Any]]


def _source_json(source: DeriveSource | Mapping[str, Any]) -> dict[str, Any]:
    """A derive source as JSON; the server validates it (a mistake comes back as a 422 naming it)."""
    if isinstance(source, DeriveSource):
        return source.model_dump(mode="json", exclude_none=True)
    out = {}
    for key, value in source.items():
        if value is None:
            continue
        out[key] = value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
    return out


class Dataset(Shareable[DatasetRead]):
    """A handle on one dataset; ``record`` is what the server last said about it."""

    @property
    def _path(self) -> str:
        return f"/datasets/{self.name}"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def latest_version(self) -> int | None:
        return self.record.latest_version

    def refresh(self) -> Dataset:
        response = self._http.get(f"/datasets/{self.name}")
        raise_for_problem(response)
        self.record = DatasetRead.model_validate(response.json())
        return self

    def upload(self, source: UploadSource, *, mode: UploadMode | str = UploadMode.append,
               episode_metadata: Mapping[Any, Mapping[str, Any]] | None = None,
               part_size: int | None = None, parallel: int | None = None,
               compression: str | None = "lz4", resume: bool = False, progress: bool | None = None) -> Job:
        """Send ``source`` as a new version; returns the ``ingest`` job (call ``.wait()``).

        ``source`` is a dict of per-step arrays (``episode_id``, ``observation``, ``action``,
        ``reward``, ``terminated``, ``truncated``, optional ``step``, ``next_observation`` and
        ``info.*``), an Arrow table of the same columns, the path of a Parquet file, or an
        iterator of episodes (dicts of per-step arrays, optionally with ``episode_id`` and
        ``metadata``), or a pandas DataFrame as ``Export.to_pandas()`` makes it.
        ``mode="append"`` keeps the previous version's episodes; ``"replace"``
        starts over. Memory stays at a few parts of ``part_size`` bytes (32 MiB unless given, 4 in
        flight unless ``parallel`` says otherwise) whatever the source's size. A file that is not
        Parquet, or an append whose columns do not match the dataset, is refused before any byte is
        sent. ``resume=True`` (a file) sends only the parts an interrupted upload of the same file did
        not deliver. ``progress=None`` shows a byte bar on a terminal only.
        """
        from tuplehub.client.uploads import DEFAULT_PARALLEL, DEFAULT_PART_SIZE, upload_dataset  # not for listings

        record = upload_dataset(
            self._http, self.name, source, mode=mode, episode_metadata=episode_metadata,
            part_size=part_size or DEFAULT_PART_SIZE, parallel=parallel or DEFAULT_PARALLEL,
            compression=compression, resume=resume, progress=progress)
        return Job(self._http, record, on_success=lambda _: self.refresh())

    def export(self, *, where: FilterNode | None = None, episodes: FilterNode | None = None,
               version: int | None = None, columns: list[str] | None = None, next_observation: bool = False,
               sample: Sampling | Mapping[str, Any] | None = None, rebalance: Rebalance | None = None,
               format: str = "arrow") -> Export:
        """Start an export of the rows that pass ``where`` in the episodes that pass ``episodes``.

        ``sample`` (e.g. ``Sampling(fraction=0.1, seed=1)``, or ``level="tuple"`` for rows) and
        ``rebalance`` (``Rebalance(keep=F.reward > 0, rest_fraction=0.1)``) apply after the filters;
        the same seed gives the same rows. The default format, an Arrow IPC stream, is decoded while
        it downloads (``to_numpy``, ``to_arrow``, ``iter_batches``); ask for ``format="parquet"`` to
        keep a file for other tools.
        """
        body = {"version": version, "columns": columns, "next_observation": next_observation, "format": format,
                "where": where.to_json() if where is not None else None,
                "episodes": episodes.to_json() if episodes is not None else None,
                "sample": sample.model_dump(mode="json") if isinstance(sample, Sampling) else sample,
                "rebalance": rebalance.model_dump(mode="json", exclude_none=True) if rebalance is not None else None}
        from tuplehub.client.exports import Export

        # Safe to send again (.retries): the API answers an identical live request with the same job.
        response = self._http.post(f"/datasets/{self.name}/exports", json=body, extensions=IDEMPOTENT)
        raise_for_problem(response)
        return Export(self._http, response.json())

    def episodes(self, *, where: FilterNode | None = None, version: int | None = None, offset: int = 0,
                 limit: int = 100) -> Page[EpisodeRead]:
        """A page of a version's episodes (the latest version by default) that pass ``where``."""
        number = version or self.refresh().latest_version
        if number is None:
            return Page(items=[], total=0, offset=offset, limit=limit)
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if where is not None:
            params["where"] = where.model_dump_json(exclude_none=True)
        response = self._http.get(f"/datasets/{self.name}/versions/{number}/episodes", params=params)
        raise_for_problem(response)
        return Page[EpisodeRead].model_validate(response.json())

    def update(self, **card: Any) -> Dataset:
        """Edit the card: ``description``, ``tags``, ``benchmark``, ``authors``, ``license``,
        ``citation``, ``behavior_policies``; what is not given stays."""
        return self._apply(self._http.patch(self._path, json=card))

    def __repr__(self) -> str:
        version = f"v{self.latest_version}" if self.latest_version is not None else "(no versions yet)"
        return f"<Dataset {self.name} {version}>"


class Datasets:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def create(self, name: str, *, description: str = "", tags: Iterable[str] = (), benchmark: str | None = None,
               exist_ok: bool = False, **card: Any) -> Dataset:
        """An empty dataset; ``benchmark`` (an id) links it to the environment it is recorded on.

        ``card`` takes ``authors``, ``license``, ``citation`` and ``behavior_policies``. With
        ``exist_ok`` a dataset of that name that the caller can read is returned as it is (its
        card unchanged), so a script can be run again.
        """
        response = self._http.post("/datasets", json={"name": name, "description": description,
                                                      "tags": list(tags), "benchmark": benchmark, **card})
        try:
            raise_for_problem(response)
        except Conflict:
            if not exist_ok:
                raise
            return self.get(name)
        return Dataset(self._http, DatasetRead.model_validate(response.json()))

    def derive(self, target: str, sources: Iterable[DeriveSource | Mapping[str, Any]], *,
               mode: UploadMode | str = UploadMode.replace, renumber: bool = False, create: bool = True,
               **card: Any) -> Job:
        """Make ``target``'s next version on the server from whole episodes of ``sources``.

        Each source names a ``dataset`` (and ``version``, ``episodes`` filter, episode ``sample``).
        The target is created first if missing (with ``card`` fields). Returns the ``derive`` job.
        """
        if create:
            try:
                self.get(target)
            except NotFound:
                self.create(target, **card)
        body = {"sources": [_source_json(s) for s in sources], "mode": UploadMode(mode).value, "renumber": renumber}
        response = self._http.post(f"/datasets/{target}/derive", json=body)
        raise_for_problem(response)
        return Job(self._http, response.json())

    def merge(self, target: str, names: Iterable[str], *, renumber: bool = True, **card: Any) -> Job:
        """One dataset holding every episode of ``names`` (latest versions), renumbered 0..N-1 by default."""
        return self.derive(target, [{"dataset": name} for name in names], renumber=renumber, **card)

    def split(self, source: str, *, train: str, validation: str, fraction: float = 0.8, seed: int = 0,
              version: int | None = None) -> tuple[Job, Job]:
        """Split episodes into two datasets, ``fraction`` of them (exactly, rounded) to ``train``."""
        jobs = []
        for target, complement in ((train, False), (validation, True)):
            sample = Sampling(fraction=fraction, seed=seed, complement=complement)
            jobs.append(self.derive(target, [{"dataset": source, "version": version, "sample": sample}]))
        return jobs[0], jobs[1]

    def get(self, name: str) -> Dataset:
        response = self._http.get(f"/datasets/{name}")
        raise_for_problem(response)
        return Dataset(self._http, DatasetRead.model_validate(response.json()))

    def list(self, *, name: str | None = None, tag: str | None = None, benchmark: str | None = None,
             owner: str | None = None, mine: bool = False, offset: int = 0, limit: int = 50) -> Page[DatasetSummary]:
        params = {k: v for k, v in {"name": name, "tag": tag, "benchmark": benchmark, "owner": owner,
                                    "mine": mine or None, "offset": offset, "limit": limit}.items() if v is not None}
        response = self._http.get("/datasets", params=params)
        raise_for_problem(response)
        return Page[DatasetSummary].model_validate(response.json())
