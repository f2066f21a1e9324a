"""Average Q-value by fitted Q evaluation (FQE): how much discounted reward the data's actions lead to.

A Q-network is fitted towards the fixed point of
(T Q)(s, a) = r + gamma (1 - terminated) V(s'), by minimising the mean squared TD error over the rows, with a
lagged target network in V. The next-state value V(s') is one of:

- ``sarsa``: Q(s', a') with a' the data's own next action, which evaluates the behaviour policy;
- ``fqi`` (discrete only): max_a Q(s', a), a greedy value that overestimates on narrow data;
- ``policy``: sum_a pi(a|s') Q(s', a), or Q(s', pi(s')) for continuous actions, with pi a given policy or,
  without one, behaviour cloning (BC) trained on the same rows.

Without a policy the metric is ``average_q``, Q-bar = mean of Q(s, a) over every row: higher means the data's
actions are followed by more discounted reward. With a policy it is ``policy_value``, the mean of
V(s0) = E_{a~pi(s0)} Q(s0, a) over episode-start rows: the usual off-policy estimate of the policy's expected
discounted return. Both scale like r / (1 - gamma) and are reported raw, with gamma in the parameters.

Learned, so the uncertainty comes from training once per seed (initialisation and minibatch order) and the
interval is min-max over seeds; the steps are fixed, never "until convergence", so the cost is known in advance.
Each hard copy of the target network is one Bellman backup, and B backups from Q = 0 reach only 1 - gamma^B of a
long-lived policy's value (200 backups at gamma 0.99: 86.6 where the policy is worth 100). So the copies follow
the horizon 1 / (1 - gamma): as many as bring gamma^B under 1%, within the fixed steps, and a result whose steps
cannot afford that many says so in its warnings.
Observations are standardised by the data's own mean and std (std 1 for constant columns), continuous actions
are mapped linearly from [action_low, action_high] to [-1, 1]. Only ``terminated`` stops bootstrapping: a
truncated episode's last row bootstraps from its stored next observation.

torch is imported inside the functions, so this module imports without it; ``torch_available()`` tells.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tuplehub.storage.errors import InvalidRequest, MetricUndefined
from tuplehub.storage.metrics import MetricResult
from tuplehub.storage.settings import metrics_threads_default

if TYPE_CHECKING:
    import torch
    from torch import Tensor  # for functions inside those that bind torch = _torch()

VERSION = "2"  # 2: target copies follow the horizon (1: every 100 steps, biased low at gamma 0.99)
STEPS = 20_000  # the reference recipe (PyTupli's and d3rlpy's scale), fixed: never "until convergence"
BC_STEPS = 10_000
# Three seeds, with BC and STEPS: 500 k ant-shaped rows (obs 105, act 8) take 196 s and 1.5 GB on 2 CPU cores
# (tests/perf/metrics.py); a fourth seed would bring that to about 4.3 min, too close to the 5 min budget.
SEEDS = (0, 1, 2)
BC_HIDDEN = (256, 256)
CHUNK_ROWS = 65_536  # forward passes over every row: bounded memory, few Python round trips
PROGRESS_EVERY = 250  # steps between progress reports; also how many minibatches are drawn at once
LOSS_WINDOW = 100  # the "final" loss is the mean over this many last steps, not one noisy minibatch
TARGET_EVERY = 100  # steps between target copies where the horizon needs no more copies (d3rlpy's default)
MIN_STEPS_PER_COPY = 10  # fewer steps cannot fit a network to its new target (CartPole at 0.99 fits with 6)
BACKUP_RESIDUAL = 0.01  # the copies must bring gamma^backups, the value the fit cannot reach, under this
DIVERGENCE_FACTOR = 1.5  # |Q| may not exceed this times max|r| / (1 - gamma), the largest possible return

Target = Literal["policy", "sarsa", "fqi"]
# An evaluation policy on a chunk of rows (raw observations, the same standardised): discrete action ids [B] or
# probabilities [B, |A|], or continuous actions in [-1, 1] units [B, act_dim]. V(s') averages Q over that choice.
Decide = Callable[[np.ndarray, "torch.Tensor"], "torch.Tensor"]


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch() -> Any:
    if not torch_available():
        raise ModuleNotFoundError("fitted Q evaluation needs torch: pip install 'tuplehub[torch]'")
    import torch

    return torch


class Policy:
    """An evaluation policy: a TorchScript module, run on the CPU, that takes float32 observations [B, obs_dim].

    Continuous actions: it returns actions [B, act_dim]. Discrete actions: either integer action ids [B]
    (deterministic, as d3rlpy's ``save_policy`` writes for DQN or DiscreteBC) or float logits [B, n_actions],
    turned into probabilities by a softmax.
    """

    def __init__(self, module: torch.jit.ScriptModule, *, digest: str | None = None) -> None:
        self.module = module
        self.digest = digest

    def output(self, observation: torch.Tensor) -> torch.Tensor:
        torch = _torch()
        try:
            with torch.no_grad():
                out = self.module(observation.to("cpu", torch.float32))
        except RuntimeError as exc:
            raise MetricUndefined(f"the policy failed on observations of shape {tuple(observation.shape)}: "
                                 f"{str(exc).strip().splitlines()[-1]}", field="policy") from exc
        if not isinstance(out, torch.Tensor):
            raise MetricUndefined(f"the policy returned a {type(out).__name__}, not a tensor", field="policy")
        return out

    def actions(self, observation: np.ndarray) -> np.ndarray:
        return _continuous(self.output(_as_tensor(observation)), None).numpy()

    def probabilities(self, observation: np.ndarray, n_actions: int) -> np.ndarray:
        choice = _discrete(self.output(_as_tensor(observation)), n_actions)
        if choice.is_floating_point():
            return choice.numpy()
        return np.eye(n_actions, dtype=np.float32)[choice.numpy()]


def load_policy(data: bytes) -> Policy:
    """A TorchScript file, as ``torch.jit.save`` or d3rlpy's ``algo.save_policy("x.pt")`` writes it."""
    torch = _torch()
    if not data:
        raise MetricUndefined("the policy file is empty", field="policy")
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks all of torch.jit deprecated, yet TorchScript is what d3rlpy's save_policy writes.
            warnings.filterwarnings("ignore", r".*torch\.jit.* is deprecated", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError or pickle errors, depending on the damage
        raise MetricUndefined(f"the policy is not a TorchScript module (torch.jit.save or d3rlpy save_policy "
                             f"to a .pt file): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                             field="policy") from exc
    module.eval()
    return Policy(module, digest=hashlib.sha256(data).hexdigest())


def _as_tensor(observation: np.ndarray) -> torch.Tensor:
    x = np.asarray(observation, dtype=np.float32)
    return _torch().from_numpy(np.ascontiguousarray(x.reshape(len(x), -1)))


def _discrete(out: torch.Tensor, n_actions: int) -> torch.Tensor:
    """A policy's output as action ids [B] (int64) or probabilities [B, n_actions]."""
    torch = _torch()
    if not out.is_floating_point() and out.ndim in (1, 2) and out.reshape(len(out), -1).shape[1] == 1:
        ids = out.reshape(-1).long()
        bad = ids[(ids < 0) | (ids >= n_actions)]
        if len(bad):
            raise MetricUndefined(f"the policy chose action {int(bad[0])}, outside [0, {n_actions})", field="policy")
        return ids
    if out.is_floating_point() and out.ndim == 2 and out.shape[1] == n_actions:
        return torch.softmax(out.float(), dim=1)
    raise MetricUndefined(f"the policy returned {out.dtype} of shape {tuple(out.shape)}; discrete actions need "
                         f"integer ids [B] or float logits [B, {n_actions}]", field="policy")


def _continuous(out: torch.Tensor, action_dim: int | None) -> torch.Tensor:
    if out.ndim == 1:
        out = out[:, None]
    if not out.is_floating_point() or out.ndim != 2 or (action_dim is not None and out.shape[1] != action_dim):
        raise MetricUndefined(f"the policy returned {out.dtype} of shape {tuple(out.shape)}; continuous actions "
                             f"need floats [B, {action_dim or 'act_dim'}]", field="policy")
    return out.float()


@dataclass
class _Setup:
    """Everything the training loops share: the hyper-parameters and the data, as tensors on one device."""

    device: torch.device
    gamma: float
    hidden: tuple[int, ...]
    learning_rate: float
    batch_size: int
    target_every: int
    n_actions: int | None
    states: torch.Tensor  # [2N, obs_dim] standardised: rows 0..N-1 observations, N..2N-1 next observations
    actions: torch.Tensor  # int64 ids [N], or float [N, act_dim] in [-1, 1] units
    reward: torch.Tensor
    live: torch.Tensor  # 1 - terminated, float
    action_mid: np.ndarray | None = None
    action_half: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.reward)

    def scale(self, action: torch.Tensor) -> torch.Tensor:
        torch = _torch()
        mid = torch.as_tensor(self.action_mid, dtype=torch.float32, device=action.device)
        half = torch.as_tensor(self.action_half, dtype=torch.float32, device=action.device)
        return (action - mid) / half


class _Progress:
    def __init__(self, total: int, report: Callable[[float], None] | None) -> None:
        self.total, self.done, self.report = max(total, 1), 0, report

    def advance(self, steps: int) -> None:
        self.done += steps
        if self.report is not None:
            self.report(min(self.done / self.total, 1.0))


def _rows(name: str, array: Any, n: int, *, dtype: Any = None) -> np.ndarray:
    x = np.asarray(array, dtype=dtype)
    if x.ndim == 0 or len(x) != n:
        raise MetricUndefined(f"{name} has {x.shape[0] if x.ndim else 'no'} rows, observation has {n}", field=name)
    return x


def _action_ids(name: str, action: Any, n: int, n_actions: int, *, skip: np.ndarray | None = None) -> np.ndarray:
    """Discrete ids as int64 [N]; rows in ``skip`` (terminated rows' next action) may hold anything."""
    x = _rows(name, action, n)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise MetricUndefined(f"{name} must hold one action id per row, got {x.dtype} of shape {x.shape}", field=name)
    checked = x if skip is None else x[~skip]
    bad = checked[~np.isfinite(checked) | (checked < 0) | (checked >= n_actions) | (checked != np.round(checked))] \
        if checked.dtype.kind == "f" else checked[(checked < 0) | (checked >= n_actions)]
    if len(bad):
        raise MetricUndefined(f"{name} holds {bad[0].item()!r}, not an action id in [0, {n_actions})", field=name)
    ids = np.where(skip, 0, np.nan_to_num(x)) if skip is not None else x
    return ids.astype(np.int64)


def _continuous_actions(name: str, action: Any, n: int, dim: int | None = None, *,
                        skip: np.ndarray | None = None) -> np.ndarray:
    """Float32 [N, act_dim], finite except on rows in ``skip`` (terminated rows' next action; set to 0)."""
    x = _rows(name, action, n, dtype=np.float32).reshape(n, -1)
    if dim is not None and x.shape[1] != dim:
        raise MetricUndefined(f"{name} has {x.shape[1]} dimensions, action has {dim}", field=name)
    unusable = ~np.isfinite(x).all(axis=1)
    if skip is not None:
        x = np.where(skip[:, None], np.float32(0), x)
        unusable &= ~skip
    if unusable.any():
        raise MetricUndefined(f"{name} row {int(np.argmax(unusable))} is not finite"
                             + ("" if skip is None else " and the row is not terminated"), field=name)
    return x


def _bounds(action: np.ndarray, low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
    dim = action.shape[1]
    lows = action.min(axis=0).astype(np.float64) if low is None else np.asarray(low, dtype=np.float64).reshape(-1)
    highs = action.max(axis=0).astype(np.float64) if high is None else np.asarray(high, dtype=np.float64).reshape(-1)
    if lows.shape != (dim,) or highs.shape != (dim,) or not np.all(np.isfinite(lows) & np.isfinite(highs)) \
            or np.any(highs < lows):
        raise MetricUndefined(f"action_low and action_high must be {dim} finite numbers with high >= low",
                             field="action_low")
    return lows, highs


def _standardised_states(observation: np.ndarray, next_observation: np.ndarray, live: np.ndarray,
                         device: torch.device) -> torch.Tensor:
    """One float32 tensor of standardised observations then next observations, filled chunk by chunk.

    Statistics are accumulated in float64 over chunks, so no float64 copy of the data is ever made.
    A non-finite next observation is allowed only on a terminated row, where it is never used (set to 0).
    """
    torch = _torch()
    n, d = observation.shape
    total, low, high = np.zeros(d), np.full(d, np.inf), np.full(d, -np.inf)
    for start in range(0, n, CHUNK_ROWS):
        chunk = observation[start:start + CHUNK_ROWS]
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            raise MetricUndefined(f"observation row {start + int(np.argmin(finite))} is not finite",
                                 field="observation")
        total += chunk.sum(axis=0, dtype=np.float64)
        low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
    mean = total / n
    squares = np.zeros(d)
    for start in range(0, n, CHUNK_ROWS):
        squares += ((observation[start:start + CHUNK_ROWS] - mean) ** 2).sum(axis=0)
    std = np.where(low == high, 1.0, np.sqrt(squares / n))
    states = torch.empty((2 * n, d), dtype=torch.float32, device=device)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        states[start:stop] = torch.from_numpy(((observation[start:stop] - mean) / std).astype(np.float32))
        after = (next_observation[start:stop] - mean) / std
        unusable = ~np.isfinite(after).all(axis=1)
        if np.any(unusable & live[start:stop]):
            row = start + int(np.argmax(unusable & live[start:stop]))
            raise MetricUndefined(f"next_observation row {row} is not finite and the row is not terminated",
                                 field="next_observation")
        after[unusable] = 0.0
        states[n + start:n + stop] = torch.from_numpy(after.astype(np.float32))
    return states


def _mlp(inputs: int, hidden: Sequence[int], outputs: int) -> torch.nn.Module:
    nn = _torch().nn
    layers: list[torch.nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, outputs))


def _value(net: torch.nn.Module, states: torch.Tensor, choice: torch.Tensor | None, setup: _Setup) -> torch.Tensor:
    """Q(s, a) for given actions, E_pi Q(s, a) for probabilities, max_a Q(s, a) for None; one number per row."""
    torch = _torch()
    if setup.n_actions is None:
        return net(torch.cat([states, choice], dim=1)).squeeze(1)
    q = net(states)
    if choice is None:
        return q.max(dim=1).values
    if choice.is_floating_point():
        return (q * choice).sum(dim=1)
    return q.gather(1, choice[:, None]).squeeze(1)


def _fit(net: torch.nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor], setup: _Setup, *, steps: int,
         seed: int, progress: _Progress, sync: Callable[[], None] | None = None) -> float:
    """Adam on minibatches drawn with replacement from a seeded generator; the mean loss of the last steps."""
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=setup.learning_rate)
    recent = torch.zeros((), device=setup.device)
    for start in range(0, steps, PROGRESS_EVERY):
        block = min(PROGRESS_EVERY, steps - start)
        # Drawn on the CPU, so the batches do not depend on the device.
        indices = torch.randint(setup.n, (block, setup.batch_size), generator=generator).to(setup.device)
        for offset in range(block):
            step = start + offset
            if sync is not None and step % setup.target_every == 0:
                sync()
            loss = batch_loss(indices[offset])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if step >= steps - LOSS_WINDOW:
                recent += loss.detach()
        progress.advance(block)
    return float(recent) / min(steps, LOSS_WINDOW)


