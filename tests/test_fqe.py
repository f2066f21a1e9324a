"""Fitted Q evaluation on the reference note's worked example (metrics.md, section 7), a continuous dataset whose
value is known, a CartPole policy's Monte-Carlo return, policy artifacts (our own TorchScript and d3rlpy's
save_policy), and the inputs it must refuse."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tuplehub.storage.errors import InvalidRequest  # noqa: E402
from tuplehub.storage.settings import metrics_threads_default  # noqa: E402
from tuplehub.workers.metrics import fqe  # noqa: E402

# One-hot states s0, s1, gamma 0.9: (s0, a0, r 1 -> s1), (s1, a1, r 0, terminal), (s1, a0, r 1, terminal).
S0, S1 = [1.0, 0.0], [0.0, 1.0]
EXAMPLE = {"observation": np.array([S0, S1, S1], np.float32), "action": np.array([0, 1, 0]),
           "reward": np.array([1.0, 0.0, 1.0]), "next_observation": np.array([S1, S1, S1], np.float32),
           "terminated": np.array([False, True, True])}
SMALL = {"gamma": 0.9, "hidden": (64, 64), "learning_rate": 1e-3, "steps": 3000, "seeds": (0,)}


def scripted(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; d3rlpy's save_policy still writes it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


class EqualLogits(torch.nn.Module):
    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.zeros(observation.shape[0], 2)


class HalfOfSecond(torch.nn.Module):
    """The continuous dataset's behaviour policy, a = 0.5 u."""

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return 0.5 * observation[:, 1:2]


def test_sarsa_on_the_worked_example_is_the_mean_return_to_go() -> None:
    result = fqe.average_q_value(**EXAMPLE, n_actions=2, target="sarsa", next_action=np.array([1, -1, -1]), **SMALL)
    assert result.metric == "average_q"
    assert result.value == pytest.approx(0.6667, abs=0.01)
    assert result.params["target"] == "sarsa"
    assert result.params["gamma"] == 0.9
    assert result.algo_version == fqe.VERSION
    assert result.details["threads"] == metrics_threads_default()  # the worker's default, one job's share


def test_fqi_on_the_worked_example_takes_the_max() -> None:
    result = fqe.average_q_value(**EXAMPLE, n_actions=2, target="fqi", **SMALL)
    assert result.value == pytest.approx(0.9667, abs=0.01)


def test_a_uniform_policy_artifact_on_the_worked_example() -> None:
    policy = fqe.load_policy(scripted(EqualLogits()))
    np.testing.assert_allclose(policy.probabilities(EXAMPLE["observation"], 2), 0.5)
    result = fqe.average_q_value(**EXAMPLE, n_actions=2, policy=policy, initial=np.array([True, False, False]),
                                 **SMALL)
    assert result.metric == "policy_value"
    assert result.details["average_q"] == pytest.approx(0.8167, abs=0.01)
    assert result.n_episodes_used == 1
    assert result.params["policy_sha256"] == policy.digest


def continuous_episodes(episodes: int = 40, length: int = 5) -> dict[str, np.ndarray]:
    """Observations (t / L, u), action 0.5 u, reward 1 at every step, terminated after L steps."""
    rng = np.random.default_rng(3)
    step = np.tile(np.arange(length), episodes)
    u = rng.uniform(-1, 1, size=episodes * length)
    observation = np.column_stack([step / length, u]).astype(np.float32)
    following = np.roll(observation, -1, axis=0)
    following[step == length - 1] = np.nan  # never used: those rows are terminated
    return {"observation": observation, "action": (0.5 * u)[:, None].astype(np.float32),
            "reward": np.ones(len(step)), "next_observation": following, "terminated": step == length - 1,
            "initial": step == 0}


