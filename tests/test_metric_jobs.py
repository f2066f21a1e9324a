"""Metrics as jobs: computed on a real server from stored versions, kept, compared, recomputed when stale."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.errors import JobFailed
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.errors import Conflict, InvalidRequest, MetricUndefined
from tuplehub.storage.metrics import MetricFrame, MetricName
from tuplehub.storage.models import JobStatus
from tuplehub.storage.queue import Queue
from tuplehub.workers.jobs.metric_schedule import recompute_metrics, stale_requests
from tuplehub.workers.metrics.episodes import episode_returns
from tuplehub.workers.metrics.returns import return_statistics

from .conftest import admin_client, admin_token
from .factories import episode_arrays


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait_for_metrics(hub: Client, dataset: str) -> None:
    """Wait for every metrics job of ``dataset`` (the automatic one after an ingest included)."""
    for job in hub.jobs.list(kind="metrics", limit=1000).items:
        if job.params["dataset"] == dataset:
            hub.jobs.get(job.id).wait(timeout=120)


def _pendulum(hub: Client, **references: float) -> str:
    """A benchmark of this test's own (Pendulum with a gravity nobody else uses), so frames do not mix."""
    gravity = 1 + uuid.uuid4().int % 10**6 / 10**5
    benchmark = hub.benchmarks.create_from_env(gym.make("Pendulum-v1", g=gravity), name=_name("pendulum"))
    if references:
        benchmark.set_references(**references)
    return benchmark.id


def _pendulum_data(seed: int, episodes: int = 12) -> dict[str, np.ndarray]:
    return episode_arrays(episodes=episodes, length=30, obs_dim=3, act_dim=1, seed=seed)


def test_cheap_metrics_run_after_every_ingest(hub: Client) -> None:
    benchmark = _pendulum(hub, random_return=-20.0, expert_return=20.0)
    arrays = _pendulum_data(seed=1)
    dataset = hub.datasets.create(_name("auto"), benchmark=benchmark)
    dataset.upload(arrays).wait()
    _wait_for_metrics(hub, dataset.name)
    results = {r.key: r for r in hub.metrics.results(dataset.name)}
    assert set(results) == {"returns", "trajectory_quality", "return_improvement", "state_action_coverage"}
    expected = return_statistics(arrays["episode_id"], arrays["reward"], arrays["terminated"], arrays["truncated"])
    assert results["returns"].result.value == pytest.approx(expected.value)
    assert (results["returns"].result.ci_low, results["returns"].result.ci_high) == pytest.approx(
        (expected.ci_low, expected.ci_high))
    returns = episode_returns(arrays["episode_id"], arrays["reward"])
    assert results["trajectory_quality"].result.value == pytest.approx((returns.mean() + 20) / 40)
    assert results["trajectory_quality"].benchmark_inputs == {"references": [-20.0, 20.0]}
    coverage = results["state_action_coverage"].result
    assert coverage.n_rows_used == len(arrays["reward"])
    assert coverage.value is not None
    assert results["state_action_coverage"].benchmark_inputs["frame"] == hub.metrics.frame(benchmark).frame_id


def test_requested_metrics_with_subsampling_and_the_same_seed_giving_the_same_numbers(hub: Client) -> None:
    benchmark = _pendulum(hub)
    dataset = hub.datasets.create(_name("req"), benchmark=benchmark)
    dataset.upload(_pendulum_data(seed=2, episodes=70)).wait()
    rows = dataset.refresh().record.versions[-1].transitions
    request = [{"metric": "shannon_entropy", "max_points": 1000, "queries": 200},
               {"metric": "behavioral_entropy", "alpha": 0.7, "queries": 200}]
    first = hub.metrics.compute(dataset.name, request, seed=3).wait(timeout=120)
    assert first.result is not None
    assert set(first.result["computed"]) == {"shannon_entropy", "behavioral_entropy"}
    values = {r.key: r.result for r in hub.metrics.results(dataset.name)}
    shannon = values["shannon_entropy"]
    assert shannon.n_rows_used < rows
    assert shannon.seed == 3
    assert any("subsample" in w for w in shannon.warnings)
    assert values["behavioral_entropy"].params["alpha"] == 0.7
    hub.metrics.compute(dataset.name, request, seed=3).wait(timeout=120)
    again = {r.key: r.result for r in hub.metrics.results(dataset.name)}
    assert again["shannon_entropy"].value == shannon.value
    assert again["behavioral_entropy"].value == values["behavioral_entropy"].value


