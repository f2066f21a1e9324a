"""``tuplehub demo``: the whole path on one machine, with nothing to install or configure.

It records CartPole episodes with two policies (uniformly random, and a pole-balancing heuristic),
uploads them with each episode's policy as metadata, waits for the ingest job, exports the
heuristic's transitions where the pole is nearly upright, checks the export against the recorded
arrays, shows the quality metrics the server computed after the ingest, and prints what it did
and how long each step took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.output import reported_errors
from tuplehub.client.discovery import embedded_credentials
from tuplehub.storage.deferred import deferred
from tuplehub.storage.errors import NotFound

if TYPE_CHECKING:  # `tuplehub --help` imports this module: numpy, gymnasium and the client load when it runs
    import gymnasium as gym
    import numpy as np

    from tuplehub.client.client import Client
else:
    gym = deferred("gymnasium")
    np = deferred("numpy")

DATASET = "cartpole-demo"
UPRIGHT = 0.01  # radians: the pole is "nearly upright" within this angle


def record(env_id: str, episodes: int, seed: int) -> tuple[dict[str, np.ndarray], dict[int, dict[str, Any]]]:
    """Roll out both policies; one row per step, next_observation included."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {k: [] for k in ("episode_id", "observation", "action", "reward",
                                                      "terminated", "truncated", "next_observation")}
    metadata: dict[int, dict[str, Any]] = {}
    for episode in range(episodes):
        policy = "random" if episode % 2 == 0 else "heuristic"
        metadata[episode] = {"policy": policy, "seed": seed + episode}
        observation, _ = env.reset(seed=seed + episode)
        for _ in range(10_000):  # CartPole-v1 truncates at 500 steps; the bound is a safety net
            heuristic = int(observation[2] + 0.5 * observation[3] > 0)
            action = int(rng.integers(2)) if policy == "random" else heuristic
            next_observation, reward, terminated, truncated, _ = env.step(action)
            for key, value in (("episode_id", episode), ("observation", observation), ("action", action),
                               ("reward", reward), ("terminated", terminated), ("truncated", truncated),
                               ("next_observation", next_observation)):
                columns[key].append(value)
            observation = next_observation
            if terminated or truncated:
                break
    env.close()
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    arrays["reward"] = arrays["reward"].astype(np.float32)
    return arrays, metadata


def _server(stack: ExitStack, data_dir: Path | None) -> Client:
    """A running server if one answers, else an embedded one in this process."""
    from tuplehub.client.client import Client

    client = stack.enter_context(Client())
    try:
        if client.ready().get("status") == "ok":
            return client
    except Exception:  # nothing answers: start our own below
        pass
    from tuplehub.client.cli.server import load_settings, serve_in_thread

    settings = load_settings(data_dir=data_dir, port=0)
    typer.echo(f"starting the embedded server (data in {settings.data_dir}) ...")
    server = stack.enter_context(serve_in_thread(settings))
    client = stack.enter_context(Client(server.url))
    credentials = embedded_credentials(server.url, settings.data_dir)
    if not client.signed_in and credentials is not None:
        client.login(*credentials)
    return client


def demo(episodes: Annotated[int, typer.Option(min=2, max=10_000, help="Episodes to record.")] = 40,
         seed: Annotated[int, typer.Option(help="Seed of the environment and the random policy.")] = 0,
         data_dir: Annotated[Path | None, typer.Option(envvar="TUPLEHUB_DATA_DIR",
                                                       help="Data folder of the embedded server.")] = None) -> None:
    """Record CartPole with two policies, upload, ingest, export a filtered subset and report."""
    from tuplehub.storage.filters.language import F

    timings: dict[str, float] = {}
    with reported_errors(), ExitStack() as stack:
        hub = _server(stack, data_dir)
        typer.echo(f"server: {hub.url}")

        started = time.perf_counter()
        arrays, metadata = record("CartPole-v1", episodes, seed)
        timings["record"] = time.perf_counter() - started

        try:
            dataset = hub.datasets.get(DATASET)
        except NotFound:
            dataset = hub.datasets.create(DATASET, description="CartPole-v1: random and heuristic policies",
                                          tags=["demo", "cartpole"])
        started = time.perf_counter()
        job = dataset.upload(arrays, mode="replace", episode_metadata=metadata)
        result = job.wait().result or {}
        timings["upload → ingested"] = time.perf_counter() - started

        started = time.perf_counter()
        export = dataset.export(episodes=F.metadata.policy == "heuristic",
                                where=F.observation[2].between(-UPRIGHT, UPRIGHT), next_observation=True,
                                version=result.get("version"))
        kept = export.to_numpy()
        timings["export → numpy"] = time.perf_counter() - started

        _check(arrays, metadata, kept)
        _report(arrays, metadata, kept, result, timings)
        try:
            typer.echo(_quality(hub, result.get("version")))
        except Exception as exc:  # the metrics are extra: never lose the report above for them
            typer.echo(f"quality: the metrics job did not finish ({exc})")


