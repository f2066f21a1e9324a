"""Benchmarks: a gymnasium environment described completely as JSON, identified by a content hash.

A benchmark says how to build the environment (a registered id or an importable entry point,
its kwargs, the wrappers around it with theirs, the step limit), how it is seeded, what its
spaces are and which packages (and versions) it needs. It is plain data, never a pickle: loading
someone's benchmark imports only packages the user installed. Its id is the SHA-256 of its
canonical JSON, so describing the same environment twice gives the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from tuplehub.storage.access import SharedRecord
from tuplehub.storage.errors import InvalidRequest

ENTRY_POINT = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"  # "package.module:Attribute", importable by name

# --- spaces ---------------------------------------------------------------------------------------


def _number(value: Any) -> float | int | str:
    """JSON has no infinities: they travel as the strings "inf" and "-inf"; integers stay exact."""
    if isinstance(value, np.integer):
        return int(value)
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _bounds(values: np.ndarray) -> float | str | list[Any]:
    flat = values.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number(flat[0])  # one value for the whole box: small and readable
    return [_number(v) for v in flat]


def space_to_json(space: Any) -> dict[str, Any]:
    """A gymnasium space as JSON, or :class:`InvalidRequest` naming what cannot be described."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _bounds(space.low), "high": _bounds(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist(),
                "start": np.asarray(space.start).tolist(), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise InvalidRequest(f"cannot describe a {type(space).__name__} space as a benchmark", field="space")


def _array(value: Any, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """Bounds in the box's own dtype (the stored numbers came from it, so nothing is lost)."""
    flat = value if isinstance(value, list) else [value]
    if np.issubdtype(dtype, np.integer):  # exact: int64 bounds do not survive a trip through float
        numbers = np.array([int(v) for v in flat], dtype=dtype)
    else:
        numbers = np.array([float(v) for v in flat], dtype=np.float64).astype(dtype)
    return np.broadcast_to(numbers, shape).copy() if numbers.size == 1 else numbers.reshape(shape)


def space_from_json(data: dict[str, Any]) -> Any:
    from gymnasium import spaces

    kind = data.get("type")
    if kind == "Box":
        shape, dtype = data["shape"], np.dtype(data["dtype"])
        return spaces.Box(low=_array(data["low"], shape, dtype), high=_array(data["high"], shape, dtype),
                          shape=tuple(shape), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], dtype=np.dtype(data.get("dtype", "int64")), start=data.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({key: space_from_json(sub) for key, sub in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(sub) for sub in data["spaces"]])
    raise InvalidRequest(f"unknown space type {kind!r}", field="space")


# --- the spec --------------------------------------------------------------------------------------

class WrapperSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_point: str = Field(pattern=ENTRY_POINT, examples=["gymnasium.wrappers:TimeAwareObservation"])
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)


class SeedPolicy(BaseModel):
    """How episodes are seeded: not at all, one fixed seed, or ``seed + episode index``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "fixed", "sequential"] = "none"
    seed: int | None = None


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "env_id": "Pendulum-v1", "entry_point": "gymnasium.envs.classic_control.pendulum:PendulumEnv",
        "kwargs": {"g": 9.81}, "wrappers": [], "max_episode_steps": 200, "seed_policy": {"kind": "sequential",
                                                                                         "seed": 0},
        "observation_space": {"type": "Box", "shape": [3], "dtype": "float32", "low": [-1, -1, -8],
                              "high": [1, 1, 8]},
        "action_space": {"type": "Box", "shape": [1], "dtype": "float32", "low": -2.0, "high": 2.0},
        "requirements": {"gymnasium": "1.0.0"}}]})

    env_id: str | None = Field(None, max_length=200, description="The registered id, if any.")
    entry_point: str = Field(pattern=ENTRY_POINT, description="Importable 'module:attr' that builds the env.")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)
    wrappers: list[WrapperSpec] = Field(default_factory=list, description="Applied in order, innermost first.")
    max_episode_steps: int | None = Field(None, ge=1)
    seed_policy: SeedPolicy = Field(default_factory=SeedPolicy)
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    requirements: dict[str, str] = Field(default_factory=dict, description="Distribution name -> version.")

    @model_validator(mode="after")
    def _plain_json(self) -> BenchmarkSpec:
        try:
            self.canonical_json()
        except ValueError as exc:  # NaN or infinity in kwargs: no canonical JSON, so no content id
            raise ValueError(f"the spec must be plain JSON (no NaN or infinity): {exc}") from exc
        return self

    @property
    def family(self) -> str:
        """Benchmarks that differ only in kwargs form a family (a parameter sweep)."""
        return self.env_id or self.entry_point

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def content_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:32]


# --- stored benchmarks ------------------------------------------------------------------------------

class BenchmarkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: BenchmarkSpec
    name: str = Field("", max_length=200, description="A label for people; the id is the content hash.")
    description: str = Field("", max_length=10_000)
    random_return: float | None = Field(None, description="Reference return of a random policy (for metrics).")
    expert_return: float | None = Field(None, description="Reference return of an expert policy (for metrics).")


class BenchmarkRecord(SharedRecord):
    benchmark_id: str
    family: str
    name: str = ""
    description: str = ""
    spec: BenchmarkSpec
    random_return: float | None = None
    expert_return: float | None = None


class BenchmarkRead(BaseModel):
    id: str = Field(description="The content hash of the spec.")
    name: str
    description: str
    family: str
    spec: BenchmarkSpec
    random_return: float | None
    expert_return: float | None
    owner: str
    visibility: Literal["private", "groups", "public"]
    created_at: datetime

    @classmethod
    def from_record(cls, record: BenchmarkRecord) -> BenchmarkRead:
        return cls(id=record.benchmark_id, **record.model_dump(exclude={"id", "benchmark_id"}))


def continuous_widths(spec: BenchmarkSpec) -> tuple[int, int] | None:
    """Float Box dimensions of the observation space and of the action space (what a metric frame
    scales); None when a space is neither a Box nor discrete, so the count is not known."""
    widths = []
    for space in (spec.observation_space, spec.action_space):
        kind = space.get("type")
        if kind == "Box":
            widths.append(math.prod(space["shape"]) if np.dtype(space["dtype"]).kind == "f" else 0)
        elif kind in ("Discrete", "MultiDiscrete", "MultiBinary"):
            widths.append(0)
        else:
            return None
    return widths[0], widths[1]


def metrics_record(records: list[BenchmarkRecord], dataset_owner: str) -> BenchmarkRecord | None:
    """Which record of a benchmark the metrics of a dataset take reference returns from.

    One spec may be stored by several owners, each with their own references. The dataset owner's
    record comes first, then public ones, oldest first, preferring records that have references;
    other users' private records are never used (their references are theirs).
    """
    usable = [r for r in records if r.owner == dataset_owner or r.public]
    ranked = sorted(usable, key=lambda r: (r.random_return is None or r.expert_return is None,
                                           r.owner != dataset_owner, r.created_at))
    return ranked[0] if ranked else None
