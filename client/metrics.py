"""Dataset-quality metrics from the client: request them, read them, compare datasets, draw a report.

Metrics run on the server as jobs (``compute`` returns the job to wait on); results stay with the
version they were computed on. ``compare`` puts the latest results of datasets of one benchmark
side by side, and ``report`` draws them (``pip install 'tuplehub[report]'`` for matplotlib).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuplehub.client.base import Handle
from tuplehub.client.jobs import Job
from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.metrics import CHEAP_METRICS, Comparison, MetricFrame, MetricRead
from tuplehub.storage.models import JobRead

MetricSpec = str | Mapping[str, Any]


def _params(spec: MetricSpec) -> dict[str, Any]:
    """``"returns"`` or ``{"metric": "behavioral_entropy", "alpha": 0.5}``."""
    return {"metric": spec} if isinstance(spec, str) else dict(spec)


class Metrics(Handle):
    def compute(self, dataset: str, metrics: Iterable[MetricSpec] = CHEAP_METRICS, *, version: int | None = None,
                seed: int = 0) -> Job:
        """Start a metrics job on ``dataset`` (its latest version by default); ``.wait()`` on it.

        Each metric is a name or a dict of its parameters, e.g. ``{"metric": "average_q",
        "target": "sarsa"}`` or ``{"metric": "policy_value", "policy": artifact_id}``.
        """
        return Job(self._http, self._call("POST", f"/datasets/{dataset}/metrics", JobRead, json={
            "version": version, "metrics": [_params(spec) for spec in metrics], "seed": seed}))

    def results(self, dataset: str, *, version: int | None = None) -> list[MetricRead]:
        """The results stored for one version (the latest by default), one per key."""
        answer = self._call("GET", f"/datasets/{dataset}/metrics", params={"version": version} if version else None)
        return [MetricRead.model_validate(item) for item in answer]

    def policies(self, dataset: str, *, version: int | None = None) -> list[MetricRead]:
        """Evaluated policies on one version, best estimated value first: a ranking without the environment."""
        ranked = [r for r in self.results(dataset, version=version) if r.result.metric == "policy_value"]
        return sorted(ranked, key=lambda r: -(r.result.value if r.result.value is not None else float("-inf")))

    def compare(self, datasets: Sequence[str]) -> Comparison:
        """The latest results of datasets recorded on one benchmark, side by side."""
        if not datasets:
            raise InvalidRequest("name at least one dataset to compare", field="datasets")
        benchmarks = {}
        for name in datasets:
            benchmarks[name] = self._call("GET", f"/datasets/{name}").get("benchmark")
        missing = [name for name, benchmark in benchmarks.items() if benchmark is None]
        if missing:
            raise InvalidRequest(f"{', '.join(missing)} has no benchmark: only datasets of one benchmark compare "
                                 "(set one with `datasets update --benchmark`)", field="datasets")
        if len(set(benchmarks.values())) > 1:
            listing = ", ".join(f"{name} ({benchmark[:8]})" for name, benchmark in benchmarks.items())
            raise InvalidRequest(f"the datasets are of different benchmarks: {listing}", field="datasets")
        return self._call("GET", f"/benchmarks/{benchmarks[datasets[0]]}/metrics", Comparison,
                          params={"dataset": list(datasets)})

    def report(self, datasets: Sequence[str], out_dir: str | Path, *, title: str = "Dataset quality") -> Path:
        """Write PNG plots and a self-contained ``report.html`` comparing ``datasets``; its path."""
        from tuplehub.client.report import render_report

        return render_report(self.compare(datasets), out_dir, title=title)

    def frame(self, benchmark: str) -> MetricFrame:
        """The frame a benchmark's coverage and entropies are computed in (frozen at first use)."""
        return self._call("GET", f"/benchmarks/{benchmark}/frame", MetricFrame)

    def set_frame(self, benchmark: str, frame: MetricFrame) -> MetricFrame:
        return self._call("PUT", f"/benchmarks/{benchmark}/frame", MetricFrame, json=frame.model_dump(mode="json"))

    def reset_frame(self, benchmark: str) -> None:
        """Forget the frame; the next metrics job freezes a new one and older results go stale."""
        self._call("DELETE", f"/benchmarks/{benchmark}/frame")
