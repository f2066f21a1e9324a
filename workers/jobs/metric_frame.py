"""The frame policy of the ``metrics`` job: which frozen frame a version's framed metrics use.

Coverage and the kNN entropies read features through their benchmark's frozen frame, so that two
datasets' numbers compare. The benchmark's stored frame is used if it fits this data; with none
stored, one is frozen from a seeded sample of this version and stored on the benchmark when this
data may set it, else kept for this job alone (and the results say they do not compare).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from tuplehub.storage.benchmarks import BenchmarkRecord, continuous_widths, space_from_json
from tuplehub.storage.errors import Conflict, MetricUndefined, NotFound
from tuplehub.storage.metrics import MetricFrame, MetricFrameRecord
from tuplehub.storage.models import DatasetRecord, VersionRecord
from tuplehub.workers.context import JobRun
from tuplehub.workers.jobs.metric_data import Cells, VersionData, scan_version
from tuplehub.workers.metrics.frame import freeze_frame, split_columns

# Rows kept to freeze a benchmark's frame when no other metric needs a larger sample.
FRAME_SAMPLE_ROWS = 200_000


class FramePolicy:
    """The frame of one job's version: ``frame`` once chosen, else ``problem`` says why there is none."""

    def __init__(self, run: JobRun, dataset: DatasetRecord, version: VersionRecord,
                 benchmark: BenchmarkRecord | None, *, seed: int) -> None:
        self.run, self.dataset, self.version, self.benchmark, self.seed = run, dataset, version, benchmark, seed
        self.frame: MetricFrame | None = None
        self.problem = "no metric frame"
        self.rejected: str | None = None  # the benchmark's frame, when it does not fit this data
        self.warning: list[str] = []

    async def start(self) -> bool:
        """Take the benchmark's stored frame if it fits this data; whether one is to be frozen from the pass."""
        stored = await self._stored()
        if stored is None:
            return True
        problem = self._misfit(stored)
        if problem is None:
            self.frame = stored
        else:
            self.rejected, self.problem = stored.frame_id, problem
        return False

    async def freeze_from(self, data: VersionData) -> None:
        """Freeze the frame from this pass's sample; a frame that cannot be had becomes ``problem``."""
        try:
            self.frame = await self._freeze(data)
        except MetricUndefined as exc:
            self.problem = exc.detail

    def inputs(self) -> dict[str, Any]:
        """What a framed result took from the benchmark, to tell later whether it went stale."""
        inputs: dict[str, Any] = {"benchmark": self.dataset.benchmark, "frame": (
            self.frame.frame_id if self.frame is not None and not self.warning else None)}
        if self.rejected is not None:
            inputs["rejected_frame"] = self.rejected
        return inputs

    async def binned(self, version: VersionRecord, bins: int,
                     report: Callable[[float], Awaitable[Any]]) -> VersionData:
        """A pass that only bins every row of ``version`` (and keys it, for same-size comparisons)."""
        assert self.frame is not None
        return await scan_version(self.run, version, seed=self.seed, sample_rows=0, next_observation=False,
                                  keep_initial=False, cells=Cells(self.frame, bins), report=report)

    def _misfit(self, frame: MetricFrame) -> str | None:
        """Why ``frame`` cannot describe this version's data, if it cannot."""
        width = sum(self._continuous_widths())
        if width != len(frame.mean):
            return (f"the benchmark's metric frame has {len(frame.mean)} continuous dimensions, this version "
                    f"{width}: the data does not match its benchmark")
        return None

    def _continuous_widths(self) -> tuple[int, int]:
        """Float dimensions of the observations and of the actions."""
        schema = self.version.tuple_schema
        observation, action = (max(spec.size, 1) if spec.is_floating else 0 for spec in (schema.observation,
                                                                                          schema.action))
        return observation, action

    async def _stored(self) -> MetricFrame | None:
        if self.dataset.benchmark is None:
            return None
        with contextlib.suppress(NotFound):
            stored = await self.run.catalog.get_record("metric_frames", MetricFrameRecord,
                                                       benchmark_id=self.dataset.benchmark)
            return stored.frame
        return None

    async def _freeze(self, data: VersionData) -> MetricFrame:
        """Freeze a frame from a seeded sample of this version; store it on the benchmark if the data
        matches the benchmark's spaces (otherwise it would bin everyone else's data wrongly)."""
        chosen = data.sampled_below(FRAME_SAMPLE_ROWS)  # the same rows whatever else the request holds
        continuous, _ = split_columns(*data.sampled(chosen, "observation", "action"))
        low, high = self._space_bounds()
        try:
            frame = await asyncio.to_thread(freeze_frame, continuous, low=low, high=high, source=(
                f"frozen from a seeded sample of {int(chosen.sum())} rows"))
        except ValueError as exc:  # a frame model refusing what the data gave (beyond its limits)
            raise MetricUndefined(f"no metric frame fits this data: {exc}", field="version") from exc
        reason = await self._why_not_shared()
        if reason is not None:
            self.warning = [f"features were scaled and binned on this version's own frame ({reason}), so the "
                            "value does not compare across datasets"]
            return frame
        try:
            await self.run.catalog.insert_record("metric_frames", MetricFrameRecord(
                benchmark_id=self.dataset.benchmark, frame=frame), unique=self.dataset.benchmark)
        except Conflict:  # another job froze it first: use theirs, so every dataset stays alike
            stored = await self._stored()
            if stored is None or self._misfit(stored) is not None:
                raise MetricUndefined("the benchmark's metric frame changed while this job ran; run it again",
                                      field="frame") from None
            return stored
        return frame

    async def _why_not_shared(self) -> str | None:
        """Why a frame frozen from this version must not become the benchmark's, if so.

        The frame is shared by everyone's datasets of the benchmark and shows statistics of the data
        it came from, so only data that fits the spaces, and that is public or belongs to the
        benchmark's first owner, may set it.
        """
        if self.dataset.benchmark is None or self.benchmark is None:
            return "the dataset has no benchmark"
        if continuous_widths(self.benchmark.spec) != self._continuous_widths():
            return "the data does not match its benchmark's spaces"
        records, _ = await self.run.catalog.find_records("benchmarks", BenchmarkRecord,
                                                         where={"benchmark_id": self.dataset.benchmark})
        first = min(records, key=lambda r: r.created_at) if records else None
        if not self.dataset.public and (first is None or first.owner != self.dataset.owner):
            return ("the benchmark has no frame yet and this dataset may not set it: only public data or the "
                    "benchmark's first owner's does")
        return None

    def _space_bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The benchmark's Box bounds of the continuous columns, in feature order (None if not all Box)."""
        if self.benchmark is None:
            return None, None
        lows, highs = [], []
        schema = self.version.tuple_schema
        for spec, space in ((schema.observation, self.benchmark.spec.observation_space),
                            (schema.action, self.benchmark.spec.action_space)):
            if not spec.is_floating:
                continue
            if space.get("type") != "Box":
                return None, None
            box = space_from_json(space)
            if box.low.size != max(spec.size, 1):
                return None, None
            lows.append(box.low.reshape(-1).astype(np.float64))
            highs.append(box.high.reshape(-1).astype(np.float64))
        if not lows:
            return None, None
        return np.concatenate(lows), np.concatenate(highs)
