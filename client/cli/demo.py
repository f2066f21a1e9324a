"""``tuplehub demo``: the whole path on one machine, with nothing to install or configure.

It records CartPole episodes with two policies (uniformly random, and a pole-balancing heuristic),
uploads them with each episode's policy as metadata, waits for the ingest job, exports the
heuristic's transitions where the pole is nearly upright, checks the export against the recorded
arrays, shows the quality metrics the server computed after the ingest, and prints what it did
and how long each step took (with ``--json``, as one JSON document on stdout, its progress lines
on stderr). Each episode's metadata carries a hash of the whole recording, so running the demo
again with the same options reuses its version instead of adding one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuplehub.client.cli.output import AsJson
from tuplehub.client.discovery import SERVER_FILE, embedded_credentials
from tuplehub.client.discovery import data_dir as default_data_dir
from tuplehub.storage.deferred import deferred
from tuplehub.storage.errors import ConfigError, NotFound, TuplehubError
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
# The steps it times: key in --json, and how people read it.
STEPS = {"record": "record", "upload_to_ingested": "upload → ingested", "export_to_numpy": "export → numpy"}


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


def _say(message: str, as_json: bool) -> None:
    """A progress line: on stdout for people, on stderr with ``--json`` (stdout holds the one document)."""
    typer.echo(message, err=as_json)


def _server(stack: ExitStack, url: str | None, data_dir: Path | None, as_json: bool) -> Client:
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

    _say(f"starting the embedded server (data in {folder}) ...", as_json)
    started = stack.enter_context(serve_in_subprocess(folder))
    client = stack.enter_context(Client(started))
    credentials = embedded_credentials(started, folder)
    if credentials is None:
        raise ConfigError(f"the embedded server in {folder} left no local admin credentials")
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
            timings: dict[str, float], as_json: bool) -> dict[str, Any]:
    """Upload the recording as a new version, unless a version already holds exactly it (``reused``)."""
    recording = recording_hash(arrays, metadata)
    existing = _version_of(dataset, recording)
    if existing is not None:
        _say(f"version {existing.number} already holds this recording: using it (no new version)", as_json)
        return {"version": existing.number, "episodes": existing.episodes, "transitions": existing.transitions,
                "reused": True}
    started = time.perf_counter()
    tagged = {episode: {**values, "recording": recording} for episode, values in metadata.items()}
    job = dataset.upload(arrays, mode="replace", episode_metadata=tagged)
    result = job.wait().result or {}
    timings["upload_to_ingested"] = time.perf_counter() - started
    return {**result, "reused": False}


def demo(episodes: Annotated[int, typer.Option(min=2, max=10_000, help="Episodes to record.")] = 40,
         seed: Annotated[int, typer.Option(help="Seed of the environment and the random policy.")] = 0,
         data_dir: Annotated[Path | None, typer.Option(envvar="TUPLEHUB_DATA_DIR",
                                                       help="Data folder of the embedded server.")] = None,
         url: Annotated[str | None, typer.Option(help=(
             "Use this server instead of the embedded one (TUPLEHUB_URL is not used: the demo runs its "
             "own server unless told)."))] = None,
         as_json: AsJson = False) -> None:
    """Record CartPole with two policies, upload, ingest, export a filtered subset and report.

    Runs against the embedded server of the data folder (started for the demo and stopped at the
    end if none runs there). Running it again with the same options reuses the version it made.
    With --json the report (counts, returns, the filter's rows, timings, quality, versions) is one
    JSON document.
    """
    from tuplehub.storage.filters.language import F

    timings: dict[str, float] = {}
    with ExitStack() as stack:
        hub = _server(stack, url, data_dir, as_json)
        _say(f"server: {hub.url}", as_json)

        started = time.perf_counter()
        arrays, metadata = record("CartPole-v1", episodes, seed)
        timings["record"] = time.perf_counter() - started

        try:
            dataset = hub.datasets.get(DATASET)
        except NotFound:
            dataset = hub.datasets.create(DATASET, description="CartPole-v1: random and heuristic policies",
                                          tags=["demo", "cartpole"])
        result = _upload(dataset, arrays, metadata, timings, as_json)

        started = time.perf_counter()
        export = dataset.export(episodes=F.metadata.policy == "heuristic",
                                where=F.observation[2].between(-UPRIGHT, UPRIGHT), next_observation=True,
                                version=result.get("version"))
        kept = export.to_numpy()
        timings["export_to_numpy"] = time.perf_counter() - started

        _check(arrays, metadata, kept)
        report = summary(arrays, metadata, kept, result, timings, server=hub.url)
        if not as_json:
            _report(report)  # before the metrics job's wait: people see it at once
        try:
            report["quality"] = _quality(hub, result.get("version"))
        except Exception as exc:  # the metrics are extra: never lose the report above for them
            report["quality"] = {"error": f"the metrics job did not finish ({exc})"}
        typer.echo(json.dumps(report, indent=2) if as_json else _quality_line(report["quality"]))


def _quality(hub: Client, version: int | None) -> dict[str, Any]:
    """The cheap metrics of the new version: the job the ingest queued, or one asked for now."""
    queued = [job for job in hub.jobs.list(kind="metrics", limit=100).items
              if job.params.get("dataset") == DATASET and job.params.get("version") == version]
    job = hub.jobs.get(queued[0].id) if queued else hub.metrics.compute(DATASET, version=version)
    job.wait(timeout=120, progress=False)
    results = {read.key: read.result for read in hub.metrics.results(DATASET, version=version)}
    returns, improvement, coverage = (results.get(key) for key in (
        "returns", "return_improvement", "state_action_coverage"))
    quality: dict[str, Any] = {}
    if returns is not None and returns.value is not None:
        quality["return_mean"] = returns.value
        if returns.ci_low is not None:
            quality["return_mean_ci"] = [returns.ci_low, returns.ci_high]
    if improvement is not None and improvement.value is not None:
        quality["return_improvement"] = improvement.value
    if coverage is not None and coverage.value is not None:
        quality["state_action_cells"] = coverage.value
        quality["cells_per_row"] = coverage.details["distinct_per_row"]
    return quality


def _quality_line(quality: dict[str, Any]) -> str:
    if "error" in quality:
        return f"quality: {quality['error']}"
    parts = []
    if "return_mean" in quality:
        low, high = quality.get("return_mean_ci") or (None, None)
        interval = f" [{low:.1f}, {high:.1f}]" if low is not None else ""
        parts.append(f"return mean {quality['return_mean']:.1f}{interval}")
    if "return_improvement" in quality:
        parts.append(f"return improvement {quality['return_improvement']:.2f}")
    if "state_action_cells" in quality:
        parts.append(f"{quality['state_action_cells']:.0f} state-action cells ({quality['cells_per_row']:.2f} per row)")
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
            raise TuplehubError(f"demo check failed: exported {name} differs from the recorded rows")


def _returns(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]]) -> Iterator[tuple[str, np.ndarray]]:
    ids = arrays["episode_id"]
    totals = np.bincount(ids, weights=arrays["reward"])
    for policy in ("random", "heuristic"):
        episodes = [e for e, m in metadata.items() if m["policy"] == policy]
        yield policy, totals[episodes]


def summary(arrays: dict[str, np.ndarray], metadata: dict[int, dict[str, Any]], kept: dict[str, np.ndarray],
            result: dict[str, Any], timings: dict[str, float], *, server: str) -> dict[str, Any]:
    """What the demo did, as plain values: the report people read and the document ``--json`` prints."""
    heuristic_rows = int(sum(np.isin(arrays["episode_id"], [e for e, m in metadata.items()
                                                            if m["policy"] == "heuristic"])))
    return {
        "tuplehub": importlib.metadata.version("tuplehub"), "server": server, "dataset": DATASET,
        "version": result.get("version"), "reused_version": result.get("reused", False),
        "episodes": result.get("episodes"), "transitions": result.get("transitions"),
        "policies": {policy: {"episodes": len(returns), "return_mean": float(returns.mean()),
                              "return_min": float(returns.min()), "return_max": float(returns.max())}
                     for policy, returns in _returns(arrays, metadata)},
        "filter": {"policy": "heuristic", "max_pole_angle_rad": UPRIGHT, "kept_rows": len(kept["reward"]),
                   "heuristic_rows": heuristic_rows, "rows": len(arrays["reward"]), "matches_numpy": True},
        "timings_s": {step: round(seconds, 4) for step, seconds in timings.items()},
    }


def _report(report: dict[str, Any]) -> None:
    typer.echo("")
    typer.echo(f"dataset {report['dataset']} version {report['version']}: {report['episodes']} episodes, "
               f"{report['transitions']} transitions")
    for policy, figures in report["policies"].items():
        typer.echo(f"  {policy:<9} {figures['episodes']:>4} episodes  return mean {figures['return_mean']:7.1f}  "
                   f"min {figures['return_min']:6.1f}  max {figures['return_max']:6.1f}")
    kept = report["filter"]
    typer.echo(f"filter: heuristic episodes, |pole angle| <= {UPRIGHT} rad -> kept {kept['kept_rows']} of "
               f"{kept['heuristic_rows']} heuristic rows ({kept['rows']} rows in all); matches numpy exactly")
    typer.echo("timings: " + ", ".join(f"{STEPS[step]} {seconds:.2f} s"
                                       for step, seconds in report["timings_s"].items()))
