"""Dataset-quality metrics on the reference note's worked examples, and properties that must hold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuplehub.storage.errors import InvalidRequest, MetricUndefined
from tuplehub.workers.metrics.coverage import quantise, state_action_coverage
from tuplehub.workers.metrics.episodes import episode_returns
from tuplehub.workers.metrics.quality import estimated_return_improvement, trajectory_quality
from tuplehub.workers.metrics.returns import return_statistics

# Four episodes with rewards [1,1,1], [0,0], [2,2,2,2] and [1] (metrics.md, sections 2 and 3).
IDS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
REWARDS = np.array([1, 1, 1, 0, 0, 2, 2, 2, 2, 1], dtype=np.float32)
ENDS = np.array([0, 0, 1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)


def test_returns_with_and_without_discount() -> None:
    np.testing.assert_array_equal(episode_returns(IDS, REWARDS), [3, 0, 8, 1])
    np.testing.assert_allclose(episode_returns(IDS, REWARDS, gamma=0.5), [1.75, 0, 3.75, 1])
    assert episode_returns(IDS, REWARDS, gamma=0.5).mean() == pytest.approx(1.625)


def test_return_statistics() -> None:
    truncated = np.zeros_like(ENDS)
    truncated[9], terminated = True, ENDS.copy()
    terminated[9] = False
    stats = return_statistics(IDS, REWARDS, terminated, truncated, seed=1)
    assert stats.value == pytest.approx(3.0)
    assert stats.ci_low is not None
    assert stats.ci_low <= 3.0 <= stats.ci_high
    assert stats.details["ended_truncated"] == 0.25
    assert stats.details["reward_sparsity"] == pytest.approx((0 + 1 + 0 + 0) / 4)
    assert stats.details["length_max"] == 4
    assert return_statistics(IDS, REWARDS, terminated, truncated, seed=1) == stats  # same seed, same record
    single = return_statistics(IDS[:3], REWARDS[:3], ENDS[:3], ENDS[:3] & False)
    assert single.details["return_std"] is None
    assert single.ci_low is None


def test_trajectory_quality() -> None:
    returns = episode_returns(IDS, REWARDS)
    assert trajectory_quality(returns, random_return=1, expert_return=9).value == pytest.approx(0.25)
    random_data, expert_data = np.full(20, -1200.0), np.full(20, -150.0)
    assert trajectory_quality(random_data, random_return=-1200, expert_return=-150).value == 0
    assert trajectory_quality(expert_data, random_return=-1200, expert_return=-150).value == 1
    with pytest.raises(InvalidRequest, match="reference returns"):
        trajectory_quality(returns, random_return=None, expert_return=9)
    with pytest.raises(InvalidRequest, match="must exceed"):
        trajectory_quality(returns, random_return=9, expert_return=1)


def test_return_improvement() -> None:
    returns = np.array([3.0, 0.0, 8.0, 1.0])
    automatic = estimated_return_improvement(returns)
    assert automatic.value == pytest.approx(5 / 3)
    assert automatic.details["leave_best_out"] == pytest.approx(1.25)
    assert estimated_return_improvement(returns, lower_bound=-2).value == pytest.approx(1.0)
    assert estimated_return_improvement(np.array([2.0, 2.0])).value == 0
    with pytest.raises(InvalidRequest, match="exceeds"):
        estimated_return_improvement(returns, lower_bound=1)


def test_return_improvement_takes_a_bound_summed_in_another_order() -> None:
    """The smallest return summed step by step, its bound summed backwards: one ulp apart, the same number."""
    rewards = [0.1, 0.2, 0.3]
    smallest, bound = sum(rewards), sum(reversed(rewards))
    assert bound < smallest  # 0.6 and 0.6000000000000001
    returns = np.array([bound, 2.0, 3.0])
    result = estimated_return_improvement(returns, lower_bound=smallest)
    assert result.value == pytest.approx(estimated_return_improvement(returns).value)
    assert result.params["lower_bound"] == bound
    assert result.algo_version == "2"
    with pytest.raises(InvalidRequest, match="exceeds"):
        estimated_return_improvement(returns, lower_bound=bound * (1 + 1e-5))


def test_state_action_coverage() -> None:
    data = np.array([(0, 0), (0, 1), (0, 0), (1, 0), (2, 1), (2, 1)])
    reference = np.array([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)])
    assert state_action_coverage(data, reference_cells=reference).value == pytest.approx(4 / 6)
    cells, clipped = quantise(np.array([0.0, 0.05, 0.5, 0.51, 1.0]), [0.0], [1.0], 10)
    assert cells.ravel().tolist() == [0, 0, 5, 5, 9]
    assert clipped == 0
    assert state_action_coverage(cells).details["distinct"] == 3
    _, outside = quantise(np.array([-1.0, 0.5, 2.0, 0.2]), [0.0], [1.0], 10)
    assert outside == 0.5
    with pytest.raises(InvalidRequest, match="equal sizes"):
        state_action_coverage(data, reference_cells=reference[:5])


def test_properties_that_must_hold() -> None:
    rng = np.random.default_rng(0)
    episodes = [rng.normal(size=rng.integers(3, 9)) for _ in range(30)]
    ids = np.concatenate([np.full(len(e), i) for i, e in enumerate(episodes)])
    rewards = np.concatenate(episodes)
    order = rng.permutation(30)  # episode order does not matter
    shuffled_ids = np.concatenate([np.full(len(episodes[i]), i) for i in order])
    shuffled = np.concatenate([episodes[i] for i in order])
    ends = np.zeros(len(rewards), dtype=bool)
    for name, function in (("returns", lambda i, r: return_statistics(i, r, ends, ends).value),
                           ("tq", lambda i, r: trajectory_quality(episode_returns(i, r), random_return=-5,
                                                                  expert_return=5).value),
                           ("eri", lambda i, r: estimated_return_improvement(episode_returns(i, r)).value)):
        assert function(ids, rewards) == pytest.approx(function(shuffled_ids, shuffled)), name
    cells = rng.integers(0, 4, size=(200, 3))
    assert state_action_coverage(np.concatenate([cells, cells])).details["distinct"] == \
        state_action_coverage(cells).details["distinct"]  # a duplicated dataset covers nothing new


def test_shannon_entropy_worked_examples() -> None:
    from tuplehub.workers.metrics.entropy import shannon_entropy

    assert shannon_entropy(np.array([0.0, 1.0, 3.0, 6.0]), k=1).value == pytest.approx(2.974420, abs=1e-6)
    square = np.array([(0, 0), (1, 0), (0, 1), (3, 0)], dtype=float)
    assert shannon_entropy(square, k=1).value == pytest.approx(3.324637, abs=1e-6)
    # Exact duplicates are dropped instead of breaking the logarithm; constant columns too.
    noisy = np.concatenate([square, square[:1]])
    padded = np.column_stack([noisy, np.ones(len(noisy))])
    result = shannon_entropy(padded, k=1)
    assert result.value == pytest.approx(3.324637, abs=1e-6)
    assert result.details["duplicate_share"] == pytest.approx(0.2)
    assert result.details["constant_dimensions"] == 1
    assert result.warnings


def test_shannon_entropy_of_a_gaussian_with_subsampled_queries() -> None:
    from tuplehub.workers.metrics.entropy import shannon_entropy

    points = np.random.default_rng(3).normal(size=(20_000, 3))
    result = shannon_entropy(points, k=5, queries=4_000, seed=1)
    exact = 1.5 * (1 + math.log(2 * math.pi))
    assert result.ci_low is not None
    assert abs(result.value - exact) < 0.05
    assert result.details["subsampled"]
    assert shannon_entropy(points, k=5, queries=4_000, seed=1) == result  # the same seed, the same number


def test_behavioral_entropy_worked_example() -> None:
    from tuplehub.workers.metrics.entropy import behavioral_entropy

    square = np.array([(0, 0), (1, 0), (0, 1), (3, 0)], dtype=float)
    result = behavioral_entropy(square, alpha=0.5, dimension=2, k=1)
    assert result.params["beta"] == pytest.approx(0.832555, abs=1e-6)
    assert result.value == pytest.approx(0.346547, abs=1e-6)
    assert result.details["plug_in"] == pytest.approx(7.305181, abs=1e-5)
    assert behavioral_entropy(square, alpha=1.0, beta=1.0, k=1).value == pytest.approx(0.342931, abs=1e-6)
    with pytest.raises(InvalidRequest, match="D >= 2"):
        behavioral_entropy(square[:, :1].copy() + np.arange(4)[:, None], alpha=0.5, k=1)


def test_behavioral_entropy_plug_in_is_signed_where_densities_exceed_one() -> None:
    """The worked example's square at a tenth of the size: f = 100/(4 pi) three times and 25/(4 pi).

    -ln f = -2.074146 (x3) and -0.687852; at alpha = beta = 1 the plug-in is their mean, -1.727572
    (with |ln f| it was +0.068); at alpha = 2, beta = 1 it is the mean of s^2 e^(s - s^2).
    """
    from tuplehub.workers.metrics.entropy import behavioral_entropy

    small = np.array([(0, 0), (1, 0), (0, 1), (3, 0)], dtype=float) / 10
    shannon = behavioral_entropy(small, alpha=1.0, beta=1.0, k=1)
    assert shannon.details["plug_in"] == pytest.approx(-1.727572, abs=1e-6)
    assert shannon.details["plug_in_dense_share"] == 1.0
    assert not shannon.warnings
    s = -np.log(np.array([100, 100, 100, 25]) / (4 * np.pi))
    squared = behavioral_entropy(small, alpha=2.0, beta=1.0, k=1)
    assert squared.details["plug_in"] == pytest.approx(np.mean(s**2 * np.exp(s - s**2)), rel=1e-9)
    fractional = behavioral_entropy(small, alpha=0.5, dimension=2, k=1)
    assert fractional.details["plug_in"] is None
    assert any("exceed 1" in warning and "alpha = 0.5" in warning for warning in fractional.warnings)
    assert fractional.value == pytest.approx(0.346547, abs=1e-6)  # the practical estimator is scale-free
    assert fractional.algo_version == "2"
    overflowing = behavioral_entropy(small / 1e3, alpha=3.0, beta=1.0, k=1)  # s = -9 to -11: e^(s - s^3) > 1e308
    assert overflowing.details["plug_in"] is None
    assert any("overflows" in warning for warning in overflowing.warnings)


def test_only_the_changed_metrics_recompute() -> None:
    """Issue 11 changed the BE plug-in, ERI's bound check and FQE's target copies: their stored results are stale,
    the others' are not."""
    from tuplehub.storage.metrics import MetricName
    from tuplehub.workers.jobs.metric_registry import METRICS

    changed = {MetricName.behavioral_entropy, MetricName.return_improvement, MetricName.average_q,
               MetricName.policy_value}
    assert {name for name, metric in METRICS.items() if metric.version != "1"} == changed


