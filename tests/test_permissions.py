"""The permission matrix: every route of the OpenAPI schema, for every role, for private / group / public.

The expected status of each call comes from :data:`EXPECTED`, one row per route; a route the app
serves without a row (or a row without a route) fails :func:`test_every_route_has_a_row`. Calls
that change state act on fresh resources made for that call, so rows do not disturb each other.

The cast: ``gus`` (site guest, no group), ``mia`` (site guest, member of ``lab``), ``carl``
(contributor site-wide and in ``lab``), ``olivia`` (the owner: contributor site-wide and in
``lab``), ``gina`` (site guest, group admin and member of ``lab``), the local admin, and nobody.
``olivia`` owns one dataset per scope: private, published to ``lab``, and public.
"""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import httpx
import pyarrow.parquet as pq
import pytest

from tuplehub.client import Client
from tuplehub.client.benchmarks import describe_env
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.benchmarks import BenchmarkSpec

from .conftest import admin_client
from .factories import episode_arrays

ROLES = ("anonymous", "guest", "member", "contributor", "owner", "group_admin", "admin")
SCOPES = ("private", "group", "public")
USERS = {"guest": "gus", "member": "mia", "contributor": "carl", "owner": "olivia", "group_admin": "gina"}
SITE_ROLES = {"gus": ["guest"], "mia": ["guest"], "carl": ["contributor"], "olivia": ["contributor"],
              "gina": ["guest"]}
LAB_ROLES = {"mia": ["member"], "carl": ["contributor"], "olivia": ["contributor"], "gina": ["group_admin", "member"]}
PASSWORD = "matrix-Passphrase-1"
READERS = {"private": {"owner", "admin"}, "group": {"owner", "admin", "member", "contributor", "group_admin"},
           "public": set(ROLES) - {"anonymous"}}

Row = Callable[[str], dict[str, int]]


def everyone(status: int, *, anonymous: int = 401) -> Row:
    return lambda scope: {role: anonymous if role == "anonymous" else status for role in ROLES}


def only(allowed: set[str], status: int, *, others: int, anonymous: int = 401) -> Row:
    return lambda scope: {role: anonymous if role == "anonymous" else status if role in allowed else others
                          for role in ROLES}


def by_reading(status: int, *, also: Callable[[str], set[str]] = lambda scope: set(),
               other_readers: int = 403) -> Row:
    """Owner and admin (and ``also``) succeed; other readers are refused; non-readers see nothing."""
    def row(scope: str) -> dict[str, int]:
        allowed = {"owner", "admin"} | also(scope)
        return {role: 401 if role == "anonymous" else status if role in allowed
                else other_readers if role in READERS[scope] else 404 for role in ROLES}
    return row


def owner_or_admin(status: int) -> Row:
    return only({"owner", "admin"}, status, others=404)


FRAME = {"source": "by hand", "mean": [0.0] * 4, "scale": [1.0] * 4, "coverage_dims": 4,
         "coverage_low": [-1.0] * 4, "coverage_high": [1.0] * 4, "entropy_dims": 4}
LAB_ADMINS = {"group_admin", "admin"}
LAB_VISIBLE = {"member", "contributor", "owner", "group_admin", "admin"}
CREATORS = {"contributor", "owner", "admin"}

