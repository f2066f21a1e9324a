"""``tuplehub demo``: the whole path on one machine, with nothing to install or configure.

It records CartPole episodes with two policies (uniformly random, and a pole-balancing heuristic),
uploads them with each episode's policy as metadata, waits for the ingest job, exports the
heuristic's transitions where the pole is nearly upright, checks the export against the recorded
arrays, shows the quality metrics the server computed after the ingest, and prints what it did
and how long each step took. Each episode's metadata carries a hash of the whole recording, so
running the demo again with the same options reuses its version instead of adding one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.output import reported_errors
from tuplehub.client.discovery import SERVER_FILE, embedded_credentials
from tuplehub.client.discovery import data_dir as default_data_dir
from tuplehub.storage.deferred import deferred
from tuplehub.storage.errors import NotFound
from tuplehub.storage.paths import read_json

if TYPE_CHECKING:  # `tuplehub --help` imports this module: numpy, gymnasium and the client load when it runs
    import gymnasium as gym
    import numpy as np

    from tuplehub.client.client import Client
    from tuplehub.client.datasets import Dataset
    from tuplehub.storage.models import VersionRecord
else:
    gym = deferred("gymnasium")
    np = deferred("numpy")

DATASET = "cartpole-demo"
UPRIGHT = 0.01  # radians: the pole is "nearly upright" within this angle
MAX_VERSIONS_CHECKED = 20  # for an earlier run's version, newest first


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


def _server(stack: ExitStack, url: str | None, data_dir: Path | None) -> Client:
    """The server named by ``--url``; else the embedded server of the data folder if one runs there
    and its local admin can sign in; else a new embedded server there, on a free port, stopped at
    the end. Whatever else answers on the default address (another account's server, a
    port-forward) is never used: the demo must not fail on a server it cannot sign in to."""
    from tuplehub.client.client import Client

    if url:
        return stack.enter_context(Client(url))
    folder = data_dir or default_data_dir()
    announced = read_json(folder / SERVER_FILE)
    if announced is not None and "url" in announced:
        client = stack.enter_context(Client(str(announced["url"])))
        credentials = embedded_credentials(client.url, folder)
        try:
            if credentials is not None:
                client.login(*credentials, remember=False)
                return client
        except Exception:  # a stale server.json, or not ours: start our own below
            pass
    from tuplehub.client.cli.server import serve_in_subprocess

    typer.echo(f"starting the embedded server (data in {folder}) ...")
    started = stack.enter_context(serve_in_subprocess(folder))
    client = stack.enter_context(Client(started))
    credentials = embedded_credentials(started, folder)
    if credentials is None:
        raise SystemExit(f"error: the embedded server in {folder} left no local admin credentials")
    client.login(*credentials, remember=False)
    return client


def recording_hash(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]]) -> str:
    """Of what was recorded: the same episodes and seed give the same hash."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    digest.update(json.dumps(metadata, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _version_of(dataset: Dataset, recording: str) -> VersionRecord | None:
    """The newest version whose episodes carry this recording's hash (the demo ran before)."""
    for version in reversed(dataset.record.versions[-MAX_VERSIONS_CHECKED:]):
        first = dataset.episodes(version=version.number, limit=1).items
        if first and first[0].metadata.get("recording") == recording:
            return version
    return None


def _upload(dataset: Dataset, arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]],
            timings: dict[str, float]) -> dict[str, Any]:
    """Upload the recording as a new version, unless a version already holds exactly it."""
    recording = recording_hash(arrays, metadata)
    existing = _version_of(dataset, recording)
    if existing is not None:
        typer.echo(f"version {existing.number} already holds this recording: using it (no new version)")
        return {"version": existing.number, "episodes": existing.episodes, "transitions": existing.transitions}
    started = time.perf_counter()
    tagged = {episode: {**values, "recording": recording} for episode, values in metadata.items()}
    job = dataset.upload(arrays, mode="replace", episode_metadata=tagged)
    result = job.wait().result or {}
    timings["upload → ingested"] = time.perf_counter() - started
    return result


def demo(episodes: Annotated[int, typer.Option(min=2, max=10_000, help="Episodes to record.")] = 40,
         seed: Annotated[int, typer.Option(help="Seed of the environment and the random policy.")] = 0,
         data_dir: Annotated[Path | None, typer.Option(envvar="TUPLEHUB_DATA_DIR",
                                                       help="Data folder of the embedded server.")] = None,
         url: Annotated[str | None, typer.Option(help=(
             "Use this server instead of the embedded one (TUPLEHUB_URL is not used: the demo runs its "
             "own server unless told)."))] = None) -> None:
    """Record CartPole with two policies, upload, ingest, export a filtered subset and report.

    Runs against the embedded server of the data folder (started for the demo and stopped at the
    end if none runs there). Running it again with the same options reuses the version it made.
    """
    from tuplehub.storage.filters.language import F

    timings: dict[str, float] = {}
    with reported_errors(), ExitStack() as stack:
        hub = _server(stack, url, data_dir)
        typer.echo(f"server: {hub.url}")

        started = time.perf_counter()
        arrays, metadata = record("CartPole-v1", episodes, seed)
        timings["record"] = time.perf_counter() - started

        try:
            dataset = hub.datasets.get(DATASET)
        except NotFound:
            dataset = hub.datasets.create(DATASET, description="CartPole-v1: random and heuristic policies",
                                          tags=["demo", "cartpole"])
        result = _upload(dataset, arrays, metadata, timings)

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
