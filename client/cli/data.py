"""Dataset, upload, export and job commands: thin wrappers over :class:`tuplehub.client.Client`.

The client is imported inside each command, so ``tuplehub --help`` never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tuplehub.client.cli.errors import INTERRUPTED, with_where
from tuplehub.client.cli.options import (
    DOCS_FILTERS,
    EPISODE_FILTER_EXAMPLE,
    TUPLE_FILTER_EXAMPLE,
    JobKinds,
    JobStatuses,
    Mode,
    Yes,
    bars,
    client,
    confirm,
    dataset_version,
    group,
    job_kind,
    writable,
)
from tuplehub.client.cli.output import AsJson, Url, done, emit, json_kind, parse_filter, read_json_file
from tuplehub.client.errors import CommandLineError, UploadInterrupted

if TYPE_CHECKING:
    from tuplehub.client.client import Client
    from tuplehub.client.jobs import Job
    from tuplehub.storage.models import DatasetRead, JobRead

datasets_app = group("Create, list, inspect, share and delete datasets.")
jobs_app = group("Follow and cancel jobs (uploads are 'ingest' jobs).")

Reference = Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset, optionally @2, @v2 or @latest.")]
Benchmark = Annotated[str | None, typer.Option(help="Benchmark id or name (see `tuplehub benchmarks list`).")]
Many = Annotated[list[str] | None, typer.Option(help="Repeat for several.")]
Groups = Annotated[list[str] | None, typer.Option("--group", help="Repeat for several.")]
TupleFilter = Annotated[str | None, typer.Option(help=f"Tuple filter as JSON, e.g. {TUPLE_FILTER_EXAMPLE} "
                                                      f"(see {DOCS_FILTERS}).")]
EpisodeFilter = Annotated[str | None, typer.Option("--episodes", help=f"Episode filter as JSON, e.g. "
                                                                      f"{EPISODE_FILTER_EXAMPLE}.")]
METADATA_EXAMPLE = '{"0": {"policy": "random"}, "1": {"policy": "expert"}}'


def _benchmark_id(hub: Client, reference: str | None) -> str | None:
    from tuplehub.client.cli.benchmarks import benchmark_id

    return benchmark_id(hub, reference) if reference else None


@datasets_app.command("create")
def create(name: str, description: Annotated[str, typer.Option(help="One line on what it holds.")] = "",
           tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeat for several tags.")] = None,
           benchmark: Benchmark = None,
           exist_ok: Annotated[bool, typer.Option("--exist-ok", help=(
               "If the dataset exists, show it instead of failing (its card is left as it is)."))] = False,
           url: Url = None, as_json: AsJson = False) -> None:
    """Create an empty dataset, optionally on a benchmark (needed to compare datasets)."""
    with client(url) as hub:
        created = hub.datasets.create(name, description=description, tags=tag or [],
                                      benchmark=_benchmark_id(hub, benchmark), exist_ok=exist_ok)
        emit(created.record, as_json=as_json, columns=("name", "description", "tags", "benchmark", "created_at"))


@datasets_app.command("list")
def list_datasets(name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
                  tag: Annotated[str | None, typer.Option(help="Has this tag.")] = None,
                  benchmark: Benchmark = None,
                  limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
                  offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
                  url: Url = None, as_json: AsJson = False) -> None:
    """List the datasets you can read."""
    with client(url) as hub:
        emit(hub.datasets.list(name=name, tag=tag, benchmark=_benchmark_id(hub, benchmark), limit=limit,
                               offset=offset), as_json=as_json,
             columns=("name", "latest_version", "episodes", "transitions", "tags"))


@datasets_app.command("show")
def show(dataset: Reference, url: Url = None, as_json: AsJson = False) -> None:
    """A dataset's card (who, what, how to cite), a version's figures and schema, and its versions."""
    name, number = dataset_version(dataset)
    with client(url) as hub:
        record = hub.datasets.get(name).record
        version = version_of(record, number)
        if as_json:
            emit(record, as_json=True)
            return
        emit(record, as_json=False, columns=(
            "name", "description", "authors", "license", "citation", "tags", "benchmark", "behavior_policies",
            "owner_name", "visibility", "published_to", "created_at"))
        if version is not None:
            _describe_version(hub, record, version)
        emit([{"version": v.number, "mode": v.mode, "episodes": v.episodes, "transitions": v.transitions,
               "created_at": v.created_at} for v in record.versions], as_json=False)


def version_of(record: DatasetRead, number: int | None) -> Any:
    """Version ``number`` of a dataset (the latest when None, None if it has none), or :class:`NotFound`."""
    if number is None:
        return record.versions[-1] if record.versions else None
    for version in record.versions:
        if version.number == number:
            return version
    from tuplehub.storage.errors import NotFound

    latest = record.versions[-1].number if record.versions else None
    raise NotFound(f"dataset {record.name!r} has no version {number}"
                   + (f" (latest is {latest})" if latest else " (it has no versions yet)"))


def _describe_version(hub: Client, record: DatasetRead, version: Any) -> None:
    """What a version holds: dtypes and shapes, the benchmark's spaces, and the figures computed at ingest."""
    schema = version.tuple_schema
    info = ", ".join(f"info.{key} {dtype}" for key, dtype in schema.info.items())
    typer.echo(f"version {version.number}: observation {schema.observation.describe()}, action "
               f"{schema.action.describe()}, reward {schema.reward}, episode ids {schema.episode_id}"
               + (f", {info}" if info else ""))
    if record.benchmark:
        import json

        spec = hub.benchmarks.get(record.benchmark).spec
        for label, space in (("observation space", spec.observation_space), ("action space", spec.action_space)):
            typer.echo(f"{label}: {json.dumps(space, separators=(',', ':'))}")
    stats = version.stats
    if stats is None:
        return
    for label, summary in (("return", stats.returns), ("length", stats.lengths)):
        if summary is not None:
            typer.echo(f"{label}: mean {summary.mean:.4g} ± {summary.std:.4g} (min {summary.min:.4g}, "
                       f"max {summary.max:.4g})")
    if stats.terminated_share is not None:
        typer.echo(f"terminated: {stats.terminated_share:.1%} of episodes")