def _decide_rows(decide: Decide, raw: np.ndarray, states: torch.Tensor) -> torch.Tensor:
    torch = _torch()
    parts = [decide(raw[start:start + CHUNK_ROWS], states[start:start + CHUNK_ROWS])
             for start in range(0, len(raw), CHUNK_ROWS)]
    return torch.cat(parts) if parts else torch.empty(0)


def _given_policy(policy: Policy, setup: _Setup) -> Decide:
    def decide(raw: np.ndarray, _: torch.Tensor) -> torch.Tensor:
        out = policy.output(_as_tensor(np.nan_to_num(raw)))
        if setup.n_actions is not None:
            return _discrete(out, setup.n_actions).to(setup.device)
        return setup.scale(_continuous(out, len(setup.action_mid)).to(setup.device))  # type: ignore[arg-type]

    return decide


def _behaviour_cloning(setup: _Setup, *, steps: int, seed: int, progress: _Progress) -> tuple[Decide, dict[str, Any]]:
    """Discrete: a softmax classifier (cross-entropy). Continuous: a deterministic tanh regressor (MSE in [-1, 1])."""
    torch = _torch()
    functional = torch.nn.functional
    n, discrete = setup.n, setup.n_actions is not None
    torch.manual_seed(seed)
    net = _mlp(setup.states.shape[1], BC_HIDDEN, setup.n_actions or setup.actions.shape[1]).to(setup.device)
    observations = setup.states[:n]

    def head(states: Tensor) -> Tensor:
        out = net(states)
        return torch.softmax(out, dim=1) if discrete else torch.tanh(out)

    def batch_loss(idx: Tensor) -> Tensor:
        if discrete:
            return functional.cross_entropy(net(observations[idx]), setup.actions[idx])
        return functional.mse_loss(torch.tanh(net(observations[idx])), setup.actions[idx])

    _fit(net, batch_loss, setup, steps=steps, seed=seed, progress=progress)
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, CHUNK_ROWS):
            out, actions = net(observations[start:start + CHUNK_ROWS]), setup.actions[start:start + CHUNK_ROWS]
            if discrete:
                loss += float(functional.cross_entropy(out, actions, reduction="sum"))
                correct += int((out.argmax(dim=1) == actions).sum())
            else:
                loss += float(functional.mse_loss(torch.tanh(out), actions, reduction="sum")) / actions.shape[1]
    details: dict[str, Any] = {"steps": steps, "hidden": list(BC_HIDDEN), "seed": seed,
                               "loss": loss / n, "loss_kind": "cross-entropy" if discrete else "MSE in [-1, 1] units"}
    if discrete:
        details["accuracy"] = correct / n

    def decide(_: np.ndarray, states: Tensor) -> Tensor:
        with torch.no_grad():
            return head(states)

    return decide, details


