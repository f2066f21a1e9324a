"""``tuplehub metrics``: compute dataset-quality metrics, show them, compare datasets, draw a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tuplehub.client.cli.output import AsJson, Url, emit, json_or_word, reported_errors
from tuplehub.client.client import Client
from tuplehub.client.report import comparison_table
from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.metrics import CHEAP_METRICS, MetricRead

metrics_app = typer.Typer(help="Dataset quality: compute metrics, read them, compare datasets.",
                          no_args_is_help=True)
Version = Annotated[int | None, typer.Option(help="Dataset version (the latest if unset).")]


def _specs(metrics: list[str], params: list[str]) -> list[dict[str, Any]]:
    """``--metric NAME`` (repeat) and ``--param NAME.key=value`` (a JSON value, or a bare word)."""
    specs: dict[str, dict[str, Any]] = {name: {"metric": name} for name in metrics}
    for text in params:
        target, sep, raw = text.partition("=")
        metric, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise InvalidRequest(f"--param {text!r}: write METRIC.key=value, e.g. behavioral_entropy.alpha=0.7",
                                 field="param")
        if metric not in specs:
            raise InvalidRequest(f"--param {text!r}: {metric} is not among the --metric options", field="param")
        specs[metric][key] = json_or_word(raw)
    return list(specs.values())


@metrics_app.command("compute")
def compute(dataset: str,
            metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help=(
                "returns, trajectory_quality, return_improvement, state_action_coverage, shannon_entropy, "
                "behavioral_entropy, average_q, policy_value; repeat. The cheap ones if unset."))] = None,
            param: Annotated[list[str] | None, typer.Option(
                "--param", "-p", help="METRIC.key=value, e.g. policy_value.policy=ID")] = None,
            version: Version = None, seed: Annotated[int, typer.Option(help="Seeds subsamples and training.")] = 0,
            wait: Annotated[bool, typer.Option(help="Wait for the job and print the results.")] = True,
            url: Url = None, as_json: AsJson = False) -> None:
    """Compute metrics on a dataset version (a job on the server)."""
    with reported_errors(), Client(url) as hub:
        specs = _specs(metric or list(CHEAP_METRICS), param or [])
        job = hub.metrics.compute(dataset, specs, version=version, seed=seed)
        if not wait:
            emit(job.record, as_json=as_json, columns=("id", "kind", "status"))
            return
        job.wait(progress=not as_json)
        finished = job.result or {}
        for key, detail in finished.get("skipped", {}).items():
            typer.echo(f"skipped {key}: {detail}", err=True)
        _print(hub.metrics.results(dataset, version=finished.get("version", version)), as_json=as_json)


@metrics_app.command("show")
def show(dataset: str, version: Version = None, url: Url = None, as_json: AsJson = False) -> None:
    """The results stored for a dataset version."""
    with reported_errors(), Client(url) as hub:
        _print(hub.metrics.results(dataset, version=version), as_json=as_json)


@metrics_app.command("policies")
def policies(dataset: str, version: Version = None, url: Url = None, as_json: AsJson = False) -> None:
    """Policies evaluated on a dataset version, best estimated value first."""
    with reported_errors(), Client(url) as hub:
        _print(hub.metrics.policies(dataset, version=version), as_json=as_json)


def _print(results: list[MetricRead], *, as_json: bool) -> None:
    if as_json:
        emit(results, as_json=True)
        return
    emit([{"key": r.key, "value": r.result.value,
           "interval": f"[{r.result.ci_low:.4g}, {r.result.ci_high:.4g}]" if r.result.ci_low is not None
           and r.result.ci_high is not None else "", "rows": r.result.n_rows_used,
           "episodes": r.result.n_episodes_used, "warnings": "; ".join(r.result.warnings)} for r in results],
         as_json=False, columns=("key", "value", "interval", "rows", "episodes", "warnings"))


@metrics_app.command("compare")
def compare(datasets: Annotated[list[str], typer.Argument(help="Datasets of one benchmark.")],
            url: Url = None, as_json: AsJson = False) -> None:
    """The latest results of several datasets of one benchmark, as a table."""
    with reported_errors(), Client(url) as hub:
        comparison = hub.metrics.compare(datasets)
    if as_json:
        emit(comparison, as_json=True)
        return
    headers, rows = comparison_table(comparison)
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(headers)]
    typer.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for warning in comparison.warnings:
        typer.echo(f"note: {warning}", err=True)


@metrics_app.command("report")
def report(datasets: Annotated[list[str], typer.Argument(help="Datasets of one benchmark.")],
           out: Annotated[Path, typer.Option(help="Folder for report.html and the PNGs.")] = Path("tuplehub-report"),
           title: str = "Dataset quality", url: Url = None) -> None:
    """Draw the comparison: return histograms, coverage and every metric with its interval (PNG + HTML)."""
    with reported_errors(), Client(url) as hub:
        page = hub.metrics.report(datasets, out, title=title)
    typer.echo(str(page))