@datasets_app.command("update")
def update(name: str, description: Annotated[str | None, typer.Option(help="One line on what it holds.")] = None,
           author: Many = None, license: Annotated[str | None, typer.Option(help="e.g. CC-BY-4.0")] = None,
           citation: Annotated[str | None, typer.Option(help="How to cite it (BibTeX or text).")] = None,
           policy: Many = None, tag: Many = None, benchmark: Benchmark = None,
           url: Url = None, as_json: AsJson = False) -> None:
    """Edit a dataset's card; options left out stay as they are (repeated ones replace the list)."""
    card = {"description": description, "authors": author, "license": license, "citation": citation,
            "behavior_policies": policy, "tags": tag}
    with client(url) as hub:
        if benchmark is not None:
            card["benchmark"] = _benchmark_id(hub, benchmark)
        updated = hub.datasets.get(name).update(**{k: v for k, v in card.items() if v is not None})
        emit(updated.record, as_json=as_json, columns=("name", "description", "authors", "license", "tags",
                                                       "benchmark", "behavior_policies"))


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
    with client(url) as hub:
        dataset = hub.datasets.get(name)
        change = dataset.publish if action == "publish" else dataset.unpublish
        emit(change(groups=groups or [], public=public).record, as_json=as_json,
             columns=("name", "visibility", "published_to"))


