"""``tuplehub artifacts``: policies, configs and other files kept beside datasets, stored once per content."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tuplehub.client.cli.options import Yes, bars, client, confirm, group, writable
from tuplehub.client.cli.output import AsJson, Url, done, emit, read_json_file

if TYPE_CHECKING:
    from tuplehub.client.client import Client

artifacts_app = group("Artifacts: files (policies, configs, logs) linked to benchmarks and datasets.")

ArtifactId = Annotated[str, typer.Argument(metavar="ARTIFACT", help="Artifact id (its SHA-256, as listed).")]
Benchmarks = Annotated[list[str] | None, typer.Option("--benchmark", help="Benchmark id or name; repeat.")]
Datasets = Annotated[list[str] | None, typer.Option("--dataset", help="Dataset name; repeat.")]
Groups = Annotated[list[str] | None, typer.Option("--group", help="Repeat for several.")]
COLUMNS = ("id", "name", "size", "media_type", "visibility", "created_at")
METADATA_EXAMPLE = '{"algorithm": "CQL", "steps": 100000}'


def _benchmark_ids(hub: Client, references: list[str] | None) -> list[str]:
    from tuplehub.client.cli.benchmarks import benchmark_id

    return [benchmark_id(hub, reference) for reference in references or []]


@artifacts_app.command("upload")
def upload(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file to keep.")],
           name: Annotated[str | None, typer.Option(help="Name to show (default: the file's name).")] = None,
           media_type: Annotated[str | None, typer.Option(help="e.g. application/json (default: guessed).")] = None,
           metadata: Annotated[Path | None, typer.Option(help=f"JSON file of metadata, e.g. {METADATA_EXAMPLE}.")]
           = None, benchmark: Benchmarks = None, dataset: Datasets = None,
           url: Url = None, as_json: AsJson = False) -> None:
    """Upload a file (with a progress bar on a terminal); the same bytes always get the same id."""
    values = read_json_file(metadata, "--metadata", shape=dict, example=METADATA_EXAMPLE) if metadata else None
    with client(url) as hub:
        artifact = hub.artifacts.upload(path, name=name, media_type=media_type, metadata=values,
                                        benchmarks=_benchmark_ids(hub, benchmark), datasets=dataset or [],
                                        progress=bars(as_json))
        emit(artifact.record, as_json=as_json, columns=COLUMNS)


@artifacts_app.command("list")
def list_artifacts(name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
                   benchmark: Annotated[str | None, typer.Option(help="Linked to this benchmark (id or name).")]
                   = None,
                   dataset: Annotated[str | None, typer.Option(help="Linked to this dataset.")] = None,
                   limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
                   offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
                   url: Url = None, as_json: AsJson = False) -> None:
    """The artifacts you can read, newest first."""
    with client(url) as hub:
        linked = _benchmark_ids(hub, [benchmark] if benchmark else None)
        emit(hub.artifacts.list(name=name, benchmark=linked[0] if linked else None, dataset=dataset, limit=limit,
                                offset=offset), as_json=as_json, columns=COLUMNS)


@artifacts_app.command("show")
def show(artifact_id: ArtifactId, url: Url = None, as_json: AsJson = False) -> None:
    """One artifact: name, size, type, metadata and what it is linked to."""
    with client(url) as hub:
        emit(hub.artifacts.get(artifact_id).record, as_json=as_json)


@artifacts_app.command("download")
def download(artifact_id: ArtifactId,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to save it (default: its name).")]
             = None, url: Url = None, as_json: AsJson = False) -> None:
    """Save an artifact's bytes to a file (with a progress bar on a terminal)."""
    with client(url) as hub:
        artifact = hub.artifacts.get(artifact_id)
        target = out or Path(Path(artifact.record.name).name)
        writable(target)
        artifact.download(target, progress=bars(as_json))
        done(f"saved {target} ({artifact.record.size} bytes)", as_json=as_json, id=artifact.id, path=str(target),
             size=artifact.record.size)


@artifacts_app.command("link")
def link(artifact_id: ArtifactId, benchmark: Benchmarks = None, dataset: Datasets = None,
         url: Url = None, as_json: AsJson = False) -> None:
    """Set what an artifact is linked to (replaces its links; none given clears them)."""
    with client(url) as hub:
        linked = hub.artifacts.get(artifact_id).link(benchmarks=_benchmark_ids(hub, benchmark), datasets=dataset or [])
        emit(linked.record, as_json=as_json, columns=("id", "name", "benchmarks", "datasets"))


@artifacts_app.command("publish")
def publish(artifact_id: ArtifactId, group: Groups = None,
            public: Annotated[bool, typer.Option("--public", help="Readable by everyone signed in.")] = False,
            url: Url = None, as_json: AsJson = False) -> None:
    """Share an artifact with groups or everyone."""
    with client(url) as hub:
        shared = hub.artifacts.get(artifact_id).publish(groups=group or [], public=public)
        emit(shared.record, as_json=as_json, columns=("id", "name", "visibility"))


@artifacts_app.command("unpublish")
def unpublish(artifact_id: ArtifactId, group: Groups = None,
              public: Annotated[bool, typer.Option("--public", help="Withdraw from public view.")] = False,
              url: Url = None, as_json: AsJson = False) -> None:
    """Withdraw an artifact from groups or from public view."""
    with client(url) as hub:
        shared = hub.artifacts.get(artifact_id).unpublish(groups=group or [], public=public)
        emit(shared.record, as_json=as_json, columns=("id", "name", "visibility"))


@artifacts_app.command("delete")
def delete(artifact_id: ArtifactId, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Delete your record of an artifact (asks first; --yes without a terminal)."""
    with client(url) as hub:
        artifact = hub.artifacts.get(artifact_id)
        confirm(f"delete artifact {artifact.record.name} ({artifact_id[:12]})", yes)
        artifact.delete()
        done(f"deleted artifact {artifact_id}", as_json=as_json, deleted="artifact", id=artifact_id)
