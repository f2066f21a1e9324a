"""Regressions from issue 11's fuzzing and token review: each was a 500 or a hole before its fix.

Runs against a real server thread (real Redis, real worker), as ordinary users over raw HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import gymnasium as gym
import httpx
import pytest
from typer.testing import CliRunner

from tuplehub.api.access.tokens import hash_token
from tuplehub.client import Client
from tuplehub.client.cli import app as cli_app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.storage.access import RefreshTokenRecord
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.catalog import open_catalog
from tuplehub.storage.models import utcnow

from .conftest import PASSWORD, api, login, new_user

HUGE = 2**64  # past SQLite's and MongoDB's 64-bit integers


@pytest.fixture
def token(hub_server: EmbeddedServer, admin: Client) -> str:
    """An ordinary user's access token, from a sign-in with the password."""
    return login(hub_server, new_user(admin))["access_token"]


@pytest.fixture
def user(hub_server: EmbeddedServer, token: str) -> Iterator[httpx.Client]:
    with api(hub_server, token) as http:
        yield http


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


# --- fuzzing finds -----------------------------------------------------------------------------

def test_a_huge_offset_is_a_422_on_every_listing(hub_server: EmbeddedServer, token: str,
                                                 user: httpx.Client) -> None:
    with Client(hub_server.url, token=token) as client, gym.make("CartPole-v1") as env:
        benchmark = client.benchmarks.create_from_env(env, name="offsets").id
    listings = ["/jobs", "/groups", "/users", "/audit", f"/benchmarks/{benchmark}/datasets",
                "/datasets", "/benchmarks", "/artifacts"]
    for path in listings:
        body = problem(user.get(path, params={"offset": HUGE}), 422)
        assert body["errors"][0]["location"] == "query.offset", path
    assert user.get("/jobs", params={"offset": 10**9}).json()["items"] == []  # the bound itself is a page


def test_patch_with_null_clears_the_field(user: httpx.Client) -> None:
    name = f"nulls-{uuid.uuid4().hex[:8]}"
    created = user.post("/datasets", json={"name": name, "description": "d", "tags": ["a"], "license": "MIT"})
    assert created.status_code == 201, created.text
    patched = user.patch(f"/datasets/{name}", json={"tags": None, "description": None, "license": None})
    assert patched.status_code == 200, patched.text
    card = patched.json()
    assert (card["tags"], card["description"], card["license"]) == ([], "", "")
    kept = user.patch(f"/datasets/{name}", json={"citation": "c"}).json()
    assert (kept["citation"], kept["tags"]) == ("c", [])  # left-out fields stay