EXPECTED: dict[tuple[str, str], Row] = {
    ("POST", "/auth/login"): everyone(200, anonymous=200),
    ("POST", "/auth/refresh"): everyone(200, anonymous=200),
    ("POST", "/auth/logout"): everyone(204, anonymous=204),
    ("GET", "/auth/me"): everyone(200),
    ("PUT", "/auth/password"): everyone(403),  # the matrix calls with API tokens; a password needs a sign-in
    ("POST", "/auth/signup"): everyone(403, anonymous=403),  # sign-up is closed by default
    ("POST", "/users"): only({"admin"}, 201, others=403),
    ("GET", "/users"): only({"admin"}, 200, others=403),
    ("GET", "/users/{name}"): only({"owner", "admin"}, 200, others=404),  # the target is olivia
    ("DELETE", "/users/{name}"): only({"admin"}, 204, others=404),
    ("PUT", "/users/{name}/roles"): only({"admin"}, 200, others=404),
    ("PUT", "/users/{name}/password"): only({"admin"}, 204, others=404),
    ("POST", "/groups"): only(CREATORS, 201, others=403),
    ("GET", "/groups"): everyone(200),
    ("GET", "/groups/{name}"): only(LAB_VISIBLE, 200, others=404),
    ("DELETE", "/groups/{name}"): lambda scope: only(LAB_ADMINS, 204, others=403)(scope) | {"guest": 404},
    ("PUT", "/groups/{name}/members/{user}"): lambda scope: only(LAB_ADMINS, 200, others=403)(scope) | {"guest": 404},
    ("DELETE", "/groups/{name}/members/{user}"):
        lambda scope: only(LAB_ADMINS, 204, others=403)(scope) | {"guest": 404},
    ("GET", "/roles"): everyone(200),
    ("POST", "/roles"): only({"admin"}, 201, others=403),
    ("DELETE", "/roles/{name}"): only({"admin"}, 204, others=403),
    ("GET", "/tokens"): everyone(200),
    ("POST", "/tokens"): everyone(201),
    ("DELETE", "/tokens/{token_id}"): only({"owner"}, 200, others=404),  # tokens are personal
    ("GET", "/audit"): only({"admin"}, 200, others=403),
    ("POST", "/benchmarks"): only(CREATORS, 201, others=403),
    ("GET", "/benchmarks"): everyone(200),
    ("GET", "/benchmarks/{benchmark_id}"): by_reading(200, also=lambda scope: READERS[scope]),
    ("GET", "/benchmarks/{benchmark_id}/datasets"): by_reading(200, also=lambda scope: READERS[scope]),
    ("PUT", "/benchmarks/{benchmark_id}/references"): by_reading(200),
    ("POST", "/benchmarks/{benchmark_id}/publish"): by_reading(200),
    ("POST", "/benchmarks/{benchmark_id}/unpublish"):
        by_reading(200, also=lambda s: {"group_admin"} if s == "group" else set()),
    ("DELETE", "/benchmarks/{benchmark_id}"): by_reading(204),
    ("POST", "/artifacts/uploads"): only(CREATORS, 201, others=403),
    ("GET", "/artifacts"): everyone(200),
    ("GET", "/artifacts/{artifact_id}"): by_reading(200, also=lambda scope: READERS[scope]),
    ("GET", "/artifacts/{artifact_id}/url"): by_reading(200, also=lambda scope: READERS[scope]),
    ("GET", "/artifacts/{artifact_id}/file"): by_reading(200, also=lambda scope: READERS[scope]),
    ("PUT", "/artifacts/{artifact_id}/links"): by_reading(200),
    ("POST", "/artifacts/{artifact_id}/publish"): by_reading(200),
    ("POST", "/artifacts/{artifact_id}/unpublish"):
        by_reading(200, also=lambda s: {"group_admin"} if s == "group" else set()),
    ("DELETE", "/artifacts/{artifact_id}"): by_reading(204),
    ("POST", "/datasets"): only(CREATORS, 201, others=403),
    ("GET", "/datasets"): everyone(200),
    ("GET", "/datasets/{name}"): by_reading(200, also=lambda scope: READERS[scope]),
    ("PATCH", "/datasets/{name}"): by_reading(200),
    ("POST", "/datasets/{name}/derive"): by_reading(202),
    ("DELETE", "/datasets/{name}"): by_reading(204),
    ("POST", "/datasets/{name}/publish"): by_reading(200),
    # A group admin may take content out of their group (but not out of public view).
    ("POST", "/datasets/{name}/unpublish"): by_reading(200, also=lambda s: {"group_admin"} if s == "group" else set()),
    ("GET", "/datasets/{name}/versions/{version}/episodes"): by_reading(200, also=lambda scope: READERS[scope]),
    ("POST", "/datasets/{name}/uploads"): by_reading(201),
    ("GET", "/datasets/{name}/uploads"): by_reading(200),
    ("GET", "/uploads/{upload_id}"): owner_or_admin(200),
    ("GET", "/uploads/{upload_id}/parts"): owner_or_admin(200),
    ("DELETE", "/uploads/{upload_id}"): owner_or_admin(204),
    ("POST", "/uploads/{upload_id}/parts"): owner_or_admin(422),  # the local store takes parts through the API
    ("PUT", "/uploads/{upload_id}/parts/{number}"): owner_or_admin(200),
    ("POST", "/uploads/{upload_id}/complete"): owner_or_admin(202),
    ("POST", "/datasets/{name}/exports"): by_reading(202, also=lambda scope: READERS[scope]),
    ("POST", "/datasets/{name}/metrics"): by_reading(202),  # results are shared: storing them needs write access
    ("GET", "/datasets/{name}/metrics"): by_reading(200, also=lambda scope: READERS[scope]),
    ("GET", "/benchmarks/{benchmark_id}/metrics"): by_reading(200, also=lambda scope: READERS[scope]),
    ("GET", "/benchmarks/{benchmark_id}/frame"): by_reading(200, also=lambda scope: READERS[scope]),
    ("PUT", "/benchmarks/{benchmark_id}/frame"): by_reading(200),
    ("DELETE", "/benchmarks/{benchmark_id}/frame"): by_reading(204),
    ("GET", "/exports/{job_id}/url"): owner_or_admin(200),
    ("GET", "/exports/{job_id}/file"): owner_or_admin(200),
    ("GET", "/jobs"): everyone(200),
    ("GET", "/jobs/{job_id}"): owner_or_admin(200),
    ("POST", "/jobs/{job_id}/cancel"): owner_or_admin(200),
    ("GET", "/health/live"): everyone(200, anonymous=200),
    ("GET", "/health/ready"): everyone(200, anonymous=200),
}
SCOPED = {key for key in EXPECTED
          if ("{name}" in key[1] and key[1].startswith("/datasets")) or key[1].startswith(("/exports", "/jobs/"))
          or "{benchmark_id}" in key[1] or "{artifact_id}" in key[1]}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pendulum_spec() -> BenchmarkSpec:
    """A benchmark no one has stored yet: Pendulum with a gravity of its own."""
    with gymnasium.make("Pendulum-v1", g=1 + uuid.uuid4().int % 10**6 / 10**5) as env:
        return describe_env(env)