def test_bad_requests_are_refused_before_any_job(hub_server: EmbeddedServer, hub: Client) -> None:
    dataset = hub.datasets.create(_name("bad"))
    dataset.upload(_pendulum_data(seed=3, episodes=3)).wait()
    with pytest.raises(InvalidRequest, match="reference returns"):
        hub.metrics.compute(dataset.name, ["trajectory_quality"])
    headers = {"Authorization": f"Bearer {admin_token(hub_server)}"}
    base = f"{hub_server.url}/api/v1/datasets/{dataset.name}/metrics"
    for body, field in (({"metrics": [{"metric": "entropy"}]}, "metric"),
                        ({"metrics": [{"metric": "returns", "gamma": 2}]}, "gamma"),
                        ({"metrics": [{"metric": "policy_value", "policy": "0" * 64}]}, "policy"),
                        ({"metrics": [{"metric": "returns", "colour": "red"}]}, "colour"),
                        ({"metrics": []}, "metrics"),
                        ({"metrics": [{"metric": "returns"}, {"metric": "returns", "gamma": 0.9}]}, "once"),
                        ({"metrics": [{"metric": "state_action_coverage", "reference": "nowhere"}]}, None)):
        response = httpx.post(base, json=body, headers=headers)
        assert 400 <= response.status_code < 500, (body, response.text)
        if field:
            assert field in response.text
    assert httpx.post(base, json={"metrics": [{"metric": "returns"}], "version": 9}, headers=headers).status_code \
        == 404


def test_compare_and_report_across_a_benchmarks_datasets(hub_server: EmbeddedServer, hub: Client,
                                                         tmp_path: Path) -> None:
    benchmark = _pendulum(hub, random_return=-20.0, expert_return=20.0)
    names = []
    for seed in (4, 5):
        dataset = hub.datasets.create(_name("cmp"), benchmark=benchmark)
        dataset.upload(_pendulum_data(seed=seed)).wait()
        names.append(dataset.name)
    for name in names:
        _wait_for_metrics(hub, name)
    hub.metrics.compute(names[1], [{"metric": "state_action_coverage", "reference": names[0]}]).wait(timeout=120)
    comparison = hub.metrics.compare(names)
    assert [row.dataset for row in comparison.rows] == names
    assert comparison.benchmark == benchmark
    normalised = comparison.rows[1].results["state_action_coverage"]
    assert normalised.details["reference"] == f"{names[0]}@1"
    assert normalised.value > 0
    stranger = hub.datasets.create(_name("other"))
    stranger.upload(_pendulum_data(seed=6, episodes=3)).wait()
    with pytest.raises(InvalidRequest, match="no benchmark"):
        hub.metrics.compare([names[0], stranger.name])

    env = {"TUPLEHUB_URL": hub_server.url, "TUPLEHUB_TOKEN": admin_token(hub_server)}
    runner = CliRunner()
    table = runner.invoke(app, ["metrics", "compare", *names], env=env)
    assert table.exit_code == 0, table.output
    assert "trajectory_quality" in table.output.lower()
    assert names[0] in table.output
    out = tmp_path / "report"
    drawn = runner.invoke(app, ["metrics", "report", *names, "--out", str(out)], env=env)
    assert drawn.exit_code == 0, drawn.output
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert names[1] in page
    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = runner.invoke(app, ["metrics", "show", names[0]], env=env)
    assert shown.exit_code == 0
    assert "return_improvement" in shown.output