def test_a_range_header_with_thousands_of_digits_is_answered(hub_server: EmbeddedServer, token: str,
                                                             user: httpx.Client) -> None:
    with Client(hub_server.url, token=token) as client:
        artifact = client.artifacts.upload(b"0123456789", name="digits.txt").id
    past_the_end = user.get(f"/artifacts/{artifact}/file", headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert problem(past_the_end, 416)["title"] == "Range Not Satisfiable"
    assert len(problem(past_the_end, 416)["detail"]) < 200  # the header is shortened, not echoed whole
    suffix = user.get(f"/artifacts/{artifact}/file", headers={"Range": "bytes=-" + "9" * 5000})
    assert (suffix.status_code, suffix.content) == (206, b"0123456789")
    zeros = user.get(f"/artifacts/{artifact}/file", headers={"Range": "bytes=" + "0" * 5000 + "2-3"})
    assert (zeros.status_code, zeros.content) == (206, b"23")


@pytest.mark.parametrize("media_type", ["text/plaïn", "text/\u03c1lain", "text/plain\r\nx: y", "/plain", "text/"])
def test_a_media_type_that_cannot_be_served_is_refused_on_upload(user: httpx.Client, media_type: str) -> None:
    answer = user.post("/artifacts/uploads", json={"name": "notes.txt", "media_type": media_type})
    assert problem(answer, 422)["errors"][0]["location"] == "body.media_type"


def test_an_unknown_path_is_titled_in_words(user: httpx.Client) -> None:
    assert problem(user.get("/no/such/route"), 404)["title"] == "Not Found"
    assert problem(user.delete("/health/live"), 405)["title"] == "Method Not Allowed"
    assert problem(user.get("/datasets/missing-one"), 404)["title"] == "Not Found"
    assert problem(user.post("/datasets", json={"name": "../x"}), 422)["title"] == "Invalid Request"


# --- tokens ------------------------------------------------------------------------------------

def test_logout_everywhere_needs_a_live_refresh_token(hub_server: EmbeddedServer, admin: Client) -> None:
    name = new_user(admin)
    first = login(hub_server, name)
    with api(hub_server) as http:
        second = http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
        other = login(hub_server, name)
        spent = http.post("/auth/logout", params={"everywhere": True}, json={"refresh_token": first["refresh_token"]})
        assert "live sign-in" in problem(spent, 401)["detail"]
        # The refused attempt ended nothing: the other sign-in still works.
        assert http.get("/auth/me", headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 200
        assert http.post("/auth/logout", json={"refresh_token": second["refresh_token"]}).status_code == 204
        revoked = http.post("/auth/logout", params={"everywhere": True},
                            json={"refresh_token": second["refresh_token"]})
        problem(revoked, 401)
        live = http.post("/auth/logout", params={"everywhere": True}, json={"refresh_token": other["refresh_token"]})
        assert live.status_code == 204
        assert http.get("/auth/me", headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 401


def test_an_expired_refresh_token_cannot_log_out_everywhere(hub_server: EmbeddedServer, admin: Client) -> None:
    tokens = login(hub_server, new_user(admin))

    async def expire() -> None:
        catalog = await open_catalog(hub_server.settings.resolved_catalog_url())
        try:
            record = await catalog.get_record("refresh_tokens", RefreshTokenRecord,
                                              hash=hash_token(tokens["refresh_token"]))
            await catalog.update_record("refresh_tokens", RefreshTokenRecord, record.id,
                                        expires_at=utcnow() - timedelta(seconds=1))
        finally:
            await catalog.aclose()

    asyncio.run(expire())
    with api(hub_server) as http:
        answer = http.post("/auth/logout", params={"everywhere": True}, json={"refresh_token": tokens["refresh_token"]})
        problem(answer, 401)
        assert http.get("/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200


def test_an_api_token_cannot_change_the_password(hub_server: EmbeddedServer, admin: Client) -> None:
    name = new_user(admin)
    with api(hub_server, login(hub_server, name)["access_token"]) as http:
        narrow = http.post("/tokens", json={"name": "reader", "rights": ["dataset:read"]}).json()["token"]
        full = http.post("/tokens", json={"name": "script"}).json()["token"]
    change = {"current_password": PASSWORD, "new_password": "taken-over-Passphrase-2"}
    for token in (narrow, full):
        with api(hub_server, token) as http:
            assert "sign-in with the password" in problem(http.put("/auth/password", json=change), 403)["detail"]
    login(hub_server, name)  # the password is unchanged


def test_an_administrators_api_token_cannot_reset_its_own_accounts_password(hub_server: EmbeddedServer,
                                                                            admin: Client) -> None:
    name = admin.users.create(f"h-{uuid.uuid4().hex[:8]}", PASSWORD, site_roles=["admin"]).name
    with api(hub_server, login(hub_server, name)["access_token"]) as http:
        full = http.post("/tokens", json={"name": "script"}).json()["token"]
    with api(hub_server, full) as http:
        refused = http.put(f"/users/{name}/password", json={"new_password": "taken-over-Passphrase-2"})
        assert "sign-in with the password" in problem(refused, 403)["detail"]
    login(hub_server, name)  # the password is unchanged


def test_revoking_an_api_token_revokes_the_tokens_made_with_it(hub_server: EmbeddedServer, user: httpx.Client) -> None:
    stolen = user.post("/tokens", json={"name": "stolen", "no_expiry": True}).json()
    with api(hub_server, stolen["token"]) as thief:
        child = thief.post("/tokens", json={"name": "persistence", "no_expiry": True}).json()
    with api(hub_server, child["token"]) as thief:
        grandchild = thief.post("/tokens", json={"name": "more", "no_expiry": True}).json()
    unrelated = user.post("/tokens", json={"name": "mine"}).json()
    assert user.delete(f"/tokens/{stolen['id']}").status_code == 200
    for token in (stolen, child, grandchild):
        with api(hub_server, token["token"]) as http:
            problem(http.get("/auth/me"), 401)
    with api(hub_server, unrelated["token"]) as http:
        assert http.get("/auth/me").status_code == 200


def test_api_tokens_expire_by_default_unless_asked_not_to(hub_server: EmbeddedServer, user: httpx.Client) -> None:
    days = hub_server.settings.api_token_ttl_days
    expires = user.post("/tokens", json={"name": "default"}).json()["expires_at"]
    assert expires is not None
    left = datetime.fromisoformat(expires) - utcnow()
    assert timedelta(days=days) - timedelta(minutes=5) < left <= timedelta(days=days)
    forever = user.post("/tokens", json={"name": "forever", "no_expiry": True})
    assert (forever.status_code, forever.json()["expires_at"]) == (201, None)
    both = user.post("/tokens", json={"name": "both", "no_expiry": True, "expires_at": "2031-01-01T00:00:00Z"})
    assert "not both" in problem(both, 422)["detail"]


# --- interactive docs ----------------------------------------------------------------------------

def test_the_docs_page_works_offline_with_authorize(hub_server: EmbeddedServer) -> None:
    with api(hub_server) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert re.search(r"https?://", page.text) is None  # nothing from a CDN
        assert "'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/api/v1/docs/assets/[^"]+)"', page.text)
        assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            served = http.get(hub_server.url + asset)
            assert (served.status_code, len(served.content) > 1000) == (200, True), asset
        assert "/api/v1/docs/oauth2-redirect" in page.text
        assert http.get("/docs/oauth2-redirect").status_code == 200
        spec = http.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["paths"]["/api/v1/datasets"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/api/v1/auth/login"]["post"]
    assert spec["tags"][0]["name"] == "datasets"



def test_the_cli_creates_tokens_that_expire_unless_told_not_to(hub_server: EmbeddedServer, token: str) -> None:
    runner = CliRunner(env={"TUPLEHUB_TOKEN": token})
    made = {}
    for name, options in (("expiring", []), ("forever", ["--no-expiry"])):
        result = runner.invoke(cli_app, ["tokens", "create", name, *options, "--json", "--url", hub_server.url])
        assert result.exit_code == 0, result.output
        made[name] = json.loads(result.output)["expires_at"]
    assert made["expiring"] is not None
    assert made["forever"] is None


def test_an_artifact_stored_with_an_unservable_type_still_downloads(hub_server: EmbeddedServer, token: str,
                                                                    user: httpx.Client) -> None:
    with Client(hub_server.url, token=token) as client:
        artifact = client.artifacts.upload(b"old bytes", name="old.txt").id

    async def store_the_old_way() -> None:  # as a server without the media type check did
        catalog = await open_catalog(hub_server.settings.resolved_catalog_url())
        try:
            records, _ = await catalog.find_records("artifacts", ArtifactRecord, where={"artifact_id": artifact})
            for record in records:
                await catalog.update_record("artifacts", ArtifactRecord, record.id, media_type="text/\u03c1lain")
        finally:
            await catalog.aclose()

    asyncio.run(store_the_old_way())
    answer = user.get(f"/artifacts/{artifact}/file")
    assert (answer.status_code, answer.content) == (200, b"old bytes")
    assert answer.headers["content-type"] == "application/octet-stream"