# Q(s_t) = (1 - 0.9^(L - t)) / (1 - 0.9) for t = 0..4: 4.0951, 3.439, 2.71, 1.9, 1.0.
RETURNS_TO_GO = (1 - 0.9 ** np.arange(5, 0, -1)) / 0.1
CONTINUOUS = {"gamma": 0.9, "hidden": (64, 64), "learning_rate": 1e-3, "steps": 2000, "bc_steps": 300,
              "seeds": (0, 1)}


def test_continuous_behaviour_cloning_finds_the_discounted_return() -> None:
    data = continuous_episodes()
    seen: list[float] = []
    result = fqe.average_q_value(**data, **CONTINUOUS, progress=seen.append)
    assert result.metric == "average_q"
    assert result.value == pytest.approx(RETURNS_TO_GO.mean(), abs=0.1)
    assert result.details["initial_state_value"] == pytest.approx(RETURNS_TO_GO[0], abs=0.15)
    assert result.ci_low <= result.value <= result.ci_high
    assert result.ci_method == "min-max over 2 training seeds"
    assert len(result.details["per_seed"]["average_q"]) == 2
    assert result.details["behaviour_cloning"]["loss"] < 0.01
    assert result.params["action_low"] == pytest.approx([data["action"].min()])
    assert result.n_episodes_used == 40
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert not result.warnings


def test_the_same_call_gives_the_same_number() -> None:
    data = continuous_episodes(episodes=10)
    options = {**CONTINUOUS, "steps": 300, "bc_steps": 100}
    first = fqe.average_q_value(**data, **options)
    again = fqe.average_q_value(**data, **options)
    assert first.value == again.value
    assert first.details == again.details


def test_a_continuous_policy_artifact_has_the_start_states_value() -> None:
    policy = fqe.load_policy(scripted(HalfOfSecond()))
    data = continuous_episodes()
    np.testing.assert_allclose(policy.actions(data["observation"][:4]), data["action"][:4], rtol=1e-6)
    result = fqe.average_q_value(**data, policy=policy, **{**CONTINUOUS, "seeds": (0,)})
    assert result.metric == "policy_value"
    assert result.value == pytest.approx(RETURNS_TO_GO[0], abs=0.15)
    assert result.value == result.details["initial_state_value"]
    assert result.ci_low is None  # one seed: no interval


def test_a_policy_value_without_start_rows_falls_back_with_a_warning() -> None:
    policy = fqe.load_policy(scripted(HalfOfSecond()))
    data = {**continuous_episodes(episodes=10), "initial": None}
    result = fqe.average_q_value(**data, policy=policy, **{**CONTINUOUS, "steps": 200, "seeds": (0,)})
    assert result.value == result.details["state_value"]
    assert result.details["initial_state_value"] is None
    assert any("initial" in warning for warning in result.warnings)



def test_average_q_with_a_policy_reports_the_average_q_it_was_asked_for() -> None:
    """The caller names the figure: no policy-value result relabelled afterwards by its warnings' text."""
    policy = fqe.load_policy(scripted(HalfOfSecond()))
    data = {**continuous_episodes(episodes=10), "initial": None}
    result = fqe.average_q_value(**data, policy=policy, report="average_q", **{**CONTINUOUS, "steps": 200,
                                                                               "seeds": (0, 1)})
    assert result.metric == "average_q"
    assert result.value == result.details["average_q"]
    assert (result.ci_low, result.ci_high) == (min(result.details["per_seed"]["average_q"]),
                                               max(result.details["per_seed"]["average_q"]))
    assert not any("initial" in warning for warning in result.warnings)  # a policy value's caveat, not this


BALANCING = np.array([0.0, 0.2, 1.0, 0.2])  # push toward where the pole leans and moves: never fails in 3,000 steps


def balance(observation: np.ndarray) -> np.ndarray:
    return (np.asarray(observation) @ BALANCING > 0).astype(np.int64)