def test_a_changed_frame_or_reference_makes_results_stale_and_the_sweep_recomputes_them(
        hub_server: EmbeddedServer, hub: Client) -> None:
    benchmark = _pendulum(hub, random_return=-20.0, expert_return=20.0)
    dataset = hub.datasets.create(_name("stale"), benchmark=benchmark)
    dataset.upload(_pendulum_data(seed=7)).wait()
    _wait_for_metrics(hub, dataset.name)

    async def sweep() -> tuple[object, int]:
        catalog = await open_catalog(hub_server.settings.resolved_catalog_url())
        queue = await Queue.connect(hub_server.settings.redis_url, hub_server.settings.queue_name)
        try:
            record = await catalog.get_dataset(dataset.name)
            stale = await stale_requests(catalog, record, 1)
            return stale, await recompute_metrics({"catalog": catalog, "queue": queue})  # type: ignore[typeddict-item]
        finally:
            await queue.aclose()
            await catalog.aclose()

    fresh, _ = asyncio.run(sweep())
    assert fresh == []
    old_frame = hub.metrics.frame(benchmark)
    hub.metrics.set_frame(benchmark, MetricFrame.model_validate({
        **old_frame.model_dump(), "coverage_low": [x - 1 for x in old_frame.coverage_low], "source": "by hand"}))
    hub.benchmarks.get(benchmark).set_references(random_return=-10.0, expert_return=10.0)
    stale, queued = asyncio.run(sweep())
    assert len(stale) == 1
    assert {p.metric for p in stale[0].metrics} == {"state_action_coverage", "trajectory_quality"}
    assert queued >= 1
    _wait_for_metrics(hub, dataset.name)
    results = {r.key: r for r in hub.metrics.results(dataset.name)}
    assert results["trajectory_quality"].benchmark_inputs == {"references": [-10.0, 10.0]}
    assert results["state_action_coverage"].benchmark_inputs["frame"] != old_frame.frame_id
    assert asyncio.run(sweep())[0] == []


def test_a_new_version_gets_the_metrics_its_dataset_had(hub_server: EmbeddedServer, hub: Client) -> None:
    dataset = hub.datasets.create(_name("newver"))
    dataset.upload(_pendulum_data(seed=8)).wait()
    hub.metrics.compute(dataset.name, [{"metric": "shannon_entropy", "queries": 100}]).wait(timeout=120)
    dataset.upload(_pendulum_data(seed=9), mode="replace").wait()
    _wait_for_metrics(hub, dataset.name)

    async def sweep() -> int:
        catalog = await open_catalog(hub_server.settings.resolved_catalog_url())
        queue = await Queue.connect(hub_server.settings.redis_url, hub_server.settings.queue_name)
        try:
            return await recompute_metrics({"catalog": catalog, "queue": queue})  # type: ignore[typeddict-item]
        finally:
            await queue.aclose()
            await catalog.aclose()

    assert asyncio.run(sweep()) >= 1
    _wait_for_metrics(hub, dataset.name)
    assert "shannon_entropy" in {r.key for r in hub.metrics.results(dataset.name, version=2)}


def test_results_follow_the_datasets_sharing(hub_server: EmbeddedServer, hub: Client) -> None:
    dataset = hub.datasets.create(_name("private"))
    dataset.upload(_pendulum_data(seed=10, episodes=3)).wait()
    password = "a long enough password"
    user = _name("reader")
    hub.users.create(user, password=password)
    with Client(hub_server.url) as other:
        other.login(user, password, remember=False)
        with pytest.raises(Exception, match="no dataset"):
            other.metrics.results(dataset.name)
        dataset.publish(public=True)
        assert other.metrics.results(dataset.name) is not None


def test_the_job_refuses_what_failed_and_reports_it(hub: Client) -> None:
    dataset = hub.datasets.create(_name("fail"))
    dataset.upload(_pendulum_data(seed=11, episodes=3)).wait()
    job = hub.metrics.compute(dataset.name, [{"metric": "shannon_entropy", "k": 100}])
    with pytest.raises(Exception, match="k = 100"):
        job.wait(timeout=120)
    assert hub.jobs.get(job.id).status == JobStatus.failed


