"""The algorithm version of each metric: a result computed under another one is stale."""

from __future__ import annotations

from tuplehub.storage.metrics import MetricName
from tuplehub.workers.metrics import coverage, entropy, fqe, quality, returns

ALGORITHM_VERSIONS: dict[MetricName, str] = {
    MetricName.returns: returns.VERSION, MetricName.trajectory_quality: quality.TQ_VERSION,
    MetricName.return_improvement: quality.ERI_VERSION, MetricName.state_action_coverage: coverage.VERSION,
    MetricName.shannon_entropy: entropy.SHANNON_VERSION, MetricName.behavioral_entropy: entropy.BEHAVIORAL_VERSION,
    MetricName.average_q: fqe.VERSION, MetricName.policy_value: fqe.VERSION,
}