def cartpole_rollouts(episodes: int, length: int, *, gamma: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The balancing policy's rows (episodes truncated after ``length`` steps) and each start state's Monte-Carlo
    discounted return, rolled out without a time limit until gamma^t < 1e-4."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    columns: dict[str, list[object]] = {name: [] for name in ("observation", "action", "reward", "next_observation",
                                                              "terminated", "initial")}
    horizon = int(np.log(1e-4) / np.log(gamma))
    returns = np.zeros(episodes)
    for episode in range(episodes):
        env = CartPoleEnv()
        observation, _ = env.reset(seed=episode)
        for step in range(max(length, horizon)):
            action = int(balance(observation))
            following, reward, terminated, _, _ = env.step(action)
            returns[episode] += gamma ** step * reward
            if step < length:
                for name, value in (("observation", observation), ("action", action), ("reward", reward),
                                    ("next_observation", following), ("terminated", terminated),
                                    ("initial", step == 0)):
                    columns[name].append(value)
            observation = following
            if terminated:
                break
    data = {name: np.array(values) for name, values in columns.items()}
    data["observation"] = data["observation"].astype(np.float32)
    data["next_observation"] = data["next_observation"].astype(np.float32)
    return data, returns


@pytest.mark.slow  # about 5 s: 5,000 steps of a 2x32 network
def test_a_long_lived_cartpole_policy_gets_its_monte_carlo_return() -> None:
    """At gamma 0.99 a policy that never fails is worth ~100; 50 backups (a copy every 100 steps) gave 39."""
    data, returns = cartpole_rollouts(10, 500, gamma=0.99)
    result = fqe.average_q_value(**data, n_actions=2, target="sarsa", next_action=balance(data["next_observation"]),
                                 gamma=0.99, steps=5000, hidden=(32, 32), learning_rate=1e-3, seeds=(0,), threads=1)
    assert returns.mean() == pytest.approx(100, rel=1e-3)
    assert result.details["initial_state_value"] == pytest.approx(returns.mean(), rel=0.05)
    assert result.value == pytest.approx(returns.mean(), rel=0.05)  # every row is as far from failing
    assert result.details["backups"] >= result.details["backups_needed"] == 459
    assert result.params["target_every"] == 10
    assert result.algo_version == fqe.VERSION == "2"
    assert not result.warnings


def test_too_few_backups_for_gamma_are_flagged() -> None:
    result = fqe.average_q_value(**EXAMPLE, n_actions=2, target="fqi", **{**SMALL, "gamma": 0.99, "steps": 200})
    assert result.details["backups"] == 20
    assert any("only 20 Bellman backups" in warning and "needs 459" in warning for warning in result.warnings)


@pytest.mark.parametrize(("gamma", "steps", "expected"), [
    (0.9, 20_000, (100, 200)),  # the horizon needs 44 backups: the reference recipe's copies suffice
    (0.99, 20_000, (43, 466)),  # needs 459
    (0.999, 20_000, (10, 2000)),  # needs 4,603: 10 steps a copy at least, so too few
])
def test_target_copies_follow_the_horizon(gamma: float, steps: int, expected: tuple[int, int]) -> None:
    every, backups, warning = fqe.target_schedule(gamma, steps, None)
    assert (every, backups) == expected
    assert (warning is None) == (backups >= fqe.backups_needed(gamma))
    assert gamma ** backups <= fqe.BACKUP_RESIDUAL or warning is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning",
                            "ignore:Converting a tensor to a Python boolean")  # d3rlpy tracing its policy