def test_one_version_is_computed_by_one_job_at_a_time(redis_url: str) -> None:
    """The per-version lock: a second holder waits (checking in between) until the first lets go."""
    async def scenario() -> list[str]:
        queue = await Queue.connect(redis_url, f"test:{uuid.uuid4().hex}")
        events: list[str] = []
        waits = 0

        async def wait() -> None:
            nonlocal waits
            waits += 1

        async def holder(name: str, hold_s: float) -> None:
            async with queue.exclusive("metrics:ds:1", wait=wait, wait_s=10, poll_s=0.05):
                events.append(f"{name} in")
                await asyncio.sleep(hold_s)
                events.append(f"{name} out")

        try:
            first = asyncio.create_task(holder("first", 0.3))
            await asyncio.sleep(0.05)
            await holder("second", 0)
            await first
            async with queue.exclusive("metrics:ds:2", wait=wait, wait_s=1, poll_s=0.05):
                with pytest.raises(Conflict, match="busy"):
                    await queue.exclusive("metrics:ds:2", wait=wait, wait_s=0.2, poll_s=0.05).__aenter__()
        finally:
            await queue.aclose()
        assert waits > 0
        return events

    assert asyncio.run(scenario()) == ["first in", "first out", "second in", "second out"]


def _policy_bytes(scale: float) -> bytes:
    """A TorchScript policy for Pendulum: a = scale * observation[0], as a user would upload one."""
    import io
    import warnings

    torch = pytest.importorskip("torch")

    class Linear(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, observation: torch.Tensor) -> torch.Tensor:
            return self.scale * observation[:, :1]

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, which d3rlpy's save_policy still writes
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Linear(scale)), buffer)
    return buffer.getvalue()


def test_fitted_q_and_policy_values_through_the_job(hub_server: EmbeddedServer, hub: Client) -> None:
    pytest.importorskip("torch")
    benchmark = _pendulum(hub)
    dataset = hub.datasets.create(_name("fqe"), benchmark=benchmark)
    arrays = _pendulum_data(seed=12, episodes=10)
    dataset.upload(arrays).wait()
    quick = {"steps": 200, "seeds": 2}
    policies = [hub.artifacts.upload(_policy_bytes(scale), name=f"policy-{scale}.pt").id for scale in (0.5, -0.5)]
    job = hub.metrics.compute(dataset.name, [
        {"metric": "average_q", "target": "sarsa", **quick},
        *({"metric": "policy_value", "policy": policy, **quick} for policy in policies)], seed=1)
    job.wait(timeout=300)
    results = {r.key: r.result for r in hub.metrics.results(dataset.name)}
    average_q = results["average_q"]
    assert average_q.params["target"] == "sarsa"
    assert average_q.seed == 1
    assert len(average_q.details["per_seed"]["average_q"]) == 2
    assert average_q.ci_low is not None
    assert average_q.ci_low <= average_q.value <= average_q.ci_high
    assert average_q.details["threads"] == hub_server.settings.metrics_threads  # the worker's share of the CPUs
    # Rows without a next action in the data (the last of each truncated episode) are left out.
    truncated_ends = int(arrays["truncated"].sum())
    assert average_q.n_rows_used == len(arrays["reward"]) - truncated_ends
    for policy in policies:
        value = results[f"policy_value:{policy}"]
        assert value.metric == "policy_value"
        assert value.details["initial_state_value"] == value.value
    hub.metrics.compute(dataset.name, [{"metric": "average_q", "bc_steps": 100, **quick}]).wait(timeout=300)
    replaced = {r.key: r.result for r in hub.metrics.results(dataset.name)}["average_q"]
    assert replaced.params["target"] == "policy"
    assert "behaviour_cloning" in replaced.details
    # A named policy artifact instead of behaviour cloning: the average Q under that policy.
    hub.metrics.compute(dataset.name, [{"metric": "average_q", "policy": policies[0], **quick}]).wait(timeout=300)
    under_policy = {r.key: r.result for r in hub.metrics.results(dataset.name)}["average_q"]
    assert under_policy.metric == "average_q"
    assert under_policy.value == under_policy.details["average_q"]
    assert under_policy.params["policy_sha256"] == policies[0]
    assert not any("initial" in warning for warning in under_policy.warnings)
    with pytest.raises(InvalidRequest, match="target must be 'policy'"):
        hub.metrics.compute(dataset.name, [{"metric": "average_q", "policy": policies[0], "target": "sarsa"}])
    ranked = hub.metrics.policies(dataset.name)
    assert [r.key for r in ranked] == sorted((f"policy_value:{p}" for p in policies),
                                             key=lambda k: -results[k].value)

    dataset.publish(public=True)
    user, password = _name("peer"), "a long enough password"
    hub.users.create(user, password=password)
    with Client(hub_server.url) as peer:
        peer.login(user, password, remember=False)
        seen = {r.key for r in peer.metrics.results(dataset.name)}
        assert "returns" in seen
        # Both evaluated policies the peer cannot read: the average Q under one, and their values.
        assert "average_q" not in seen
        assert not any(key.startswith("policy_value") for key in seen)
        with pytest.raises(InvalidRequest, match="no policy artifact"):
            peer.metrics.compute(dataset.name, [{"metric": "policy_value", "policy": policies[0]}])


