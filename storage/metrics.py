"""The record every dataset-quality metric returns, whatever computed it.

Metrics are pure functions (``tuplehub.workers.metrics``): arrays and parameters in, a
:class:`MetricResult` out. The same algorithm version, parameters and seed give the same number.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class MetricResult(BaseModel):
    metric: str
    value: float | None = Field(description="None when the metric is undefined for this data (see warnings).")
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = Field(None, examples=["episode bootstrap, 95% percentile"])
    n_rows_used: int
    n_episodes_used: int
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="Figures beside the value (histograms...).")
    algo_version: str
