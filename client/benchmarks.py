"""Benchmarks from the client: describe a live environment, store it, rebuild it anywhere.

``describe_env`` refuses what it cannot describe faithfully — an entry point that is a function
object (a lambda) or lives in ``__main__``, a wrapper that does not record its constructor
arguments, kwargs that are not JSON — instead of storing something that would build a different
environment. ``Benchmark.make()`` imports only packages that are installed, builds the
environment and checks its spaces against the stored ones.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from collections.abc import Iterable, Mapping
from typing import Any

from tuplehub.client.base import Handle
from tuplehub.client.sharing import Shareable
from tuplehub.storage.benchmarks import BenchmarkRead, BenchmarkSpec, SeedPolicy, WrapperSpec, space_to_json
from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.models import DatasetSummary, Page


class BenchmarkMismatch(InvalidRequest):
    """The environment built from a benchmark is not the one that was described."""

    code = "benchmark-mismatch"


def _importable(entry_point: Any, what: str) -> str:
    if not isinstance(entry_point, str):
        name = getattr(entry_point, "__qualname__", repr(entry_point))
        raise InvalidRequest(f"{what} is a Python object ({name}), not an importable 'module:attr' string; "
                             "register the environment with gymnasium.register(id, entry_point='pkg.mod:Class')")
    module = entry_point.partition(":")[0]
    if module == "__main__" or not module:
        raise InvalidRequest(f"{what} {entry_point!r} lives in a script, which no one else can import; "
                             "move it into a module of an installable package")
    return entry_point


def _json_kwargs(kwargs: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(kwargs), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{what} kwargs must be JSON values: {exc}") from exc


def _distribution_of(module: str) -> str | None:
    top = module.partition(".")[0]
    return next(iter(importlib.metadata.packages_distributions().get(top, [])), None)


def _requirements(entry_points: Iterable[str]) -> dict[str, str]:
    found = {"gymnasium": importlib.metadata.version("gymnasium")}
    for entry_point in entry_points:
        distribution = _distribution_of(entry_point.partition(":")[0])
        if distribution is not None:
            found[distribution] = importlib.metadata.version(distribution)
    return dict(sorted(found.items()))


def describe_env(env: Any, *, seed_policy: SeedPolicy | None = None) -> BenchmarkSpec:
    """The benchmark spec of a live gymnasium environment (made with ``gymnasium.make``)."""
    spec = getattr(env, "spec", None)
    if spec is None:
        raise InvalidRequest("the environment has no EnvSpec: build it with gymnasium.make (or register it first)")
    entry_point = _importable(spec.entry_point, "the entry point")
    wrappers = []
    for wrapper in spec.additional_wrappers:
        if wrapper.kwargs is None:
            raise InvalidRequest(f"wrapper {wrapper.name} does not record its constructor arguments; make it "
                                 "inherit gymnasium.utils.RecordConstructorArgs (or apply it after recording)")
        wrappers.append(WrapperSpec(entry_point=_importable(wrapper.entry_point, f"wrapper {wrapper.name}"),
                                    kwargs=_json_kwargs(wrapper.kwargs, f"wrapper {wrapper.name}")))
    registered = spec.id if _is_registered(spec.id) else None
    # render_mode says how to show the environment, not what it is: the same env renders either way.
    kwargs = {key: value for key, value in spec.kwargs.items() if key != "render_mode"}
    return BenchmarkSpec(
        env_id=registered, entry_point=entry_point, kwargs=_json_kwargs(kwargs, "the environment's"),
        wrappers=wrappers, max_episode_steps=spec.max_episode_steps, seed_policy=seed_policy or SeedPolicy(),
        observation_space=space_to_json(env.observation_space), action_space=space_to_json(env.action_space),
        requirements=_requirements([entry_point, *(w.entry_point for w in wrappers)]))


def _is_registered(env_id: str) -> bool:
    import gymnasium

    return env_id in gymnasium.registry


def make_env(spec: BenchmarkSpec, **make_kwargs: Any) -> Any:
    """Build the environment a spec describes and check that its spaces are the described ones."""
    import gymnasium
    from gymnasium.envs.registration import EnvSpec
    from gymnasium.envs.registration import WrapperSpec as GymWrapperSpec

    missing = [name for name in spec.requirements if not _installed(name)]
    if missing:
        raise InvalidRequest(f"the benchmark needs {', '.join(missing)}: install "
                             + " ".join(f"{name}=={spec.requirements[name]}" for name in missing))
    for entry_point in [spec.entry_point, *(w.entry_point for w in spec.wrappers)]:
        if importlib.util.find_spec(entry_point.partition(":")[0].partition(".")[0]) is None:
            raise InvalidRequest(f"cannot import {entry_point!r}: its package is not installed")
    env_spec = EnvSpec(
        id=spec.env_id or f"tuplehub/{spec.content_id()}", entry_point=spec.entry_point, kwargs=dict(spec.kwargs),
        max_episode_steps=spec.max_episode_steps,
        additional_wrappers=tuple(GymWrapperSpec(name=w.entry_point.rpartition(":")[2], entry_point=w.entry_point,
                                                 kwargs=dict(w.kwargs)) for w in spec.wrappers))
    env = gymnasium.make(env_spec, **make_kwargs)
    for which in ("observation_space", "action_space"):
        built = space_to_json(getattr(env, which))
        if built != getattr(spec, which):
            env.close()
            raise BenchmarkMismatch(f"the built environment's {which} is {built}, the benchmark says "
                                    f"{getattr(spec, which)}", field=which)
    return env


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class Benchmark(Shareable[BenchmarkRead]):
    """A handle on one stored benchmark."""

    @property
    def _path(self) -> str:
        return f"/benchmarks/{self.id}"

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def spec(self) -> BenchmarkSpec:
        return self.record.spec

    def make(self, **make_kwargs: Any) -> Any:
        """The environment, built from the stored description (``render_mode=...`` passes through)."""
        return make_env(self.spec, **make_kwargs)

    def seed_for(self, episode: int) -> int | None:
        """The reset seed of episode ``episode`` under the benchmark's seed policy."""
        policy = self.spec.seed_policy
        if policy.kind == "none" or policy.seed is None:
            return None
        return policy.seed if policy.kind == "fixed" else policy.seed + episode

    def datasets(self, *, offset: int = 0, limit: int = 100) -> Page[DatasetSummary]:
        return self._call("GET", f"{self._path}/datasets", Page[DatasetSummary],
                          params={"offset": offset, "limit": limit})

    def set_references(self, *, random_return: float | None, expert_return: float | None) -> Benchmark:
        return self._change("PUT", f"{self._path}/references",
                            json={"random_return": random_return, "expert_return": expert_return})

    def __repr__(self) -> str:
        return f"<Benchmark {self.record.name or self.record.family} {self.id[:8]}>"