def test_a_d3rlpy_discrete_policy_is_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d3rlpy = pytest.importorskip("d3rlpy")
    monkeypatch.chdir(tmp_path)  # d3rlpy may write under the working directory
    rng = np.random.default_rng(5)
    observation = rng.normal(size=(40, 3)).astype(np.float32)
    action = (observation[:, 0] > 0).astype(np.int64)
    terminals = np.zeros(40)
    terminals[19::20] = 1
    dataset = d3rlpy.dataset.MDPDataset(observation, action, np.ones(40, np.float32), terminals,
                                        action_space=d3rlpy.constants.ActionSpace.DISCRETE, action_size=2)
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=8).create(device="cpu")
    algo.fit(dataset, n_steps=10, n_steps_per_epoch=10, show_progress=False, save_interval=10**9,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    path = tmp_path / "policy.pt"
    algo.save_policy(str(path))

    policy = fqe.load_policy(path.read_bytes())
    probabilities = policy.probabilities(observation, 2)  # d3rlpy writes the greedy action ids
    np.testing.assert_array_equal(probabilities.argmax(axis=1), algo.predict(observation))
    np.testing.assert_array_equal(probabilities.max(axis=1), 1.0)
    following = np.roll(observation, -1, axis=0)
    result = fqe.average_q_value(observation, action, np.ones(40), following, terminals.astype(bool), n_actions=2,
                                 policy=policy, initial=np.arange(40) % 20 == 0,
                                 **{**SMALL, "steps": 300, "hidden": (32,)})
    assert result.metric == "policy_value"
    assert np.isfinite(result.value)
    assert result.n_episodes_used == 2


@pytest.mark.parametrize(("options", "field", "words"), [
    ({"target": "fqi"}, "target", "discrete"),
    ({"target": "sarsa"}, "next_action", "next_action"),
    ({"gamma": 1.0}, "gamma", "[0, 1)"),
])
def test_continuous_refusals(options: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        fqe.average_q_value(**continuous_episodes(episodes=2), **options)
    assert caught.value.extra["field"] == field
    assert words in caught.value.detail


def test_discrete_refusals() -> None:
    with pytest.raises(InvalidRequest, match="holds 2, not an action id") as caught:
        fqe.average_q_value(**{**EXAMPLE, "action": np.array([0, 2, 0])}, n_actions=2, target="fqi")
    assert caught.value.extra["field"] == "action"
    with pytest.raises(InvalidRequest, match="reward") as caught:
        fqe.average_q_value(**{**EXAMPLE, "reward": np.array([1.0, np.nan, 0.0])}, n_actions=2, target="fqi")
    assert caught.value.extra["field"] == "reward"
    with pytest.raises(InvalidRequest, match="next_action holds 5") as caught:
        fqe.average_q_value(**EXAMPLE, n_actions=2, target="sarsa", next_action=np.array([5, -1, -1]))
    assert caught.value.extra["field"] == "next_action"


@pytest.mark.parametrize("data", [b"", b"not a TorchScript file", scripted(EqualLogits())[:100]])
def test_load_policy_refuses_what_is_not_torchscript(data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="policy") as caught:
        fqe.load_policy(data)
    assert caught.value.extra["field"] == "policy"


class FiveInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(5, 2)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.layer(observation)


@pytest.mark.parametrize(("module", "words"), [(HalfOfSecond, "logits"), (FiveInputs, "failed on observations")])
def test_a_policy_that_does_not_fit_the_data_is_refused(module: type[torch.nn.Module], words: str) -> None:
    policy = fqe.load_policy(scripted(module()))
    with pytest.raises(InvalidRequest, match=words) as caught:
        fqe.average_q_value(**EXAMPLE, n_actions=2, policy=policy, steps=10)
    assert caught.value.extra["field"] == "policy"


def test_an_exception_from_progress_stops_the_work() -> None:
    threads = torch.get_num_threads()

    def cancel(fraction: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fqe.average_q_value(**EXAMPLE, n_actions=2, target="fqi", threads=1, progress=cancel, **SMALL)
    assert torch.get_num_threads() == threads


def test_training_runs_on_the_threads_it_is_given() -> None:
    seen: list[int] = []
    result = fqe.average_q_value(**EXAMPLE, n_actions=2, target="fqi", threads=1,
                                 progress=lambda _: seen.append(torch.get_num_threads()), **{**SMALL, "steps": 500})
    assert set(seen) == {1}
    assert result.details["threads"] == 1


def test_torch_available() -> None:
    assert fqe.torch_available()