def _q_pass(net: torch.nn.Module, states: torch.Tensor, choice: torch.Tensor | None,
            setup: _Setup) -> tuple[float, float, bool]:
    """Mean, largest |value| and whether any is NaN, over every row, in chunks."""
    torch = _torch()
    total, largest, nan = 0.0, 0.0, False
    with torch.no_grad():
        for start in range(0, len(states), CHUNK_ROWS):
            part = None if choice is None else choice[start:start + CHUNK_ROWS]
            q = _value(net, states[start:start + CHUNK_ROWS], part, setup).double()
            total += float(q.sum())
            nan = nan or bool(torch.isnan(q).any())
            largest = max(largest, float(torch.nan_to_num(q, nan=0.0).abs().max()))
    return total / max(len(states), 1), largest, nan


def _fqe_run(setup: _Setup, next_choice: torch.Tensor | None, *, seed: int, steps: int, progress: _Progress,
             first_rows: torch.Tensor, start_choice: torch.Tensor | None,
             every_choice: torch.Tensor | None) -> dict[str, Any]:
    """Train one Q-network from ``seed``; its figures over the rows, the episode starts and (fallback) every state."""
    torch = _torch()
    n = setup.n
    torch.manual_seed(seed)
    inputs = setup.states.shape[1] + (0 if setup.n_actions is not None else setup.actions.shape[1])
    net = _mlp(inputs, setup.hidden, setup.n_actions or 1).to(setup.device)
    target = _mlp(inputs, setup.hidden, setup.n_actions or 1).to(setup.device).requires_grad_(False)

    def batch_loss(idx: Tensor) -> Tensor:
        with torch.no_grad():
            after = None if next_choice is None else next_choice[idx]
            goal = setup.reward[idx] + setup.gamma * setup.live[idx] * _value(target, setup.states[idx + n], after,
                                                                              setup)
        return torch.nn.functional.mse_loss(_value(net, setup.states[idx], setup.actions[idx], setup), goal)

    loss = _fit(net, batch_loss, setup, steps=steps, seed=seed, progress=progress,
                sync=lambda: target.load_state_dict(net.state_dict()))
    average, largest, nan = _q_pass(net, setup.states[:n], setup.actions, setup)
    run = {"average_q": average, "td_loss": loss, "largest": largest, "nan": nan}
    if len(first_rows):
        run["initial_state_value"] = _q_pass(net, setup.states[first_rows], start_choice, setup)[0]
    if every_choice is not None:
        run["state_value"] = _q_pass(net, setup.states[:n], every_choice, setup)[0]
    return run