@dataclass
class World:
    server: EmbeddedServer
    admin: Client
    olivia: Client
    tokens: dict[str, str] = field(default_factory=dict)       # role -> API token
    datasets: dict[str, str] = field(default_factory=dict)     # scope -> dataset name
    exports: dict[str, str] = field(default_factory=dict)      # scope -> olivia's finished export job
    benchmarks: dict[str, str] = field(default_factory=dict)   # scope -> olivia's benchmark
    artifacts: dict[str, str] = field(default_factory=dict)    # scope -> olivia's artifact
    part: bytes = b""

    def http(self, role: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role != "anonymous" else {}
        return httpx.Client(base_url=self.server.url + "/api/v1", headers=headers, timeout=60)

    def dataset(self, scope: str) -> str:
        """A fresh dataset of olivia's with the given visibility."""
        dataset = self.olivia.datasets.create(fresh("ds"))
        if scope != "private":
            dataset.publish(groups=["lab"] if scope == "group" else [], public=scope == "public")
        return dataset.name

    def benchmark(self, scope: str) -> str:
        """A fresh benchmark of olivia's (a new point of the Pendulum family) with the given visibility."""
        benchmark = self.olivia.benchmarks.create(pendulum_spec())
        if scope != "private":
            benchmark.publish(groups=["lab"] if scope == "group" else [], public=scope == "public")
        return benchmark.id

    def artifact(self, scope: str) -> str:
        """A fresh artifact of olivia's (new bytes) with the given visibility."""
        artifact = self.olivia.artifacts.upload(uuid.uuid4().bytes, name="notes.txt")
        if scope != "private":
            artifact.publish(groups=["lab"] if scope == "group" else [], public=scope == "public")
        return artifact.id

    def framed_benchmark(self, scope: str) -> str:
        """A fresh benchmark of olivia's whose metric frame is set."""
        benchmark = self.benchmark(scope)
        self.olivia._http.put(f"/benchmarks/{benchmark}/frame", json=FRAME).raise_for_status()
        return benchmark

    def user(self) -> str:
        return self.admin.users.create(fresh("u"), PASSWORD, site_roles=["guest"]).name

    def group(self) -> str:
        """A fresh group whose members hold the same roles as in ``lab``."""
        name = fresh("g")
        self.admin.groups.create(name)
        for user, roles in LAB_ROLES.items():
            self.admin.groups.set_member(name, user, roles)
        return name

    def lab_member(self) -> str:
        user = self.user()
        self.admin.groups.set_member("lab", user, ["member"])
        return user

    def upload(self, *, with_part: bool = False) -> tuple[str, str]:
        """A fresh upload session of olivia's (with its one part sent): its id and the part's ETag."""
        answer = self.olivia._http.post(f"/datasets/{self.datasets['private']}/uploads",
                                        json={"mode": "append", "part_size": 2**16}).json()
        if not with_part:
            return answer["id"], ""
        sent = self.olivia._http.put(f"/uploads/{answer['id']}/parts/1", content=self.part)
        sent.raise_for_status()
        return answer["id"], sent.json()["etag"]

    def login(self, role: str) -> dict[str, Any]:
        user = USERS.get(role, "olivia") if role != "admin" else "admin-matrix"
        return httpx.post(self.server.url + "/api/v1/auth/login", json={"username": user, "password": PASSWORD}).json()


@pytest.fixture(scope="module")
def world(hub_server: EmbeddedServer) -> Iterator[World]:
    with admin_client(hub_server) as local_admin:
        local_admin.users.create("admin-matrix", PASSWORD, site_roles=["admin"])
        admin = Client(hub_server.url, token=local_admin.tokens.create("matrix").token)
    for user, roles in SITE_ROLES.items():
        admin.users.create(user, PASSWORD, site_roles=roles)
    admin.groups.create("lab")
    for user, roles in LAB_ROLES.items():
        admin.groups.set_member("lab", user, roles)
    tokens = {}
    for role, user in [*USERS.items(), ("admin", "admin-matrix")]:
        with Client(hub_server.url) as client:
            client.login(user, PASSWORD, remember=False)
            tokens[role] = client.tokens.create("matrix").token
    # API tokens, not sessions: the password-change row ends every session of its caller.
    olivia = Client(hub_server.url, token=tokens["owner"])
    world = World(hub_server, admin, olivia, tokens)
    arrays = episode_arrays(episodes=3, length=6, seed=5)
    for scope in SCOPES:
        world.benchmarks[scope] = world.benchmark(scope)
        world.artifacts[scope] = world.artifact(scope)
        name = world.dataset(scope)
        world.olivia.datasets.get(name).upload(arrays).wait()
        world.datasets[scope] = name
        export = world.olivia.datasets.get(name).export(format="parquet")
        export.wait()
        world.exports[scope] = export.id
    buffer = io.BytesIO()
    pq.write_table(table_from_arrays(arrays), buffer)
    world.part = buffer.getvalue()
    try:
        yield world
    finally:
        olivia.close()
        admin.close()


def request_for(world: World, method: str, path: str, role: str, scope: str) -> tuple[str, dict[str, Any]]:
    """The concrete URL and body of one call; fresh resources for the calls that change things."""
    def upload_url(suffix: str = "") -> str:
        return f"/uploads/{world.upload()[0]}{suffix}"

    def complete() -> tuple[str, dict[str, Any]]:
        upload_id, etag = world.upload(with_part=True)
        return f"/uploads/{upload_id}/complete", {"json": {"parts": [{"number": 1, "etag": etag}]}}

    name = world.datasets[scope]
    job = world.exports[scope]
    bench = world.benchmarks[scope]
    art = world.artifacts[scope]
    new_user = {"name": fresh("n"), "password": PASSWORD}
    fixed: dict[tuple[str, str], Callable[[], tuple[str, dict[str, Any]]]] = {
        ("POST", "/auth/login"): lambda: ("/auth/login", {"json": {
            "username": USERS.get(role, "olivia") if role != "admin" else "admin-matrix", "password": PASSWORD}}),
        ("POST", "/auth/refresh"): lambda: ("/auth/refresh", {"json": {
            "refresh_token": world.login(role)["refresh_token"]}}),
        ("POST", "/auth/logout"): lambda: ("/auth/logout", {"json": {
            "refresh_token": world.login(role)["refresh_token"]}}),
        ("GET", "/auth/me"): lambda: ("/auth/me", {}),
        ("PUT", "/auth/password"): lambda: ("/auth/password", {"json": {
            "current_password": PASSWORD, "new_password": PASSWORD}}),
        ("POST", "/auth/signup"): lambda: ("/auth/signup", {"json": new_user}),
        ("POST", "/users"): lambda: ("/users", {"json": {**new_user, "site_roles": ["guest"]}}),
        ("GET", "/users"): lambda: ("/users", {}),
        ("GET", "/users/{name}"): lambda: ("/users/olivia", {}),
        ("DELETE", "/users/{name}"): lambda: (f"/users/{world.user()}", {}),
        ("PUT", "/users/{name}/roles"): lambda: (f"/users/{world.user()}/roles", {"json": {"site_roles": ["member"]}}),
        ("PUT", "/users/{name}/password"): lambda: (f"/users/{world.user()}/password", {"json": {
            "new_password": "another-Passphrase-2"}}),
        ("POST", "/groups"): lambda: ("/groups", {"json": {"name": fresh("g")}}),
        ("GET", "/groups"): lambda: ("/groups", {}),
        ("GET", "/groups/{name}"): lambda: ("/groups/lab", {}),
        ("DELETE", "/groups/{name}"): lambda: (f"/groups/{world.group()}", {}),
        ("PUT", "/groups/{name}/members/{user}"): lambda: (f"/groups/lab/members/{world.user()}", {"json": {
            "roles": ["member"]}}),
        ("DELETE", "/groups/{name}/members/{user}"): lambda: (f"/groups/lab/members/{world.lab_member()}", {}),
        ("GET", "/roles"): lambda: ("/roles", {}),
        ("POST", "/roles"): lambda: ("/roles", {"json": {"name": fresh("r").replace("-", "_"),
                                                         "rights": ["dataset:read"]}}),
        ("DELETE", "/roles/{name}"): lambda: (
            f"/roles/{world.admin.roles.create(fresh('r').replace('-', '_'), ['dataset:read']).name}", {}),
        ("GET", "/tokens"): lambda: ("/tokens", {}),
        ("POST", "/tokens"): lambda: ("/tokens", {"json": {"name": "t", "rights": ["dataset:read"]}}),
        ("DELETE", "/tokens/{token_id}"): lambda: (f"/tokens/{world.olivia.tokens.create('t').id}", {}),
        ("GET", "/audit"): lambda: ("/audit", {}),
        ("POST", "/benchmarks"): lambda: ("/benchmarks", {"json": {"spec": pendulum_spec().model_dump(mode="json")}}),
        ("GET", "/benchmarks"): lambda: ("/benchmarks", {}),
        ("GET", "/benchmarks/{benchmark_id}"): lambda: (f"/benchmarks/{bench}", {}),
        ("GET", "/benchmarks/{benchmark_id}/datasets"): lambda: (f"/benchmarks/{bench}/datasets", {}),
        ("PUT", "/benchmarks/{benchmark_id}/references"): lambda: (f"/benchmarks/{bench}/references", {"json": {
            "random_return": -1200.0, "expert_return": -150.0}}),
        ("POST", "/benchmarks/{benchmark_id}/publish"): lambda: (f"/benchmarks/{world.benchmark(scope)}/publish",
                                                                  {"json": {"public": True}}),
        ("POST", "/benchmarks/{benchmark_id}/unpublish"): lambda: (
            f"/benchmarks/{world.benchmark(scope)}/unpublish",
            {"json": {"public": True} if scope == "public" else {"groups": ["lab"]}}),
        ("DELETE", "/benchmarks/{benchmark_id}"): lambda: (f"/benchmarks/{world.benchmark(scope)}", {}),
        ("POST", "/artifacts/uploads"): lambda: ("/artifacts/uploads", {"json": {"name": "x.bin"}}),
        ("GET", "/artifacts"): lambda: ("/artifacts", {}),
        ("GET", "/artifacts/{artifact_id}"): lambda: (f"/artifacts/{art}", {}),
        ("GET", "/artifacts/{artifact_id}/url"): lambda: (f"/artifacts/{art}/url", {}),
        ("GET", "/artifacts/{artifact_id}/file"): lambda: (f"/artifacts/{art}/file", {}),
        ("PUT", "/artifacts/{artifact_id}/links"): lambda: (f"/artifacts/{art}/links", {"json": {}}),
        ("POST", "/artifacts/{artifact_id}/publish"): lambda: (f"/artifacts/{world.artifact(scope)}/publish",
                                                                {"json": {"public": True}}),
        ("POST", "/artifacts/{artifact_id}/unpublish"): lambda: (
            f"/artifacts/{world.artifact(scope)}/unpublish",
            {"json": {"public": True} if scope == "public" else {"groups": ["lab"]}}),
        ("DELETE", "/artifacts/{artifact_id}"): lambda: (f"/artifacts/{world.artifact(scope)}", {}),
        ("POST", "/datasets"): lambda: ("/datasets", {"json": {"name": fresh("ds")}}),
        ("GET", "/datasets"): lambda: ("/datasets", {}),
        ("GET", "/datasets/{name}"): lambda: (f"/datasets/{name}", {}),
        ("PATCH", "/datasets/{name}"): lambda: (f"/datasets/{name}", {"json": {"license": "CC-BY-4.0"}}),
        ("POST", "/datasets/{name}/derive"): lambda: (f"/datasets/{world.dataset(scope)}/derive", {"json": {
            "sources": [{"dataset": world.datasets["public"]}]}}),
        ("DELETE", "/datasets/{name}"): lambda: (f"/datasets/{world.dataset(scope)}", {}),
        ("POST", "/datasets/{name}/publish"): lambda: (f"/datasets/{world.dataset(scope)}/publish", {"json": {
            "public": True}}),
        ("POST", "/datasets/{name}/unpublish"): lambda: (f"/datasets/{world.dataset(scope)}/unpublish", {"json": (
            {"public": True} if scope == "public" else {"groups": ["lab"]})}),
        ("GET", "/datasets/{name}/versions/{version}/episodes"): lambda: (f"/datasets/{name}/versions/1/episodes", {}),
        ("POST", "/datasets/{name}/uploads"): lambda: (f"/datasets/{name}/uploads", {"json": {"mode": "append"}}),
        ("GET", "/datasets/{name}/uploads"): lambda: (f"/datasets/{name}/uploads", {}),
        ("GET", "/uploads/{upload_id}"): lambda: (upload_url(), {}),
        ("GET", "/uploads/{upload_id}/parts"): lambda: (upload_url("/parts"), {}),
        ("DELETE", "/uploads/{upload_id}"): lambda: (upload_url(), {}),
        ("POST", "/uploads/{upload_id}/parts"): lambda: (upload_url("/parts"), {"json": {"numbers": [1]}}),
        ("PUT", "/uploads/{upload_id}/parts/{number}"): lambda: (upload_url("/parts/1"), {"content": world.part}),
        ("POST", "/uploads/{upload_id}/complete"): complete,
        ("POST", "/datasets/{name}/exports"): lambda: (f"/datasets/{name}/exports", {"json": {"format": "arrow"}}),
        ("POST", "/datasets/{name}/metrics"): lambda: (f"/datasets/{name}/metrics", {"json": {
            "metrics": [{"metric": "returns"}]}}),
        ("GET", "/datasets/{name}/metrics"): lambda: (f"/datasets/{name}/metrics", {}),
        ("GET", "/benchmarks/{benchmark_id}/metrics"): lambda: (f"/benchmarks/{bench}/metrics", {}),
        ("GET", "/benchmarks/{benchmark_id}/frame"): lambda: (f"/benchmarks/{world.framed_benchmark(scope)}/frame", {}),
        ("PUT", "/benchmarks/{benchmark_id}/frame"): lambda: (f"/benchmarks/{bench}/frame", {"json": FRAME}),
        ("DELETE", "/benchmarks/{benchmark_id}/frame"): lambda: (
            f"/benchmarks/{world.framed_benchmark(scope)}/frame", {}),
        ("GET", "/exports/{job_id}/url"): lambda: (f"/exports/{job}/url", {}),
        ("GET", "/exports/{job_id}/file"): lambda: (f"/exports/{job}/file", {}),
        ("GET", "/jobs"): lambda: ("/jobs", {}),
        ("GET", "/jobs/{job_id}"): lambda: (f"/jobs/{job}", {}),
        ("POST", "/jobs/{job_id}/cancel"): lambda: (f"/jobs/{job}/cancel", {}),
        ("GET", "/health/live"): lambda: ("/health/live", {}),
        ("GET", "/health/ready"): lambda: ("/health/ready", {}),
    }
    return fixed[(method, path)]()


def served_routes(server: EmbeddedServer) -> set[tuple[str, str]]:
    schema = httpx.get(server.url + "/api/v1/openapi.json").json()
    return {(method.upper(), path.removeprefix("/api/v1")) for path, ops in schema["paths"].items() for method in ops}


def test_every_route_has_a_row(hub_server: EmbeddedServer) -> None:
    served = served_routes(hub_server)
    assert served - set(EXPECTED) == set(), "routes without a row in the permission matrix"
    assert set(EXPECTED) - served == set(), "rows for routes the app does not serve"


CASES = [(method, path, scope) for (method, path) in EXPECTED
         for scope in (SCOPES if (method, path) in SCOPED else ("-",))]


@pytest.mark.parametrize(("method", "path", "scope"), CASES, ids=[f"{m} {p} {s}" for m, p, s in CASES])
def test_permission_matrix(world: World, method: str, path: str, scope: str) -> None:
    expected = EXPECTED[(method, path)](scope if scope != "-" else "private")
    actual = {}
    for role in ROLES:
        url, kwargs = request_for(world, method, path, role, scope if scope != "-" else "private")
        with world.http(role) as http:
            actual[role] = http.request(method, url, **kwargs).status_code
    assert actual == expected


def test_refusals_look_exactly_like_absence(world: World) -> None:
    """A private dataset and a dataset that does not exist answer with the same status, body and headers."""
    with world.http("guest") as http:
        hidden = http.get(f"/datasets/{world.datasets['private']}")
        missing = http.get("/datasets/" + world.datasets["private"].replace("ds-", "zz-"))
    assert hidden.status_code == missing.status_code == 404
    strip = {"detail", "instance", "name"}
    assert {k: v for k, v in hidden.json().items() if k not in strip} == \
        {k: v for k, v in missing.json().items() if k not in strip}
    assert hidden.json()["detail"].replace(world.datasets["private"], "X") == \
        missing.json()["detail"].replace(missing.json()["name"], "X")
    varying = {"date", "content-length", "x-request-id"}  # a fresh id per request
    assert {k: v for k, v in hidden.headers.items() if k not in varying} == \
        {k: v for k, v in missing.headers.items() if k not in varying}


@pytest.mark.parametrize("role", [r for r in ROLES if r != "anonymous"])
def test_listing_shows_only_what_the_caller_may_read(world: World, role: str) -> None:
    mine = {world.datasets[scope] for scope in SCOPES}
    with world.http(role) as http:
        pages = [http.get("/datasets", params={"limit": 2, "offset": offset}).json() for offset in range(0, 400, 2)]
    names = list(itertools.chain.from_iterable([item["name"] for item in page["items"]] for page in pages))
    totals = {page["total"] for page in pages}
    assert len(totals) == 1
    assert len(names) == totals.pop() == len(set(names))  # the pages add up to the total, none twice
    visible = {world.datasets[scope] for scope in SCOPES if role in READERS[scope]}
    assert set(names) & mine == visible
