"""``tuplehub metrics``: compute dataset-quality metrics, show them, compare datasets, draw a report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.options import bars, client, dataset_version, group
from tuplehub.client.cli.output import AsJson, Url, done, emit, fits, json_or_word, note, table
from tuplehub.client.errors import CommandLineError, require

if TYPE_CHECKING:
    from tuplehub.storage.metrics import MetricRead

metrics_app = group("Dataset quality: compute metrics, read them, compare datasets (see docs/metrics.md).")
Reference = Annotated[str, typer.Argument(metavar="NAME[@VERSION]", help="A dataset, optionally @2.")]
Version = Annotated[int | None, typer.Option(help="Dataset version (the latest if unset); or write NAME@VERSION.")]
Names = Annotated[list[str], typer.Argument(metavar="NAME...", help="Datasets of one benchmark (latest versions).")]


def _reference(dataset: str, version: int | None) -> tuple[str, int | None]:
    name, number = dataset_version(dataset)
    if number is not None and version is not None and number != version:
        raise CommandLineError(f"{dataset} and --version {version} name different versions", hint="give one")
    return name, number or version


def _names(datasets: list[str]) -> list[str]:
    names = []
    for dataset in datasets:
        name, version = dataset_version(dataset)
        if version is not None:
            raise CommandLineError(f"{dataset}: comparisons use each dataset's latest version",
                                   hint=f"write {name}, or derive that version into a dataset of its own")
        names.append(name)
    return names


def _specs(metrics: list[str], params: list[str]) -> list[dict[str, Any]]:
    """``--metric NAME`` (repeat) and ``--param NAME.key=value`` (a JSON value, or a bare word)."""
    specs: dict[str, dict[str, Any]] = {name: {"metric": name} for name in metrics}
    for text in params:
        target, sep, raw = text.partition("=")
        metric, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise CommandLineError(f"--param {text!r}: write METRIC.key=value, e.g. behavioral_entropy.alpha=0.7")
        if metric not in specs:
            raise CommandLineError(f"--param {text!r}: {metric} is not among the --metric options",
                                   hint=f"add -m {metric}")
        specs[metric][key] = json_or_word(raw)
    return list(specs.values())


@metrics_app.command("compute")
def compute(dataset: Reference,
            metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help=(
                "A metric's name (docs/metrics.md lists them; a wrong one is refused with the list), e.g. "
                "returns, shannon_entropy, average_q; repeat. The cheap ones if unset."))] = None,
            param: Annotated[list[str] | None, typer.Option(
                "--param", "-p", help="METRIC.key=value, e.g. policy_value.policy=ID")] = None,
            version: Version = None, seed: Annotated[int, typer.Option(help="Seeds subsamples and training.")] = 0,
            wait: Annotated[bool, typer.Option(help="Wait for the job and print the results.")] = True,
            url: Url = None, as_json: AsJson = False) -> None:
    """Compute metrics on a dataset version (a job on the server)."""
    from tuplehub.storage.metrics import CHEAP_METRICS

    name, version = _reference(dataset, version)
    specs = _specs(metric or list(CHEAP_METRICS), param or [])
    with client(url) as hub:
        job = hub.metrics.compute(name, specs, version=version, seed=seed)
        if not wait:
            emit(job.record, as_json=as_json, columns=("id", "kind", "status"))
            return
        job.wait(progress=bars(as_json))
        finished = job.result or {}
        for key, detail in finished.get("skipped", {}).items():
            typer.echo(f"skipped {key}: {detail}", err=True)
        _print(hub.metrics.results(name, version=finished.get("version", version)), as_json=as_json)


@metrics_app.command("show")
def show(dataset: Reference, version: Version = None, url: Url = None, as_json: AsJson = False) -> None:
    """The results stored for a dataset version."""
    name, version = _reference(dataset, version)
    with client(url) as hub:
        _print(hub.metrics.results(name, version=version), as_json=as_json)


@metrics_app.command("policies")
def policies(dataset: Reference, version: Version = None, url: Url = None, as_json: AsJson = False) -> None:
    """Policies evaluated on a dataset version, best estimated value first."""
    name, version = _reference(dataset, version)
    with client(url) as hub:
        _print(hub.metrics.policies(name, version=version), as_json=as_json)


def _print(results: list[MetricRead], *, as_json: bool) -> None:
    if as_json:
        emit(results, as_json=True)
        return
    emit([{"key": r.key, "value": r.result.value,
           "interval": f"[{r.result.ci_low:.4g}, {r.result.ci_high:.4g}]" if r.result.ci_low is not None
           and r.result.ci_high is not None else "", "rows": r.result.n_rows_used,
           # a row-level metric (the entropies) uses no episodes as such: blank, not a misleading 0
           "episodes": r.result.n_episodes_used or None} for r in results],
         as_json=False, columns=("key", "value", "interval", "rows", "episodes"))
    for r in results:  # whole sentences under the table: in a column they would be cut or wrap through it
        for warning in r.result.warnings:
            note(f"note: {r.key}: {warning}")


@metrics_app.command("compare")
def compare(datasets: Names, url: Url = None, as_json: AsJson = False) -> None:
    """The latest results of several datasets of one benchmark, as a table."""
    from tuplehub.client.report import comparison_table

    with client(url) as hub:
        comparison = hub.metrics.compare(_names(datasets))
    if as_json:
        emit(comparison, as_json=True)
        return
    headers, rows = comparison_table(comparison)
    headers = [h.upper() for h in headers]
    if not fits(headers, rows):  # many metrics, few datasets: one row per metric reads better than cut cells
        headers, rows = ["METRIC", *(row[0] for row in rows)], [
            [headers[i].lower(), *(row[i] for row in rows)] for i in range(1, len(headers))]
    table(headers, rows)
    for warning in comparison.warnings:
        note(f"note: {warning}", err=True)


@metrics_app.command("report")
def report(datasets: Names,
           out: Annotated[Path, typer.Option(help="Folder for report.html and the PNGs.")] = Path("tuplehub-report"),
           title: Annotated[str, typer.Option(help="Heading of the page.")] = "Dataset quality",
           url: Url = None, as_json: AsJson = False) -> None:
    """Draw the comparison: return histograms, coverage and every metric with its interval (PNG + HTML)."""
    require("matplotlib", extra="report", feature="`tuplehub metrics report`")  # before any request
    names = _names(datasets)
    with client(url) as hub:
        page = hub.metrics.report(names, out, title=title)
    done(str(page), as_json=as_json, report=str(page))