def backups_needed(gamma: float) -> int:
    """The Bellman backups B with gamma^B <= 1%: 459 at gamma 0.99, 44 at 0.9, 1 for gamma 0."""
    return 1 if gamma == 0 else max(1, math.ceil(math.log(BACKUP_RESIDUAL) / math.log(gamma)))


def target_schedule(gamma: float, steps: int, target_every: int | None) -> tuple[int, int, str | None]:
    """Steps between target copies, the backups that makes, and a warning when they are too few for gamma.

    Unset ``target_every`` means every 100 steps, or more often where the horizon needs more backups, down
    to 10 steps a copy; the step budget itself never grows, so the cost stays known in advance.
    """
    needed = backups_needed(gamma)
    if target_every is None:
        target_every = max(MIN_STEPS_PER_COPY, min(TARGET_EVERY, steps // needed))
    backups = math.ceil(steps / target_every)
    if backups >= needed:
        return target_every, backups, None
    return target_every, backups, (
        f"only {backups} Bellman backups ({steps} steps, a target copy every {target_every}) where gamma {gamma} "
        f"needs {needed}: the fit reaches at most 1 - gamma^{backups} = {1 - gamma ** backups:.1%} of a long-lived "
        f"policy's value (biased low); give steps >= {needed * target_every} or a smaller gamma")


def _check_settings(gamma: float, steps: int, bc_steps: int, seeds: Sequence[int], hidden: Sequence[int],
                    learning_rate: float, batch_size: int, target_every: int | None, threads: int) -> None:
    if not 0 <= gamma < 1:
        raise InvalidRequest(f"gamma must be in [0, 1), got {gamma}", field="gamma")
    for name, number in (("steps", steps), ("bc_steps", bc_steps), ("batch_size", batch_size),
                         ("target_every", 1 if target_every is None else target_every), ("threads", threads)):
        if int(number) != number or number < 1:
            raise InvalidRequest(f"{name} must be a positive integer, got {number}", field=name)
    if not seeds:
        raise InvalidRequest("seeds must name at least one training seed", field="seeds")
    if not hidden or any(int(width) != width or width < 1 for width in hidden):
        raise InvalidRequest(f"hidden must be positive layer widths, got {list(hidden)}", field="hidden")
    if not learning_rate > 0:
        raise InvalidRequest(f"learning_rate must be positive, got {learning_rate}", field="learning_rate")


def _check_target(target: str, n_actions: int | None, policy: Policy | None, next_action: Any) -> None:
    if n_actions is not None and (int(n_actions) != n_actions or n_actions < 1):
        raise MetricUndefined(f"n_actions must be a positive integer, got {n_actions}", field="n_actions")
    if target not in ("policy", "sarsa", "fqi"):
        raise MetricUndefined(f"target must be 'policy', 'sarsa' or 'fqi', got {target!r}", field="target")
    if target == "fqi" and n_actions is None:
        raise MetricUndefined("target 'fqi' takes a max over actions and needs discrete actions (n_actions); "
                             "use 'policy' or 'sarsa' for continuous actions", field="target")
    if policy is not None and target != "policy":
        raise MetricUndefined(f"a policy is evaluated only with target 'policy', not {target!r}", field="policy")
    if target == "sarsa" and next_action is None:
        raise MetricUndefined("target 'sarsa' needs next_action, the action taken after each row", field="next_action")


def _transitions(observation: Any, next_observation: Any, reward: Any, terminated: Any,
                 initial: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Observations [N, obs_dim] (kept in their own dtype: no copy), rewards float64, flags bool."""
    obs = np.asarray(observation)
    obs = obs.reshape(len(obs), -1) if obs.ndim == 1 else obs
    if obs.ndim != 2 or len(obs) == 0:
        raise MetricUndefined(f"observation must be [N, obs_dim] with N >= 1, got shape {obs.shape}",
                             field="observation")
    n = len(obs)
    after = _rows("next_observation", next_observation, n)
    if after.size != obs.size:
        raise MetricUndefined(f"next_observation has shape {after.shape}, observation {obs.shape}",
                             field="next_observation")
    rewards = _rows("reward", reward, n, dtype=np.float64)
    if rewards.shape not in ((n,), (n, 1)):
        raise MetricUndefined(f"reward must hold one number per row, got shape {rewards.shape}", field="reward")
    rewards = rewards.reshape(n)
    if not np.isfinite(rewards).all():
        row = int(np.argmin(np.isfinite(rewards)))
        raise MetricUndefined(f"reward row {row} is {rewards[row]}, not a finite number", field="reward")
    done = _rows("terminated", terminated, n, dtype=bool).reshape(n)
    starts = None if initial is None else _rows("initial", initial, n, dtype=bool).reshape(n)
    return obs, after.reshape(obs.shape), rewards, done, starts


def _pick_device(device: str | None) -> torch.device:
    torch = _torch()
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise InvalidRequest(f"device {device!r} is not a torch device", field="device") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequest("device 'cuda' was asked for but no CUDA GPU is available", field="device")
    return chosen


def average_q_value(observation: np.ndarray, action: np.ndarray, reward: np.ndarray, next_observation: np.ndarray,
                    terminated: np.ndarray, *, n_actions: int | None = None, target: Target = "policy",
                    policy: Policy | None = None, next_action: np.ndarray | None = None,
                    initial: np.ndarray | None = None, action_low: np.ndarray | None = None,
                    action_high: np.ndarray | None = None, gamma: float = 0.99, steps: int = STEPS,
                    bc_steps: int = BC_STEPS, seeds: Sequence[int] = SEEDS, hidden: tuple[int, ...] = (256, 256),
                    learning_rate: float = 3e-4, batch_size: int = 256, target_every: int | None = None,
                    device: str | None = None, threads: int | None = None,
                    progress: Callable[[float], None] | None = None,
                    report: Literal["average_q", "policy_value"] | None = None) -> MetricResult:
    """Average Q (no policy) or a policy's value (``policy`` given), by FQE; one training run per seed.

    ``report`` names the figure the result gives; unset, the policy's value if a policy is given,
    else the average Q. ``average_q`` with a policy is that policy's Q averaged over the data's pairs.

    Rows are transitions in any order. ``n_actions`` set means discrete action ids in [0, n_actions); None means
    continuous actions [N, act_dim]. ``next_action`` (target "sarsa") must be set on every non-terminated row
    (NaN or -1 is allowed on terminated rows) and is ignored by the other targets. ``initial`` marks
    episode-start rows. ``action_low``/``action_high`` default to the data's per-dimension min/max.
    ``target_every`` unset follows the horizon (``target_schedule``); set, it is taken as given. ``threads``
    (CPU only) unset is the default of ``TUPLEHUB_METRICS_THREADS``, one job's share of the CPUs. BC is trained
    once (first seed) and shared by the seeds. ``progress(fraction)`` is called every few hundred steps; an
    exception it raises stops the work. Memory: one float32 copy of observations and next observations.
    """
    torch = _torch()
    threads = metrics_threads_default() if threads is None else threads
    _check_settings(gamma, steps, bc_steps, seeds, hidden, learning_rate, batch_size, target_every, threads)
    _check_target(target, n_actions, policy, next_action)
    target_every, backups, too_few = target_schedule(gamma, steps, target_every)
    obs, after, rewards, done, starts = _transitions(observation, next_observation, reward, terminated, initial)
    n = len(obs)
    params: dict[str, Any] = {
        "target": target, "gamma": gamma, "steps": steps, "seeds": [int(seed) for seed in seeds],
        "hidden": list(hidden), "learning_rate": learning_rate, "batch_size": batch_size,
        "target_every": target_every, "n_actions": n_actions,
        "evaluation_policy": "given" if policy is not None else "behaviour cloning" if target == "policy" else None,
        "bc_steps": bc_steps if policy is None and target == "policy" else None,
        "bc_hidden": list(BC_HIDDEN) if policy is None and target == "policy" else None,
        "policy_sha256": policy.digest if policy is not None else None}
    mid = half = later = None
    if n_actions is not None:
        actions = _action_ids("action", action, n, n_actions)
        if target == "sarsa":
            later = _action_ids("next_action", next_action, n, n_actions, skip=done)
    else:
        raw = _continuous_actions("action", action, n)
        low, high = _bounds(raw, action_low, action_high)
        params["action_low"], params["action_high"] = low.tolist(), high.tolist()
        mid, half = (low + high) / 2, np.where(high > low, (high - low) / 2, 1.0)
        actions = ((raw - mid) / half).astype(np.float32)
        if target == "sarsa":
            later = _continuous_actions("next_action", next_action, n, raw.shape[1], skip=done)
            later = ((later - mid) / half).astype(np.float32)
    chosen = _pick_device(device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the seeds set the CPU generator; the caller's state comes back
            setup = _Setup(chosen, gamma, tuple(hidden), learning_rate, batch_size, target_every, n_actions,
                           states=_standardised_states(obs, after, ~done, chosen),
                           actions=torch.from_numpy(actions).to(chosen),
                           reward=torch.from_numpy(rewards.astype(np.float32)).to(chosen),
                           live=torch.from_numpy((~done).astype(np.float32)).to(chosen), action_mid=mid,
                           action_half=half)
            runs, details = _evaluate(setup, obs, after, starts, later, target=target, policy=policy, steps=steps,
                                      bc_steps=bc_steps, seeds=params["seeds"], progress=progress)
    finally:
        torch.set_num_threads(previous_threads)
    details.update({"device": str(chosen), "threads": threads, "steps": steps, "backups": backups,
                    "backups_needed": backups_needed(gamma)})
    report = report or ("policy_value" if policy is not None else "average_q")
    if report == "policy_value" and policy is None:
        raise InvalidRequest("a policy's value needs the policy", field="policy")
    result = _result(runs, setup, report=report, starts=starts, params=params, details=details)
    if too_few is not None:
        result.warnings.append(too_few)
    return result


def _evaluate(setup: _Setup, obs: np.ndarray, after: np.ndarray, starts: np.ndarray | None, later: np.ndarray | None,
              *, target: Target, policy: Policy | None, steps: int, bc_steps: int, seeds: list[int],
              progress: Callable[[float], None] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What V(s') averages over, computed once for every row, then one FQE run per seed."""
    torch = _torch()
    n, details = setup.n, {}
    cloning = target == "policy" and policy is None
    tracker = _Progress(len(seeds) * steps + (bc_steps if cloning else 0), progress)
    decide = _given_policy(policy, setup) if policy is not None else None
    if cloning:
        decide, details["behaviour_cloning"] = _behaviour_cloning(setup, steps=bc_steps, seed=seeds[0],
                                                                  progress=tracker)
    first = np.flatnonzero(starts) if starts is not None else np.zeros(0, dtype=np.int64)
    first_rows = torch.from_numpy(first).to(setup.device)
    if target == "sarsa":  # the behaviour's own actions: at the start rows too
        next_choice, start_choice = torch.from_numpy(later).to(setup.device), setup.actions[first_rows]
    elif target == "fqi":
        next_choice = start_choice = None
    else:
        next_choice = _decide_rows(decide, after, setup.states[n:])  # type: ignore[arg-type]
        start_choice = _decide_rows(decide, obs[first], setup.states[first_rows])  # type: ignore[arg-type]
    every_choice = _decide_rows(decide, obs, setup.states[:n]) if policy is not None and not len(first) else None  # type: ignore[arg-type]
    runs = [_fqe_run(setup, next_choice, seed=seed, steps=steps, progress=tracker, first_rows=first_rows,
                     start_choice=start_choice, every_choice=every_choice) for seed in seeds]
    return runs, details


def _result(runs: list[dict[str, Any]], setup: _Setup, *, report: str, starts: np.ndarray | None,
            params: dict[str, Any], details: dict[str, Any]) -> MetricResult:
    bound = DIVERGENCE_FACTOR * float(setup.reward.abs().max()) / (1 - setup.gamma)
    warnings = [f"seed {seed}: Q diverged (NaN, or |Q| up to {run['largest']:.4g} above {DIVERGENCE_FACTOR} * "
                f"max|r| / (1 - gamma) = {bound:.4g}); try fewer steps, a smaller learning rate or a smaller gamma"
                for seed, run in zip(params["seeds"], runs, strict=True)
                if run["nan"] or (bound > 0 and run["largest"] > bound)]
    figures = ("average_q", "initial_state_value", "state_value")
    means = {key: float(np.mean([run[key] for run in runs])) if key in runs[0] else None for key in figures}
    key = "average_q" if report == "average_q" else "initial_state_value" if "initial_state_value" in runs[0] \
        else "state_value"
    if key == "state_value":
        warnings.append("no row is marked initial: the policy value is the mean of V(s) over every row, not over "
                        "episode starts")
    values = [run[key] for run in runs]
    value = means[key] if np.isfinite(means[key]) else None  # type: ignore[arg-type]
    spread = len(values) > 1 and value is not None
    details.update({"average_q": means["average_q"], "initial_state_value": means["initial_state_value"],
                    "per_seed": {name: [run[name] for run in runs] for name in figures if name in runs[0]},
                    "td_loss": [run["td_loss"] for run in runs]})
    if means["state_value"] is not None:
        details["state_value"] = means["state_value"]
    return MetricResult(
        metric=report, value=value,
        ci_low=min(values) if spread else None, ci_high=max(values) if spread else None,
        ci_method=f"min-max over {len(values)} training seeds" if spread else None, n_rows_used=setup.n,
        n_episodes_used=int(starts.sum()) if starts is not None else 0, params=params, seed=params["seeds"][0],
        warnings=warnings, details=details, algo_version=VERSION)