@datasets_app.command("delete")
def delete(name: str, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Delete a dataset and all of its versions (asks first; --yes without a terminal)."""
    with client(url) as hub:
        dataset = hub.datasets.get(name)  # a wrong name fails before the question
        versions = len(dataset.record.versions)
        confirm(f"delete dataset {name} and its {versions} version{'s' * (versions != 1)}", yes)
        dataset.delete()
        done(f"deleted dataset {name}", as_json=as_json, deleted="dataset", name=name)


@datasets_app.command("episodes")
def episodes(dataset: Reference,
             where: Annotated[str | None, typer.Option(help=f"Episode filter as JSON, e.g. {EPISODE_FILTER_EXAMPLE} "
                                                            f"(see {DOCS_FILTERS}).")] = None,
             limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
             offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
             url: Url = None, as_json: AsJson = False) -> None:
    """List a version's episodes, optionally filtered (the latest version unless NAME@VERSION)."""
    name, version = dataset_version(dataset)
    where_filter = parse_filter(where, "--where", episodes=True)
    with client(url) as hub:
        page = hub.datasets.get(name).episodes(where=where_filter, version=version, offset=offset, limit=limit)
        emit(page, as_json=as_json, columns=("index", "episode_id", "length", "return", "termination", "metadata"))


def upload(dataset: Annotated[str, typer.Argument(help="Dataset name (create it first).")],
           path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Parquet file of tuples.")],
           mode: Mode = "append",
           metadata: Annotated[Path | None, typer.Option(help=(
               f"JSON file of episode id -> metadata, e.g. {METADATA_EXAMPLE}."))] = None,
           wait: Annotated[bool, typer.Option(help="Wait for the ingest job to finish.")] = True,
           resume: Annotated[bool, typer.Option(
               "--resume", help="Send only the parts an interrupted upload of this file did not deliver.")] = False,
           url: Url = None, as_json: AsJson = False) -> None:
    """Upload a Parquet file of tuples as the dataset's next version."""
    episode_metadata = _episode_metadata(metadata) if metadata else None
    with client(url) as hub:
        try:
            job = hub.datasets.get(dataset).upload(path, mode=mode, episode_metadata=episode_metadata, resume=resume,
                                                   progress=bars(as_json))
        except UploadInterrupted:
            raise  # while the bytes moved: it says how many parts the server kept
        except KeyboardInterrupt:  # before the bytes moved, while a resume checked them, or while finishing
            from tuplehub.client.uploads import resume_command

            again = resume_command(dataset, path, mode)
            typer.echo(f"upload interrupted before its ingest job started: `tuplehub jobs list --kind upload` shows "
                       f"whether one did; if not, `{again}` sends only what is missing", err=True)
            raise typer.Exit(INTERRUPTED) from None
        if wait:
            _wait(job, as_json)
        emit(job.record, as_json=as_json, columns=("id", "status", "result", "error"))


def _episode_metadata(path: Path) -> dict[str, Any]:
    """``--metadata``: a JSON object of episode id -> object, refused in one line before anything is sent."""
    values = read_json_file(path, "--metadata", shape=dict, example=METADATA_EXAMPLE)
    for episode, value in values.items():
        if not isinstance(value, dict):
            raise CommandLineError(f"--metadata {path}: episode {episode!r} maps to {json_kind(value)}, not to a "
                                   "JSON object of metadata", hint=f"write it like {METADATA_EXAMPLE}")
    return values


def _sample(n: int | None, fraction: float | None, level: str, seed: int) -> dict[str, Any] | None:
    if n is not None and fraction is not None:
        raise CommandLineError("give one of --sample-n and --sample-fraction, not both")
    if n is None and fraction is None:
        return None
    return {"level": level, "seed": seed, **({"n": n} if n is not None else {"fraction": fraction})}


def _wait(job: Job, as_json: bool) -> None:
    """Wait with the job's bar; on Ctrl-C say that the job goes on and how to follow it."""
    try:
        job.wait(progress=bars(as_json))
    except KeyboardInterrupt:
        typer.echo(f"{job.record.kind} job {job.id} continues on the server; follow it with "
                   f"`tuplehub jobs show {job.id}`", err=True)
        raise typer.Exit(INTERRUPTED) from None


def export(dataset: Reference,
           out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the result.")] = Path("export.parquet"),
           where: TupleFilter = None, episodes_filter: EpisodeFilter = None,
           columns: Annotated[str | None, typer.Option(help="Comma-separated, e.g. observation,action.")] = None,
           next_observation: Annotated[bool, typer.Option(
               "--next-observation", help="Add each row's next observation.")] = False,
           sample_n: Annotated[int | None, typer.Option(help="After the filters: keep this many (seeded).")] = None,
           sample_fraction: Annotated[float | None, typer.Option(
               help="After the filters: keep this share, 0 < f <= 1 (seeded).")] = None,
           sample_level: Annotated[Literal["episode", "tuple"], typer.Option(
               help="Sample whole episodes or single rows.")] = "episode",
           keep: Annotated[str | None, typer.Option(help=(
               "Rebalance: keep every row matching this tuple filter, and --rest-fraction of the others."))] = None,
           rest_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
               "Rebalance: share of the other rows kept, 0 to 1."))] = 0.1,
           seed: Annotated[int, typer.Option(help="Seed of --sample-* and --keep: same seed, same rows.")] = 0,
           fmt: Annotated[Literal["parquet", "arrow"], typer.Option("--format", help="File format.")] = "parquet",
           url: Url = None, as_json: AsJson = False) -> None:
    """Export a filtered (and optionally sampled or rebalanced) subset of a dataset version to a file."""
    name, version = dataset_version(dataset)
    writable(out)
    where_filter = parse_filter(where, "--where")
    episode_filter = parse_filter(episodes_filter, "--episodes", episodes=True)
    keep_filter = parse_filter(keep, "--keep")
    sample = _sample(sample_n, sample_fraction, sample_level, seed)
    with client(url) as hub:
        rebalance = None
        if keep_filter is not None:
            from tuplehub.storage.models import Rebalance

            rebalance = Rebalance(keep=keep_filter, rest_fraction=rest_fraction, seed=seed)
        job = hub.datasets.get(name).export(
            where=where_filter, episodes=episode_filter, version=version,
            columns=columns.split(",") if columns else None, next_observation=next_observation, sample=sample,
            rebalance=rebalance, format=fmt)
        _wait(job, as_json)
        try:
            job.download(out, progress=bars(as_json))
        except KeyboardInterrupt:
            typer.echo(f"download interrupted: nothing was written to {out}; the result of export job {job.id} "
                       "stays on the server: the same command again reuses it", err=True)
            raise typer.Exit(INTERRUPTED) from None
        emit(job.record, as_json=as_json, columns=("id", "status", "result"))
        if not as_json:
            typer.echo(f"saved {out}")