def _quality(hub: Client, version: int | None) -> str:
    """The cheap metrics of the new version: the job the ingest queued, or one asked for now."""
    queued = [job for job in hub.jobs.list(kind="metrics", limit=100).items
              if job.params.get("dataset") == DATASET and job.params.get("version") == version]
    job = hub.jobs.get(queued[0].id) if queued else hub.metrics.compute(DATASET, version=version)
    job.wait(timeout=120, progress=False)
    results = {read.key: read.result for read in hub.metrics.results(DATASET, version=version)}
    returns, improvement, coverage = (results.get(key) for key in (
        "returns", "return_improvement", "state_action_coverage"))
    parts = []
    if returns is not None and returns.value is not None:
        interval = f" [{returns.ci_low:.1f}, {returns.ci_high:.1f}]" if returns.ci_low is not None else ""
        parts.append(f"return mean {returns.value:.1f}{interval}")
    if improvement is not None and improvement.value is not None:
        parts.append(f"return improvement {improvement.value:.2f}")
    if coverage is not None and coverage.value is not None:
        parts.append(f"{coverage.value:.0f} state-action cells ({coverage.details['distinct_per_row']:.2f} per row)")
    return "quality (computed after the ingest): " + ", ".join(parts)


def _expected_mask(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]]) -> np.ndarray:
    heuristic = np.array([metadata[int(e)]["policy"] == "heuristic" for e in arrays["episode_id"]])
    angle = arrays["observation"][:, 2]
    return heuristic & (angle >= -UPRIGHT) & (angle <= UPRIGHT)


def _check(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]], kept: dict[str, np.ndarray]) -> None:
    """The export must be exactly the rows numpy selects from what was recorded."""
    mask = _expected_mask(arrays, metadata)
    for name in ("observation", "action", "reward", "next_observation"):
        if not np.array_equal(arrays[name][mask], kept[name]):
            raise SystemExit(f"demo check failed: exported {name} differs from the recorded rows")


def _returns(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]]) -> Iterator[tuple[str, np.ndarray]]:
    ids = arrays["episode_id"]
    totals = np.bincount(ids, weights=arrays["reward"])
    for policy in ("random", "heuristic"):
        episodes = [e for e, m in metadata.items() if m["policy"] == policy]
        yield policy, totals[episodes]


def _report(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]], kept: dict[str, np.ndarray],
            result: dict[str, Any], timings: dict[str, float]) -> None:
    typer.echo("")
    typer.echo(f"dataset {DATASET} version {result.get('version')}: {result.get('episodes')} episodes, "
               f"{result.get('transitions')} transitions")
    for policy, returns in _returns(arrays, metadata):
        typer.echo(f"  {policy:<9} {len(returns):>4} episodes  return mean {returns.mean():7.1f}  "
                   f"min {returns.min():6.1f}  max {returns.max():6.1f}")
    heuristic_rows = int(sum(np.isin(arrays["episode_id"], [e for e, m in metadata.items()
                                                            if m["policy"] == "heuristic"])))
    typer.echo(f"filter: heuristic episodes, |pole angle| <= {UPRIGHT} rad -> kept {len(kept['reward'])} of "
               f"{heuristic_rows} heuristic rows ({len(arrays['reward'])} rows in all); matches numpy exactly")
    typer.echo("timings: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))