@pytest.mark.parametrize(("cpus", "jobs", "threads"), [(16, 2, 8), (2, 2, 1), (2, 3, 1), (8, 1, 8)])
def test_torch_threads_default_to_one_jobs_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int, jobs: int,
                                                            threads: int) -> None:
    from tuplehub.storage import settings

    monkeypatch.setattr(settings, "available_cpus", lambda: cpus)
    monkeypatch.delenv("TUPLEHUB_METRICS_THREADS", raising=False)
    assert settings.Settings(_env_file=None, max_concurrent_jobs=jobs).metrics_threads == threads
    monkeypatch.setenv("TUPLEHUB_METRICS_THREADS", "3")
    assert settings.Settings(_env_file=None, max_concurrent_jobs=jobs).metrics_threads == 3


def test_every_metric_has_its_parameter_class_and_one_registry_row() -> None:
    """The facts sit on the parameter classes; the workers' one table covers every name."""
    from tuplehub.storage.metrics import CHEAP_METRICS, PARAMS, MetricName
    from tuplehub.workers.jobs.metric_registry import METRICS

    assert set(PARAMS) == set(METRICS) == set(MetricName)
    assert (MetricName.returns, MetricName.return_improvement, MetricName.state_action_coverage) == CHEAP_METRICS
    assert {name for name, cls in PARAMS.items() if cls.framed} == {
        MetricName.state_action_coverage, MetricName.shannon_entropy, MetricName.behavioral_entropy}
    assert {name for name, cls in PARAMS.items() if cls.needs_torch} == {MetricName.average_q,
                                                                         MetricName.policy_value}


def test_action_entropy_on_a_worked_example() -> None:
    """Actions 0, 0, 0, 1 of a space of 2: shares 3/4 and 1/4, H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623 nats,
    normalised by ln 2: 0.8113 (the binary entropy of 1/4 in bits)."""
    from tuplehub.workers.metrics.actions import action_entropy

    result = action_entropy(np.array([0, 0, 0, 1]), n_actions=2)
    assert result.value == pytest.approx(0.562335, abs=1e-6)
    assert result.details["normalised"] == pytest.approx(0.811278, abs=1e-6)
    assert result.details["distinct_actions"] == 2
    assert result.details["most_common_share"] == 0.75
    assert result.n_rows_used == 4
    even = action_entropy(np.array([3, 1, 2, 0]), n_actions=4)  # every action equally often: ln 4, normalised 1
    assert (even.value, even.details["normalised"]) == pytest.approx((1.386294, 1.0), abs=1e-6)
    assert action_entropy(np.array([2, 2, 2]), n_actions=3).value == 0.0
    with pytest.raises(MetricUndefined, match="one discrete action id per row"):
        action_entropy(np.array([0.5, 1.5]))
