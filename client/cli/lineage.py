"""Derived datasets from the command line: ``tuplehub derive`` and ``tuplehub lineage``."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from tuplehub.client.cli.data import version_of
from tuplehub.client.cli.errors import plain_words
from tuplehub.client.cli.options import Mode, bars, client, dataset_version
from tuplehub.client.cli.output import AsJson, Url, emit, json_or_word
from tuplehub.client.errors import CommandLineError

if TYPE_CHECKING:
    from tuplehub.client.client import Client
    from tuplehub.storage.models import DeriveSource, VersionRecord

MAX_DEPTH = 10


def derive(target: str,
           source: Annotated[list[str], typer.Option("--source", help=(
               'JSON of one source, e.g. \'{"dataset": "walks", "version": 2, "episodes": {...}, '
               '"sample": {"fraction": 0.8, "seed": 0}}\', or just walks@2; repeat to merge.'))],
           renumber: Annotated[bool, typer.Option(help="Number the episodes 0..N-1.")] = False,
           mode: Mode = "replace",
           url: Url = None, as_json: AsJson = False) -> None:
    """Make TARGET's next version on the server from whole episodes of other versions (created if missing)."""
    sources = [_source(text) for text in source]
    with client(url) as hub:
        job = hub.datasets.derive(target, sources, mode=mode, renumber=renumber)
        job.wait(progress=bars(as_json))
        emit(job.record, as_json=as_json, columns=("id", "status", "result"))


def _source(text: str) -> DeriveSource:
    """One ``--source``: JSON naming a dataset, or just ``walks@2`` (``{"dataset": "walks@2"}`` means version 2)."""
    from pydantic import ValidationError

    from tuplehub.storage.models import DeriveSource

    value = json_or_word(text)
    if isinstance(value, str):  # a bare NAME[@VERSION]: all of its episodes
        value = {"dataset": value}
    if isinstance(value, dict) and "@" in str(value.get("dataset", "")) and value.get("version") is None:
        name, version = dataset_version(str(value["dataset"]))
        value = {**value, "dataset": name, "version": version}
    try:
        return DeriveSource.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        words = plain_words(where, error["msg"], "derive") or f"{where + ': ' if where else ''}{error['msg']}"
        raise CommandLineError(f"--source {text}: {words}",
                               hint='write it like \'{"dataset": "walks", "version": 2}\' or walks@2') from exc


def _command(target: str, version: VersionRecord) -> str:
    assert version.lineage is not None
    parts = ["tuplehub", "derive", f"{target}-rebuilt"]
    for source in version.lineage.sources:
        spec = {"dataset": source.dataset, "version": source.version,
                **source.model_dump(mode="json", include={"episodes", "where", "sample", "rebalance"},
                                    exclude_none=True)}
        parts += ["--source", json.dumps(spec, separators=(",", ":"))]
    if version.lineage.renumber:
        parts.append("--renumber")
    return shlex.join(parts)


def _describe(hub: Client, name: str, number: int | None, depth: int, lines: list[str]) -> None:
    from tuplehub.storage.errors import NotFound

    indent = "  " * depth
    try:
        record = hub.datasets.get(name).record
    except NotFound:
        lines.append(f"{indent}{name}@{number}: not readable")
        return
    version = next((v for v in record.versions if v.number == number), None) if number else \
        (record.versions[-1] if record.versions else None)
    if version is None:
        lines.append(f"{indent}{name}: no such version")
        return
    label = f"{indent}{name}@{version.number} (content {version.content_hash or 'unknown'})"
    if version.lineage is None:
        lines.append(f"{label}: uploaded by job {version.job_id}")
        return
    lines.append(f"{label}: derived by job {version.lineage.job_id}"
                 + (", episodes renumbered" if version.lineage.renumber else "") + " from")
    for source in version.lineage.sources:
        choice = [f"{key} {json.dumps(value, separators=(',', ':'))}" for key, value in source.model_dump(
            mode="json", include={"episodes", "where", "sample", "rebalance"}, exclude_none=True).items()]
        lines.append(f"{indent}  - {source.dataset}@{source.version}" + (f": {'; '.join(choice)}" if choice else ""))
        if depth < MAX_DEPTH:
            _describe(hub, source.dataset, source.version, depth + 2, lines)
    if depth == 0:
        lines.append("rebuild with:")
        lines.append(f"  {_command(name, version)}")
        lines.append(f"  (the rebuilt version's content hash is {version.content_hash})")


def lineage(dataset: Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset, optionally @2.")],
            url: Url = None, as_json: AsJson = False) -> None:
    """Where a dataset version came from, down to uploads, and how to rebuild it."""
    name, number = dataset_version(dataset)
    with client(url) as hub:
        if as_json:
            record = hub.datasets.get(name).record
            version_of(record, number)
            chosen = [v for v in record.versions if not number or v.number == number][-1:]
            emit([{"version": v.number, "content_hash": v.content_hash,
                   "lineage": v.lineage.model_dump(mode="json") if v.lineage else None} for v in chosen],
                 as_json=True)
            return
        version_of(hub.datasets.get(name).record, number)  # a missing dataset or version fails here, exit 1
        lines: list[str] = []
        _describe(hub, name, number, 0, lines)
        typer.echo("\n".join(lines))