def _peer(hub_server: EmbeddedServer, hub: Client) -> Client:
    user, password = _name("peer"), "a long enough password"
    hub.users.create(user, password=password)
    peer = Client(hub_server.url)
    peer.login(user, password, remember=False)
    return peer


def test_only_the_first_owner_of_a_benchmark_may_change_its_frame(hub_server: EmbeddedServer, hub: Client) -> None:
    benchmark = _pendulum(hub)
    dataset = hub.datasets.create(_name("frame"), benchmark=benchmark)
    dataset.upload(_pendulum_data(seed=13)).wait()
    _wait_for_metrics(hub, dataset.name)
    frame = hub.metrics.frame(benchmark)
    assert dataset.name not in frame.source  # the frame is shown to every reader of the benchmark
    with _peer(hub_server, hub) as peer:
        same = peer.benchmarks.create(hub.benchmarks.get(benchmark).spec)  # the same spec: the same id
        assert same.id == benchmark
        with pytest.raises(Exception, match="first owner"):
            peer.metrics.set_frame(benchmark, frame)
        with pytest.raises(Exception, match="first owner"):
            peer.metrics.reset_frame(benchmark)
    headers = {"Authorization": f"Bearer {admin_token(hub_server)}"}
    url = f"{hub_server.url}/api/v1/benchmarks/{benchmark}/frame"
    body = frame.model_dump(mode="json")
    for broken, field in (({**body, "mean": [float("nan")] * 4}, "mean"), ({**body, "components": []}, "components"),
                          ({**body, "coverage_low": [1e300] * 4}, "coverage_low"),
                          ({**body, "scale": [0.0] * 4}, "scale")):
        response = httpx.put(url, content=json_dumps(broken), headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert field in response.text
    narrow = {"source": "by hand", "mean": [0.0] * 3, "scale": [1.0] * 3, "coverage_dims": 3,
              "coverage_low": [-1.0] * 3, "coverage_high": [1.0] * 3, "entropy_dims": 3}
    response = httpx.put(url, json=narrow, headers=headers)
    assert response.status_code == 422
    assert "4 continuous dimensions" in response.text
    assert hub.metrics.frame(benchmark) == frame


def json_dumps(value: object) -> str:
    """JSON with NaN written out, as a careless client would send it."""
    return json.dumps(value)


def test_storing_results_needs_write_access_and_results_hide_what_a_reader_cannot_see(
        hub_server: EmbeddedServer, hub: Client) -> None:
    benchmark = _pendulum(hub)
    shared = hub.datasets.create(_name("shared"), benchmark=benchmark)
    private = hub.datasets.create(_name("secret"), benchmark=benchmark)
    for dataset, seed in ((shared, 14), (private, 15)):
        dataset.upload(_pendulum_data(seed=seed)).wait()
        _wait_for_metrics(hub, dataset.name)
    hub.metrics.compute(shared.name, [{"metric": "state_action_coverage", "reference": private.name}]).wait(
        timeout=120)
    shared.publish(public=True)
    with _peer(hub_server, hub) as peer:
        with pytest.raises(Exception, match="write access"):
            peer.metrics.compute(shared.name, ["returns"])
        seen = {r.key for r in peer.metrics.results(shared.name)}
        assert "returns" in seen
        assert "state_action_coverage" not in seen
    assert "state_action_coverage" in {r.key for r in hub.metrics.results(shared.name)}


def test_data_that_does_not_match_its_benchmark_keeps_the_benchmarks_frame(hub: Client) -> None:
    benchmark = _pendulum(hub)
    matching = hub.datasets.create(_name("match"), benchmark=benchmark)
    matching.upload(_pendulum_data(seed=16)).wait()
    _wait_for_metrics(hub, matching.name)
    frame = hub.metrics.frame(benchmark)
    wide = hub.datasets.create(_name("wide"), benchmark=benchmark)
    wide.upload(episode_arrays(episodes=8, length=20, obs_dim=5, act_dim=1, seed=17)).wait()
    _wait_for_metrics(hub, wide.name)
    results = {r.key: r.result for r in hub.metrics.results(wide.name)}
    assert results["returns"].value is not None  # the rest of the job is not lost
    coverage = results["state_action_coverage"]
    assert coverage.value is None
    assert "does not match its benchmark" in coverage.warnings[0]
    assert hub.metrics.frame(benchmark) == frame


def test_the_sweep_schedule_is_a_cron_of_the_setting() -> None:
    from tuplehub.workers.settings import _every

    assert _every(30) == {"second": set(range(0, 60, 30))}
    assert _every(45) == {"minute": set(range(60)), "second": 0}
    assert _every(90) == {"minute": set(range(0, 60, 2)), "second": 0}
    assert _every(600) == {"minute": set(range(0, 60, 10)), "second": 0}
    assert _every(3600) == {"hour": set(range(24)), "minute": 0, "second": 0}
    assert _every(6 * 3600) == {"hour": {0, 6, 12, 18}, "minute": 0, "second": 0}
    assert _every(86400) == _every(7 * 86400) == {"hour": {0}, "minute": 0, "second": 0}


def test_discrete_actions_are_binned_as_they_are_and_fitted_directly(hub: Client) -> None:
    pytest.importorskip("torch")
    benchmark = hub.benchmarks.create_from_env(gym.make("CartPole-v1"), name=_name("cartpole")).id
    arrays = episode_arrays(episodes=10, length=20, obs_dim=4, act_dim=1, seed=18)
    arrays["action"] = np.random.default_rng(18).integers(0, 2, size=len(arrays["reward"]))
    dataset = hub.datasets.create(_name("discrete"), benchmark=benchmark)
    dataset.upload(arrays).wait()
    _wait_for_metrics(hub, dataset.name)
    hub.metrics.compute(dataset.name, [{"metric": "average_q", "target": "fqi", "steps": 100, "seeds": 1}]).wait(
        timeout=300)
    results = {r.key: r.result for r in hub.metrics.results(dataset.name)}
    frame = hub.metrics.frame(benchmark)
    assert len(frame.mean) == 4  # the observations only: action ids are not scaled
    assert results["state_action_coverage"].details["distinct"] <= len(arrays["reward"])
    assert results["average_q"].params["target"] == "fqi"
    assert results["average_q"].value is not None


def test_only_public_data_or_the_first_owners_freezes_a_benchmarks_frame(hub_server: EmbeddedServer,
                                                                        hub: Client) -> None:
    with _peer(hub_server, hub) as peer:
        benchmark = _pendulum(hub)
        peer.benchmarks.create(hub.benchmarks.get(benchmark).spec)  # the same spec, the peer's record of it
        mine = peer.datasets.create(_name("early"), benchmark=benchmark)
        mine.upload(_pendulum_data(seed=19)).wait()
        _wait_for_metrics(peer, mine.name)
        coverage = {r.key: r.result for r in peer.metrics.results(mine.name)}["state_action_coverage"]
        assert coverage.value is not None
        assert "may not set it" in coverage.warnings[-1]
        with pytest.raises(Exception, match="no frozen metric frame"):
            hub.metrics.frame(benchmark)
        policy = peer.artifacts.upload(_policy_bytes(0.5), name="mine.pt").id if _has_torch() else None
    if policy is not None:  # a reader evaluates their own policy on the admin's dataset, not others'
        dataset = hub.datasets.create(_name("theirs"), benchmark=benchmark)
        dataset.upload(_pendulum_data(seed=20)).wait()
        dataset.publish(public=True)
        baseline = hub.artifacts.upload(_policy_bytes(-0.5), name="baseline.pt")
        baseline.publish(public=True)
        with _peer(hub_server, hub) as other:
            mine_too = other.artifacts.upload(_policy_bytes(0.25), name="own.pt").id
            with pytest.raises(Exception, match="your own policies"):
                other.metrics.compute(dataset.name, [{"metric": "policy_value", "policy": baseline.id}])
            other.metrics.compute(dataset.name, [{"metric": "policy_value", "policy": mine_too, "steps": 50,
                                                  "seeds": 1}]).wait(timeout=300)
            assert f"policy_value:{mine_too}" in {r.key for r in other.metrics.results(dataset.name)}


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def test_action_entropy_through_the_job_and_undefined_on_continuous_actions(hub: Client) -> None:
    """The metric added as a parameter class, a function and one registry row, run end to end."""
    benchmark = hub.benchmarks.create_from_env(gym.make("CartPole-v1"), name=_name("cartpole")).id
    arrays = episode_arrays(episodes=4, length=10, obs_dim=4, act_dim=1, seed=21, ragged=False)
    arrays["action"] = np.array([0, 0, 0, 1] * 10)  # shares 3/4 and 1/4 (tests/test_metrics.py's worked example)
    dataset = hub.datasets.create(_name("actions"), benchmark=benchmark)
    dataset.upload(arrays).wait()
    _wait_for_metrics(hub, dataset.name)
    hub.metrics.compute(dataset.name, [{"metric": "action_entropy"}]).wait(timeout=120)
    result = {r.key: r.result for r in hub.metrics.results(dataset.name)}["action_entropy"]
    assert result.value == pytest.approx(0.562335, abs=1e-6)
    assert result.details["n_actions"] == 2
    assert result.n_rows_used == 40
    continuous = hub.datasets.create(_name("continuous"))
    continuous.upload(_pendulum_data(seed=22, episodes=3)).wait()
    _wait_for_metrics(hub, continuous.name)
    job = hub.metrics.compute(continuous.name, ["returns", "action_entropy"])
    assert job.wait(timeout=120).result["skipped"] == {
        "action_entropy": "action entropy needs discrete actions; these are continuous"}
    with pytest.raises(JobFailed, match="needs discrete actions") as failed:
        hub.metrics.compute(continuous.name, ["action_entropy"]).wait(timeout=120)
    assert failed.value.error["code"] == MetricUndefined.code


def test_an_error_that_is_not_metric_undefined_fails_the_job(hub: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only MetricUndefined becomes an undefined result; any other refusal is a fault, not the data's."""
    from tuplehub.workers.jobs import metric_registry
    from tuplehub.workers.jobs.metric_registry import Metric

    async def broken(*_: object) -> object:
        raise InvalidRequest("a bug in an adapter", field="metric")

    dataset = hub.datasets.create(_name("broken"))
    dataset.upload(_pendulum_data(seed=23, episodes=3)).wait()
    _wait_for_metrics(hub, dataset.name)
    monkeypatch.setitem(metric_registry.METRICS, MetricName.return_improvement, Metric("1", broken))
    job = hub.metrics.compute(dataset.name, ["returns", "return_improvement"], seed=5)
    with pytest.raises(JobFailed, match="a bug in an adapter") as failed:
        job.wait(timeout=120)
    assert failed.value.error["code"] == InvalidRequest.code
    assert hub.jobs.get(job.id).status == JobStatus.failed