class Benchmarks(Handle):
    def create(self, spec: BenchmarkSpec, *, name: str = "", description: str = "",
               random_return: float | None = None, expert_return: float | None = None) -> Benchmark:
        return Benchmark(self._http, self._call("POST", "/benchmarks", BenchmarkRead, json={
            "spec": spec.model_dump(mode="json"), "name": name, "description": description,
            "random_return": random_return, "expert_return": expert_return}))

    def create_from_env(self, env: Any, *, name: str = "", description: str = "",
                        seed_policy: SeedPolicy | None = None, random_return: float | None = None,
                        expert_return: float | None = None) -> Benchmark:
        """Describe a live environment and store it; the same environment always gets the same id."""
        return self.create(describe_env(env, seed_policy=seed_policy), name=name, description=description,
                           random_return=random_return, expert_return=expert_return)

    def get(self, benchmark_id: str) -> Benchmark:
        return Benchmark(self._http, self._call("GET", f"/benchmarks/{benchmark_id}", BenchmarkRead))

    def list(self, *, family: str | None = None, params: Mapping[str, Any] | None = None, name: str | None = None,
             offset: int = 0, limit: int = 100) -> Page[BenchmarkRead]:
        """Benchmarks, newest first; ``family`` and ``params`` pick points of a parameter sweep."""
        query: dict[str, Any] = {"offset": offset, "limit": limit}
        if family:
            query["family"] = family
        if name:
            query["name"] = name
        if params:
            query["param"] = [f"{key}={json.dumps(value)}" for key, value in params.items()]
        return self._call("GET", "/benchmarks", Page[BenchmarkRead], params=query)
