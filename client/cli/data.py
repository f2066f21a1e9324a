"""Dataset, upload, export and job commands: thin wrappers over :class:`tuplehub.client.Client`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tuplehub.client.cli.output import AsJson, Url, emit, parse_filter, reported_errors
from tuplehub.client.client import Client
from tuplehub.client.jobs import Job

datasets_app = typer.Typer(help="Create, list and inspect datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Follow and cancel jobs.", no_args_is_help=True)



def _split(reference: str) -> tuple[str, int | None]:
    """``name`` or ``name@version``."""
    name, _, version = reference.partition("@")
    return name, int(version) if version else None


@datasets_app.command("create")
def create(name: str, description: Annotated[str, typer.Option()] = "",
           tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeat for several tags.")] = None,
           url: Url = None, as_json: AsJson = False) -> None:
    """Create an empty dataset."""
    with reported_errors(), Client(url) as hub:
        emit(hub.datasets.create(name, description=description, tags=tag or []).record, as_json=as_json,
             columns=("name", "description", "tags", "created_at"))


@datasets_app.command("list")
def list_datasets(name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
                  tag: Annotated[str | None, typer.Option()] = None, limit: int = 50, offset: int = 0,
                  url: Url = None, as_json: AsJson = False) -> None:
    """List datasets."""
    with reported_errors(), Client(url) as hub:
        emit(hub.datasets.list(name=name, tag=tag, limit=limit, offset=offset), as_json=as_json,
             columns=("name", "latest_version", "episodes", "transitions", "tags"))


@datasets_app.command("show")
def show(name: str, url: Url = None, as_json: AsJson = False) -> None:
    """A dataset's card (who, what, how to cite, figures of the latest version) and its versions."""
    with reported_errors(), Client(url) as hub:
        record = hub.datasets.get(name).record
        if as_json:
            emit(record, as_json=True)
            return
        emit(record, as_json=False, columns=(
            "name", "description", "authors", "license", "citation", "tags", "benchmark", "behavior_policies",
            "owner_name", "visibility", "published_to", "created_at"))
        stats = record.versions[-1].stats if record.versions else None
        if stats is not None:
            for label, summary in (("return", stats.returns), ("length", stats.lengths)):
                if summary is not None:
                    typer.echo(f"{label}: mean {summary.mean:.4g} ± {summary.std:.4g} (min {summary.min:.4g}, "
                               f"max {summary.max:.4g})")
            if stats.terminated_share is not None:
                typer.echo(f"terminated: {stats.terminated_share:.1%} of episodes")
        emit([{"version": v.number, "mode": v.mode, "episodes": v.episodes, "transitions": v.transitions,
               "created_at": v.created_at} for v in record.versions], as_json=False)


Many = Annotated[list[str] | None, typer.Option(help="Repeat for several.")]


@datasets_app.command("update")
def update(name: str, description: Annotated[str | None, typer.Option()] = None,
           author: Many = None, license: Annotated[str | None, typer.Option()] = None,
           citation: Annotated[str | None, typer.Option()] = None, policy: Many = None, tag: Many = None,
           benchmark: Annotated[str | None, typer.Option(help="Benchmark id.")] = None,
           url: Url = None, as_json: AsJson = False) -> None:
    """Edit a dataset's card; options left out stay as they are (repeated ones replace the list)."""
    card = {"description": description, "authors": author, "license": license, "citation": citation,
            "behavior_policies": policy, "tags": tag, "benchmark": benchmark}
    with reported_errors(), Client(url) as hub:
        updated = hub.datasets.get(name).update(**{k: v for k, v in card.items() if v is not None})
        emit(updated.record, as_json=as_json, columns=("name", "description", "authors", "license", "tags",
                                                       "behavior_policies"))


Groups = Annotated[list[str] | None, typer.Option("--group", help="Repeat for several.")]


@datasets_app.command("publish")
def publish(name: str, group: Groups = None,
            public: Annotated[bool, typer.Option("--public", help="Readable by everyone signed in.")] = False,
            url: Url = None, as_json: AsJson = False) -> None:
    """Share a dataset with groups or everyone."""
    _share(name, "publish", group, public, url, as_json)


@datasets_app.command("unpublish")
def unpublish(name: str, group: Groups = None,
              public: Annotated[bool, typer.Option("--public", help="Withdraw from public view.")] = False,
              url: Url = None, as_json: AsJson = False) -> None:
    """Withdraw a dataset from groups or from public view."""
    _share(name, "unpublish", group, public, url, as_json)


def _share(name: str, action: str, groups: list[str] | None, public: bool, url: str | None, as_json: bool) -> None:
    with reported_errors(), Client(url) as hub:
        dataset = hub.datasets.get(name)
        change = dataset.publish if action == "publish" else dataset.unpublish
        emit(change(groups=groups or [], public=public).record, as_json=as_json,
             columns=("name", "visibility", "published_to"))


