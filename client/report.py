"""A dataset-quality comparison drawn as PNG plots and one self-contained HTML page.

    from tuplehub.client.report import render_report
    render_report(comparison, "report/")      # report/report.html, returns.png, coverage.png, metrics.png

The page embeds its plots as ``data:`` URIs and carries its CSS inline, so it can be mailed or
archived on its own. matplotlib is an optional extra (``tuplehub[report]``), imported only when a
report is drawn; figures are plain :class:`~matplotlib.figure.Figure` objects on the Agg canvas,
never pyplot, so drawing is thread-safe and leaves the user's backend alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

from tuplehub.client.errors import require
from tuplehub.storage.metrics import Comparison, ComparisonRow, MetricResult

__all__ = ["comparison_table", "render_report"]

MISSING = "—"        # the row has no result under this key
UNDEFINED = "n/a"    # the result exists but its value is None (the metric is undefined for the data)
LABEL_CHARS = 32     # longer dataset labels are cut in plots (the table always shows them whole)


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers (``dataset``, then every result key in order of first appearance) and one row of cells per dataset.

    A cell reads ``value [low, high]`` with 4 significant digits, ``n/a`` when the value is undefined,
    ``—`` when the dataset has no such result.
    """
    keys = _result_keys(comparison)
    rows = [[_label(row), *(_cell(row.results.get(key)) for key in keys)] for row in comparison.rows]
    return ["dataset", *keys], rows


def render_report(comparison: Comparison, out_dir: str | Path, *, title: str = "Dataset quality") -> Path:
    """Write PNGs and report.html into out_dir (created if missing); return the HTML path.

    A plot with nothing to show is not written (no return histograms, no coverage result, no metric).
    """
    figure_cls, canvas_cls = _matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, str, bytes]] = []
    for name, caption, draw in (("returns.png", "Return histograms", _draw_returns),
                                ("coverage.png", "State-action coverage", _draw_coverage),
                                ("metrics.png", "Metrics with their intervals", _draw_metrics)):
        figure = draw(comparison, figure_cls)
        if figure is None:
            continue
        canvas_cls(figure)
        buffer = io.BytesIO()
        # No "Software" chunk: the bytes then do not change with the matplotlib version.
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        png = buffer.getvalue()
        (out / name).write_bytes(png)
        plots.append((name, caption, png))
    path = out / "report.html"
    path.write_text(_page(comparison, title, plots), encoding="utf-8")
    return path