@jobs_app.command("list")
def list_jobs(status: Annotated[JobStatuses | None, typer.Option(help="Only jobs in this state.")] = None,
              kind: Annotated[JobKinds | None, typer.Option(help="Only this kind (upload = ingest).")] = None,
              limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
              url: Url = None, as_json: AsJson = False) -> None:
    """My jobs, newest first."""
    with client(url) as hub:
        page = hub.jobs.list(status=status, kind=job_kind(kind), limit=limit)
        if as_json:
            emit(page, as_json=True)
            return
        emit({"items": [_job_row(job) for job in page.items], "total": page.total}, as_json=False,
             columns=("id", "kind", "dataset", "status", "progress", "created", "error"))


def _job_row(job: JobRead) -> dict[str, Any]:
    """A job as one table row: progress as 'commit 97%', the dataset it works on, why it failed."""
    progress = "" if job.status.finished else f"{job.progress.stage} {job.progress.fraction:.0%}".strip()
    return {"id": job.id, "kind": job.kind.value, "dataset": job.params.get("dataset") or job.params.get("target"),
            "status": job.status.value, "progress": progress, "created": job.created_at.strftime("%m-%d %H:%M"),
            "error": job.error.detail if job.error else ""}


@jobs_app.command("show")
def show_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """One job's status, progress, error and result; its owner by user name."""
    with client(url) as hub:
        record = hub.jobs.get(job_id).record
        if as_json:
            emit(record, as_json=True)
            return
        # people read the owner's name; the id stays in --json (and shows if the account is gone)
        shown = {**record.model_dump(mode="json"), **_job_words(record)}
        if record.owner_name is not None:
            del shown["owner"]
        emit(shown, as_json=False)


def _job_words(job: JobRead) -> dict[str, Any]:
    """A job's progress and error as sentences (``ingest 40%: row group 4 of 10``), not JSON; progress only
    while it runs (a failed job's last progress is stale and reads as if it went on)."""
    progress = job.progress
    shown = "" if job.status.finished else \
        f"{progress.stage} {progress.fraction:.0%}" + (f": {progress.message}" if progress.message else "")
    error = with_where(job.error.detail, job.error.model_dump()) if job.error is not None else ""
    return {"progress": shown, "error": error}


@jobs_app.command("wait")
def wait_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """Wait for a job to end; exit 1 if it failed (Ctrl-C leaves the job running)."""
    with client(url) as hub:
        job = hub.jobs.get(job_id)
        _wait(job, as_json)
        emit(job.record, as_json=as_json, columns=("id", "status", "result"))


@jobs_app.command("cancel")
def cancel_job(job_id: str, url: Url = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running job (a finished one is left as it is, and you are told)."""
    with client(url) as hub:
        job = hub.jobs.get(job_id)
        if job.status.finished:
            if as_json:
                emit(job.record, as_json=True)
            else:
                typer.echo(f"job {job.id} already {job.status.value}; nothing to cancel")
            return
        emit(job.cancel().record, as_json=as_json, columns=("id", "status", "cancel_requested"))