@datasets_app.command("delete")
def delete(name: str, url: Url = None) -> None:
    """Delete a dataset and all of its versions."""
    with reported_errors(), Client(url) as hub:
        hub.datasets.get(name).delete()
        typer.echo(f"deleted dataset {name}")


@datasets_app.command("episodes")
def episodes(dataset: Annotated[str, typer.Argument(help="name or name@version")],
             where: Annotated[str | None, typer.Option(help="Episode filter as JSON.")] = None,
             limit: int = 20, offset: int = 0, url: Url = None, as_json: AsJson = False) -> None:
    """List a version's episodes, optionally filtered."""
    name, version = _split(dataset)
    with reported_errors(), Client(url) as hub:
        page = hub.datasets.get(name).episodes(where=parse_filter(where, "--where"), version=version,
                                               offset=offset, limit=limit)
        emit(page, as_json=as_json, columns=("index", "episode_id", "length", "return", "termination", "metadata"))


def upload(dataset: Annotated[str, typer.Argument(help="Dataset name.")],
           path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Parquet file of tuples.")],
           mode: Annotated[str, typer.Option(help="append or replace")] = "append",
           metadata: Annotated[Path | None, typer.Option(help="JSON file: episode id -> metadata.")] = None,
           wait: Annotated[bool, typer.Option(help="Wait for the ingest job to finish.")] = True,
           resume: Annotated[bool, typer.Option(
               "--resume", help="Send only the parts an interrupted upload of this file did not deliver.")] = False,
           url: Url = None, as_json: AsJson = False) -> None:
    """Upload a Parquet file of tuples as the dataset's next version."""
    episode_metadata = json.loads(metadata.read_text()) if metadata else None
    with reported_errors(), Client(url) as hub:
        job = hub.datasets.get(dataset).upload(path, mode=mode, episode_metadata=episode_metadata, resume=resume,
                                               progress=None if not as_json else False)
        if wait:
            _wait(job, as_json)
        emit(job.record, as_json=as_json, columns=("id", "status", "result", "error"))


def _wait(job: Job, as_json: bool) -> None:
    """Wait with the job's bar; on Ctrl-C say that the job goes on and how to follow it."""
    try:
        job.wait(progress=None if not as_json else False)
    except KeyboardInterrupt:
        typer.echo(f"{job.record.kind} job {job.id} continues on the server; follow it with "
                   f"`tuplehub jobs show {job.id}`", err=True)
        raise typer.Exit(130) from None


def export(dataset: Annotated[str, typer.Argument(help="name or name@version")],
           out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the result.")] = Path("export.parquet"),
           where: Annotated[str | None, typer.Option(help="Tuple filter as JSON.")] = None,
           episodes_filter: Annotated[str | None, typer.Option("--episodes", help="Episode filter as JSON.")] = None,
           columns: Annotated[str | None, typer.Option(help="Comma-separated columns.")] = None,
           next_observation: Annotated[bool, typer.Option(help="Add next_observation.")] = False,
           fmt: Annotated[str, typer.Option("--format", help="parquet or arrow")] = "parquet",
           url: Url = None, as_json: AsJson = False) -> None:
    """Export a filtered subset of a dataset version to a file."""
    name, version = _split(dataset)
    with reported_errors(), Client(url) as hub:
        job = hub.datasets.get(name).export(
            where=parse_filter(where, "--where"), episodes=parse_filter(episodes_filter, "--episodes"),
            version=version, columns=columns.split(",") if columns else None,
            next_observation=next_observation, format=fmt)
        _wait(job, as_json)
        job.download(out, progress=None if not as_json else False)
        emit(job.record, as_json=as_json, columns=("id", "status", "result"))
        if not as_json:
            typer.echo(f"saved {out}")


@jobs_app.command("list")
def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 20, url: Url = None,
              as_json: AsJson = False) -> None:
    """My jobs, newest first."""
    with reported_errors(), Client(url) as hub:
        emit(hub.jobs.list(status=status, kind=kind, limit=limit), as_json=as_json,
             columns=("id", "kind", "status", "progress", "created_at"))


@jobs_app.command("show")
def show_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """One job's status, progress, error and result."""
    with reported_errors(), Client(url) as hub:
        emit(hub.jobs.get(job_id).record, as_json=as_json)


@jobs_app.command("wait")
def wait_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """Wait for a job to end; exit 1 if it failed."""
    with reported_errors(), Client(url) as hub:
        job = hub.jobs.get(job_id)
        job.wait(progress=None if not as_json else False)
        emit(job.record, as_json=as_json, columns=("id", "status", "result"))


@jobs_app.command("cancel")
def cancel_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """Cancel a job."""
    with reported_errors(), Client(url) as hub:
        emit(hub.jobs.get(job_id).cancel().record, as_json=as_json, columns=("id", "status", "cancel_requested"))