def _matplotlib() -> tuple[Any, Any]:
    require("matplotlib", extra="report", feature="the report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _result_keys(comparison: Comparison) -> list[str]:
    return list(dict.fromkeys(key for row in comparison.rows for key in row.results))


def _label(row: ComparisonRow) -> str:
    return f"{row.dataset}@{row.version}"


def _number(x: float) -> str:
    return f"{x:.4g}"


def _cell(result: MetricResult | None) -> str:
    """The one formatting of a result, shared by the terminal table and the HTML table."""
    if result is None:
        return MISSING
    if result.value is None:
        return UNDEFINED
    text = _number(result.value)
    if result.ci_low is not None and result.ci_high is not None:
        text += f" [{_number(result.ci_low)}, {_number(result.ci_high)}]"
    return text


def _cell_note(result: MetricResult | None) -> str:
    if result is None:
        return ""
    notes = [f"interval: {result.ci_method}"] if result.ci_method else []
    return "; ".join(notes + result.warnings)


def _plot_label(row: ComparisonRow) -> str:
    """A dataset label safe for matplotlib: cut to LABEL_CHARS, and '$' escaped so it is not read as mathtext."""
    label = _label(row)
    if len(label) > LABEL_CHARS:
        label = label[:LABEL_CHARS - 1] + "…"
    return label.replace("$", r"\$")


def _histogram(result: MetricResult | None) -> tuple[list[float], list[float]] | None:
    """Counts and edges of a returns result, or None when absent or malformed."""
    histogram = result.details.get("return_histogram") if result is not None else None
    if not isinstance(histogram, dict):
        return None
    counts, edges = histogram.get("counts"), histogram.get("edges")
    if not isinstance(counts, list) or not isinstance(edges, list) or not counts or len(edges) != len(counts) + 1:
        return None
    return [float(c) for c in counts], [float(e) for e in edges]


def _draw_returns(comparison: Comparison, figure_cls: Any) -> Any:
    """Step histograms as densities: datasets differ in episode count and bin width, raw counts would not compare."""
    drawn = [(row, hist) for row in comparison.rows if (hist := _histogram(row.results.get("returns")))]
    if not drawn:
        return None
    figure = figure_cls(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    for row, (counts, edges) in drawn:
        total = sum(counts)
        widths = [high - low for low, high in pairwise(edges)]
        density = [c / (total * w) if total and w > 0 else 0.0 for c, w in zip(counts, widths, strict=True)]
        episodes = row.results["returns"].n_episodes_used
        ax.stairs(density, edges, label=f"{_plot_label(row)} ({episodes} episodes)", linewidth=1.5)
    ax.set_xlabel("episode return")
    ax.set_ylabel("density")
    ax.set_title("Return distribution per dataset")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def _draw_coverage(comparison: Comparison, figure_cls: Any) -> Any:
    """Horizontal bars, so long dataset labels stay readable without rotation; one bar per dataset, top down."""
    drawn = [(row, row.results["state_action_coverage"]) for row in comparison.rows
             if "state_action_coverage" in row.results]
    if not drawn:
        return None
    figure = figure_cls(figsize=(8, 1.5 + 0.5 * len(drawn)), layout="constrained")
    ax = figure.add_subplot()
    labels, undefined = [], []
    for y, (row, result) in enumerate(drawn):
        distinct = result.details.get("distinct")
        labels.append(_plot_label(row) + (f" ({distinct:,} distinct)" if isinstance(distinct, int) else ""))
        if result.value is None:
            undefined.append(_plot_label(row))
        else:
            bars = ax.barh(y, result.value, color="tab:blue", height=0.6)
            ax.bar_label(bars, [_number(result.value)], padding=3, fontsize=8)
    ax.set_yticks(range(len(drawn)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    raw = any("reference_distinct" not in result.details for _, result in drawn)
    ax.set_title("State-action coverage")
    unit = "distinct cells (no reference)" if raw else "distinct cells / reference's distinct cells"
    note = _undefined_note(undefined)
    ax.set_xlabel(unit + (f"\n{note}" if note else ""))
    ax.grid(axis="x", alpha=0.3)
    return figure


def _draw_metrics(comparison: Comparison, figure_cls: Any) -> Any:
    """One panel per result key: each dataset's value as a point, its interval as an asymmetric error bar."""
    keys = _result_keys(comparison)
    if not keys:
        return None
    n_rows = len(comparison.rows)
    columns = min(3, len(keys))
    lines = math.ceil(len(keys) / columns)
    panel_width = max(3.5, 0.55 * n_rows + 1.5)
    figure = figure_cls(figsize=(columns * panel_width, lines * 3.6), layout="constrained")
    labels = [_plot_label(row) for row in comparison.rows]
    for i, key in enumerate(keys):
        ax = figure.add_subplot(lines, columns, i + 1)
        undefined = []
        for x, row in enumerate(comparison.rows):
            result = row.results.get(key)
            if result is None:
                continue
            if result.value is None:
                undefined.append(labels[x])
                continue
            error = None
            if result.ci_low is not None and result.ci_high is not None:
                error = [[max(0.0, result.value - result.ci_low)], [max(0.0, result.ci_high - result.value)]]
            ax.errorbar([x], [result.value], yerr=error, fmt="o", color="tab:blue", capsize=4)
        ax.set_xticks(range(n_rows), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, n_rows - 0.5)
        ax.set_title(key.replace("$", r"\$"), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if undefined:
            ax.set_xlabel(_undefined_note(undefined), fontsize=7, color="tab:red", wrap=True)
    return figure


def _undefined_note(labels: list[str]) -> str:
    """Names the datasets whose value is None; shown as the axis label, where no point or tick can hide it."""
    return "no value: " + ", ".join(labels) if labels else ""


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
td[title] { text-decoration: underline dotted; cursor: help; }
.warnings { color: #8a4b00; }
figure { margin: 1.5em 0; }
img { max-width: 100%; height: auto; }
"""


def _page(comparison: Comparison, title: str, plots: list[tuple[str, str, bytes]]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             f"<style>{CSS}</style></head>", "<body>", f"<h1>{esc(title)}</h1>"]
    if comparison.benchmark is not None:
        parts.append(f"<p>Benchmark: <code>{esc(comparison.benchmark)}</code></p>")
    if comparison.warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{esc(w)}</li>" for w in comparison.warnings) + "</ul>")
    if not comparison.rows:
        parts.append("<p>Nothing to compare: the comparison has no datasets.</p>")
    else:
        parts.append(_table(comparison))
    for name, caption, png in plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                     f"<figcaption>{esc(caption)} ({esc(name)})</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _table(comparison: Comparison) -> str:
    esc = html.escape
    headers, cells = comparison_table(comparison)
    keys = headers[1:]
    lines = ["<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    for row, texts in zip(comparison.rows, cells, strict=True):
        out = [f"<td>{esc(texts[0])}</td>"]
        for key, text in zip(keys, texts[1:], strict=True):
            note = _cell_note(row.results.get(key))
            attribute = f' title="{esc(note)}"' if note else ""
            out.append(f"<td{attribute}>{esc(text)}</td>")
        lines.append("<tr>" + "".join(out) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)
