"""The comparison report: its table formatting, its PNGs, and a page that stands on its own."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tuplehub.client.errors import MissingExtra
from tuplehub.client.report import comparison_table, render_report
from tuplehub.storage.metrics import Comparison, ComparisonRow, MetricResult

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOOTSTRAP = "episode bootstrap, 95% percentile, 2000 resamples"
EVIL = "<script>alert(1)</script>"


def _returns(mean: float, low: float, high: float, counts: list[int], edges: list[float]) -> MetricResult:
    return MetricResult(metric="returns", value=mean, ci_low=low, ci_high=high, ci_method=BOOTSTRAP,
                        n_rows_used=1000, n_episodes_used=sum(counts), params={"gamma": 1.0, "bins": len(counts)},
                        seed=0, details={"return_std": 12.5, "return_histogram": {"counts": counts, "edges": edges}},
                        algo_version="1")


def _coverage(value: float, distinct: int) -> MetricResult:
    return MetricResult(metric="state_action_coverage", value=value, n_rows_used=1000, n_episodes_used=0,
                        warnings=["no reference: the value is the raw count of distinct cells"],
                        details={"distinct": distinct, "distinct_per_row": distinct / 1000, "clipped_share": 0.0},
                        algo_version="1")


def _quality(value: float | None, low: float | None = None, high: float | None = None) -> MetricResult:
    return MetricResult(metric="trajectory_quality", value=value, ci_low=low, ci_high=high,
                        ci_method=BOOTSTRAP if low is not None else None, n_rows_used=1000, n_episodes_used=20,
                        warnings=[] if value is not None else ["no episodes"], algo_version="1")


@pytest.fixture
def comparison() -> Comparison:
    return Comparison(benchmark="cartpole-v1", warnings=["version 2 of <b>mixed</b> is still ingesting"], rows=[
        ComparisonRow(dataset="cartpole-random", version=1, results={
            "returns": _returns(22.3456, 20.1, 24.98765, [5, 8, 4, 3], [8.0, 16.0, 24.0, 32.0, 40.0]),
            "state_action_coverage": _coverage(412.0, 412),
            "trajectory_quality": _quality(0.012345, 0.0051, 0.0199),
        }),
        ComparisonRow(dataset="cartpole-expert", version=3, results={
            "returns": _returns(487.5, 480.0, 495.0, [1, 2, 17], [400.0, 433.3, 466.6, 500.0]),
            "state_action_coverage": _coverage(1234.0, 1234),
            "trajectory_quality": _quality(None),
        }),
        ComparisonRow(dataset=EVIL, version=2, results={"trajectory_quality": _quality(0.5)}),
    ])


def test_comparison_table(comparison: Comparison) -> None:
    headers, cells = comparison_table(comparison)
    assert headers == ["dataset", "returns", "state_action_coverage", "trajectory_quality"]
    assert cells == [
        ["cartpole-random@1", "22.35 [20.1, 24.99]", "412", "0.01235 [0.0051, 0.0199]"],
        ["cartpole-expert@3", "487.5 [480, 495]", "1234", "n/a"],
        [f"{EVIL}@2", "—", "—", "0.5"],
    ]


def test_render_report(comparison: Comparison, tmp_path: Path) -> None:
    out = tmp_path / "new" / "report"
    page_path = render_report(comparison, out, title="Cart-pole & friends")
    assert page_path == out / "report.html"
    for name in ("returns.png", "coverage.png", "metrics.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    page = page_path.read_text(encoding="utf-8")

    # Self-contained: every image is embedded, nothing is fetched.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page
    assert "<script" not in page
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 3

    # Strings from the data are escaped, never interpreted.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@2" in page
    assert "&lt;b&gt;mixed&lt;/b&gt;" in page
    assert "Cart-pole &amp; friends" in page
    assert "cartpole-v1" in page

    # The table's cells, with the interval method and warnings as the cell's title.
    assert "<td>22.35 [20.1, 24.99]</td>" not in page  # it has a title
    assert f'<td title="interval: {BOOTSTRAP}">22.35 [20.1, 24.99]</td>' in page
    assert '<td title="no reference: the value is the raw count of distinct cells">1234</td>' in page
    assert '<td title="no episodes">n/a</td>' in page
    assert "<td>—</td>" in page


def test_render_report_without_optional_plots(tmp_path: Path) -> None:
    comparison = Comparison(rows=[ComparisonRow(dataset="only", version=1, results={"trajectory_quality": _quality(
        0.3, 0.2, 0.4)})])
    render_report(comparison, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.png", "report.html"]


def test_empty_comparison_still_writes_a_page(tmp_path: Path) -> None:
    page_path = render_report(Comparison(rows=[]), tmp_path)
    page = page_path.read_text(encoding="utf-8")
    assert "Nothing to compare" in page
    assert "<table" not in page
    assert "<img" not in page
    assert comparison_table(Comparison(rows=[])) == (["dataset"], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # None in sys.modules makes the import fail
    with pytest.raises(MissingExtra, match=re.escape("pip install 'tuplehub[report]'")):
        render_report(Comparison(rows=[]), tmp_path)
