"""Sessions, API tokens, rate limits, audit, HTTP hardening, and isolation between groups.

Runs against a real server thread (real Redis, real worker) configured with open sign-up and
low login limits; the signing-key checks run on the token code directly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from tuplehub.client import Client, NotFound
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.storage.errors import Forbidden, InvalidRequest, Unauthenticated
from tuplehub.storage.models import utcnow

from .conftest import PASSWORD, admin_client, admin_token, api, hub_server_with, login, make_settings, new_user
from .factories import episode_arrays

PER_USER, PER_ADDRESS = 3, 12


hub_server = hub_server_with(open_signup=True, login_attempts_per_user=PER_USER,
                             login_attempts_per_address=PER_ADDRESS, login_window_s=30, max_body_bytes=4096)


def status_as(server: EmbeddedServer, token: str, method: str = "GET", path: str = "/auth/me") -> int:
    with api(server, token) as http:
        return http.request(method, path).status_code


# --- sessions ----------------------------------------------------------------------------------

def test_refresh_rotates_and_reuse_revokes_the_whole_family(hub_server: EmbeddedServer, admin: Client) -> None:
    user = new_user(admin)
    first = login(hub_server, user)
    with api(hub_server) as http:
        second = http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
        assert second["refresh_token"] != first["refresh_token"]
        assert status_as(hub_server, second["access_token"]) == 200
        reuse = http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        assert "already used" in reuse.json()["detail"]
        # The thief's replay also killed the legitimate holder's newer token.
        assert http.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401
    other = login(hub_server, user)  # another sign-in is another family, untouched
    with api(hub_server) as http:
        assert http.post("/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_refresh_and_access_tokens_are_not_interchangeable(hub_server: EmbeddedServer, admin: Client) -> None:
    pair = login(hub_server, new_user(admin))
    assert status_as(hub_server, pair["refresh_token"]) == 401
    with api(hub_server) as http:
        assert http.post("/auth/refresh", json={"refresh_token": pair["access_token"]}).status_code == 401


def test_logout_and_password_change_end_sessions(hub_server: EmbeddedServer, admin: Client) -> None:
    user = new_user(admin)
    one, two = login(hub_server, user), login(hub_server, user)
    with api(hub_server) as http:
        assert http.post("/auth/logout", json={"refresh_token": one["refresh_token"]}).status_code == 204
        assert http.post("/auth/refresh", json={"refresh_token": one["refresh_token"]}).status_code == 401
        assert http.post("/auth/refresh", json={"refresh_token": two["refresh_token"]}).status_code == 200
    three = login(hub_server, user)
    with api(hub_server, three["access_token"]) as http:
        changed = http.put("/auth/password", json={"current_password": PASSWORD,
                                                   "new_password": "a-new-Passphrase-2"})
        assert changed.status_code == 204
    assert status_as(hub_server, three["access_token"]) == 401  # issued before the change
    with api(hub_server) as http:
        assert http.post("/auth/refresh", json={"refresh_token": three["refresh_token"]}).status_code == 401
    assert status_as(hub_server, login(hub_server, user, "a-new-Passphrase-2")["access_token"]) == 200


def test_client_refreshes_an_expired_access_token_and_stores_the_rotation(
        hub_server: EmbeddedServer, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuplehub.client.sessions import SessionStore

    user = new_user(admin)
    store = SessionStore(tmp_path, use_keyring=False)
    with Client(hub_server.url, sessions=store) as client:
        client.login(user, PASSWORD)
    stored = store.load(hub_server.url)
    assert stored is not None
    assert oct((tmp_path / "sessions.json").stat().st_mode & 0o777) == "0o600"
    # Make the stored access token worthless, as if it had expired: the next process refreshes.
    store.save(hub_server.url, type(stored)(user, stored.access_token[:-4] + "AAAA", stored.refresh_token))
    with Client(hub_server.url, sessions=store) as client:
        assert client.whoami().name == user
    rotated = store.load(hub_server.url)
    assert rotated is not None
    assert rotated.refresh_token != stored.refresh_token


# --- API tokens ----------------------------------------------------------------------------------

def test_api_tokens_are_shown_once_narrow_rights_and_can_be_revoked(hub_server: EmbeddedServer,
                                                                  admin: Client) -> None:
    user = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, user)["access_token"]) as client:
        reader = client.tokens.create("reader", rights=["dataset:read"])
        assert reader.token.startswith("tht_")
        listed = client.tokens.list()
        assert [t.name for t in listed] == ["reader"]
        assert "token" not in listed[0].model_dump()
        assert listed[0].last_used_at is None
        with pytest.raises(Forbidden):
            client.tokens.create("too-much", rights=["user:delete"])
        with pytest.raises(InvalidRequest):
            client.tokens.create("stale", expires_at=utcnow() - timedelta(seconds=1))
        with Client(hub_server.url, token=reader.token) as narrowed:
            assert narrowed.whoami().token == "api-token"
            with pytest.raises(Forbidden):
                narrowed.datasets.create(f"ds-{uuid.uuid4().hex[:8]}")
        assert client.tokens.list()[0].last_used_at is not None
        client.tokens.revoke(reader.id)
        assert status_as(hub_server, reader.token) == 401
        short = client.tokens.create("short", expires_at=utcnow() + timedelta(seconds=1))
        assert status_as(hub_server, short.token) == 200
        time.sleep(1.2)
        assert status_as(hub_server, short.token) == 401


def test_unknown_or_malformed_credentials_are_401(hub_server: EmbeddedServer) -> None:
    for header in ("Bearer tht_not-a-token", "Bearer not.a.jwt", "Basic YWxpY2U6cHc=", "Bearer"):
        with httpx.Client(base_url=hub_server.url + "/api/v1", headers={"Authorization": header}) as http:
            response = http.get("/auth/me")
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")


# --- passwords and rate limits ------------------------------------------------------------------------

@pytest.mark.parametrize(("password", "reason"), [
    ("short-1", "at least 10"), ("password123", "too common"), ("aaaaaaaaaaaa", "too common"),
])
def test_password_policy(admin: Client, password: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        admin.users.create(f"p-{uuid.uuid4().hex[:8]}", password)


def test_password_may_not_contain_the_user_name(admin: Client) -> None:
    with pytest.raises(InvalidRequest, match="user name"):
        admin.users.create("pamela", "pamela-was-here-2024")


def test_failed_logins_are_limited_per_user_and_per_address(hub_server: EmbeddedServer, admin: Client) -> None:
    user = new_user(admin)
    with api(hub_server) as http:
        for _ in range(PER_USER):
            assert http.post("/auth/login", json={"username": user, "password": "wrong-guess-1"}).status_code == 401
        limited = http.post("/auth/login", json={"username": user, "password": PASSWORD})  # even the right one
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert limited.json()["retry_after"] == int(limited.headers["retry-after"])
        # Spraying one guess over many names trips the per-address limit.
        statuses = [http.post("/auth/login", json={"username": f"nobody-{i}", "password": "x"}).status_code
                    for i in range(PER_ADDRESS)]
        assert 429 in statuses
        assert statuses.index(429) <= PER_ADDRESS - PER_USER
    _clear_login_counters(hub_server)


# --- PyTupli's weaknesses (anchors.md, "PyTupli 7. Weaknesses") ---------------------------------------

@pytest.mark.parametrize("name", ["global", "admin", "public", "guest"])
def test_reserved_names_cannot_be_signed_up_or_founded(hub_server: EmbeddedServer, admin: Client, name: str) -> None:
    with api(hub_server) as http:
        signup = http.post("/auth/signup", json={"name": name, "password": PASSWORD})
    assert signup.status_code == 422
    with pytest.raises(InvalidRequest, match="reserved"):
        admin.groups.create(name)


def test_users_and_groups_share_one_namespace(hub_server: EmbeddedServer, admin: Client) -> None:
    victim = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, new_user(admin))["access_token"]) as squatter:
        with pytest.raises(Exception, match="taken") as caught:
            squatter.groups.create(victim)  # PyTupli: founding a group named after a user exposed their data
        assert caught.value.status == 409
        group = squatter.groups.create(f"g-{uuid.uuid4().hex[:8]}").name
    with api(hub_server) as http:
        assert http.post("/auth/signup", json={"name": group, "password": PASSWORD}).status_code == 409
        assert http.post("/auth/signup", json={"name": victim, "password": PASSWORD}).status_code == 409


def test_signed_up_users_get_default_roles_not_chosen_ones(hub_server: EmbeddedServer) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    with api(hub_server) as http:
        assert http.post("/auth/signup", json={"name": name, "password": PASSWORD,
                                               "site_roles": ["admin"]}).status_code == 403
        created = http.post("/auth/signup", json={"name": name, "password": PASSWORD})
    assert created.status_code == 201
    assert created.json()["site_roles"] == ["contributor"]


def test_a_user_admin_cannot_take_over_the_admin(hub_server: EmbeddedServer, admin: Client) -> None:
    """PyTupli: a user with global user rights reset admin's password and logged in as admin."""
    helper = new_user(admin, roles=["user_admin", "contributor"])
    with Client(hub_server.url, token=login(hub_server, helper)["access_token"]) as client:
        with pytest.raises(Forbidden, match="holds rights you do not"):
            client.users.reset_password("admin", "i-own-you-now-1")
        with pytest.raises(Forbidden, match="cannot grant"):
            client.users.create(f"x-{uuid.uuid4().hex[:8]}", PASSWORD, site_roles=["admin"])
        with pytest.raises(Forbidden, match="cannot grant"):
            client.users.set_roles(helper, ["admin"])
        target = client.users.create(f"y-{uuid.uuid4().hex[:8]}", PASSWORD, site_roles=["guest"])
        client.users.reset_password(target.name, "reset-by-helper-1")  # within its rights: fine


@pytest.mark.parametrize(("raw", "expected"), [("False", False), ("false", False), ("0", False), ("no", False),
                                               ("True", True), ("1", True)])
def test_boolean_settings_given_as_strings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    from tuplehub.storage.settings import Settings

    monkeypatch.setenv("TUPLEHUB_OPEN_SIGNUP", raw)
    monkeypatch.setenv("TUPLEHUB_ANONYMOUS_READ", raw)
    settings = Settings(_env_file=None)
    assert settings.open_signup is expected
    assert settings.anonymous_read is expected


def test_a_boolean_setting_that_is_not_a_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from tuplehub.storage.settings import Settings

    monkeypatch.setenv("TUPLEHUB_OPEN_SIGNUP", "sometimes")
    with pytest.raises(ValidationError, match="open_signup"):
        Settings(_env_file=None)


async def test_no_default_secrets(tmp_path: Path, redis_url: str) -> None:
    from tuplehub.api.access.bootstrap import bootstrap
    from tuplehub.api.access.tokens import Signer
    from tuplehub.storage.catalog import open_catalog
    from tuplehub.storage.errors import ConfigError
    from tuplehub.storage.paths import embedded_credentials_file, read_json

    deployment = make_settings(tmp_path / "d", redis_url, catalog_url=f"sqlite:///{tmp_path}/d.db")
    with pytest.raises(ConfigError, match="TUPLEHUB_JWT_SECRET"):
        Signer.from_settings(deployment)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Signer.from_settings(deployment.model_copy(update={"jwt_secret": SecretStr("too-short")}))
    catalog = await open_catalog(deployment.resolved_catalog_url())
    try:
        with pytest.raises(ConfigError, match="TUPLEHUB_ADMIN_PASSWORD"):
            await bootstrap(catalog, deployment)
        weak = deployment.model_copy(update={"admin_password": SecretStr("admin")})
        with pytest.raises(ConfigError, match="TUPLEHUB_ADMIN_PASSWORD"):
            await bootstrap(catalog, weak)
    finally:
        await catalog.aclose()
    # The embedded default generates its admin password and signing key per data folder, 0600.
    generated = []
    for name in ("a", "b"):
        settings = make_settings(tmp_path / name, redis_url)
        Signer.from_settings(settings)
        catalog = await open_catalog(settings.resolved_catalog_url())
        try:
            await bootstrap(catalog, settings)
        finally:
            await catalog.aclose()
        credentials, secret = embedded_credentials_file(settings.data_dir), settings.data_dir / "jwt-secret.json"
        assert oct(credentials.stat().st_mode & 0o777) == oct(secret.stat().st_mode & 0o777) == "0o600"
        generated.append((read_json(credentials)["password"], read_json(secret)["secret"]))
    assert generated[0][0] != generated[1][0]
    assert generated[0][1] != generated[1][1]


def test_filter_keys_never_reach_a_query_unvalidated(admin: Client, hub_server: EmbeddedServer) -> None:
    dataset = admin.datasets.create(f"inj-{uuid.uuid4().hex[:8]}")
    dataset.upload(episode_arrays(episodes=2, length=4)).wait()
    with api(hub_server, admin_token(hub_server)) as http:
        for field in ("$where", "return; drop", "metadata"):
            answer = http.get(f"/datasets/{dataset.name}/versions/1/episodes",
                              params={"where": f'{{"op": "eq", "field": "{field}", "value": 1}}'})
            assert answer.status_code == 422, field
        upload = http.post(f"/datasets/{dataset.name}/uploads",
                           json={"episode_metadata": {"0": {"$where": "sleep(1000)"}}})
        assert upload.status_code == 422
        assert "may not start with '$'" in upload.json()["detail"]


def test_a_new_account_does_not_inherit_a_deleted_users_content(hub_server: EmbeddedServer, admin: Client) -> None:
    name = f"zed-{uuid.uuid4().hex[:6]}"
    admin.users.create(name, PASSWORD)
    with Client(hub_server.url, token=login(hub_server, name)["access_token"]) as zed:
        private = zed.datasets.create(f"zed-{uuid.uuid4().hex[:8]}").name
    admin.users.delete(name)
    admin.users.create(name, PASSWORD)
    with Client(hub_server.url, token=login(hub_server, name)["access_token"]) as impostor, \
            pytest.raises(NotFound):
        impostor.datasets.get(private)


def test_group_listing_shows_only_own_groups(hub_server: EmbeddedServer, admin: Client) -> None:
    """PyTupli's broken filter listed every group to everyone."""
    alice, bob = new_user(admin), new_user(admin)
    with Client(hub_server.url, token=login(hub_server, alice)["access_token"]) as client:
        mine = client.groups.create(f"a-{uuid.uuid4().hex[:8]}").name
    with Client(hub_server.url, token=login(hub_server, bob)["access_token"]) as client:
        theirs = client.groups.create(f"b-{uuid.uuid4().hex[:8]}").name
        page = client.groups.list()
    assert [g.name for g in page.items] == [theirs]
    assert page.total == 1
    assert mine in {g.name for g in admin.groups.list(limit=1000).items}


# --- audit ------------------------------------------------------------------------------------------

def test_audit_log_records_and_filters(hub_server: EmbeddedServer, admin: Client) -> None:
    owner = new_user(admin)
    started = utcnow()
    with Client(hub_server.url, token=login(hub_server, owner)["access_token"]) as client:
        group = client.groups.create(f"au-{uuid.uuid4().hex[:8]}").name
        dataset = client.datasets.create(f"au-{uuid.uuid4().hex[:8]}")
        dataset.publish(groups=[group])
        dataset.unpublish(groups=[group])
        dataset.delete()
        with pytest.raises(Forbidden):
            client.audit()
    records = admin.audit(actor=owner, since=started).items
    assert [r.action for r in reversed(records)] == [
        "group.create", "dataset.create", "dataset.publish", "dataset.unpublish", "dataset.delete"]
    published = admin.audit(action="dataset.publish", target=dataset.name).items
    assert len(published) == 1
    assert published[0].details == {"groups": [group], "public": False}
    assert admin.audit(actor=owner, until=started).total == 0


def test_audit_from_the_cli(hub_server: EmbeddedServer, admin: Client) -> None:
    import json

    from typer.testing import CliRunner

    from tuplehub.client.cli import app

    admin.datasets.create(f"cli-{uuid.uuid4().hex[:8]}")
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    result = runner.invoke(app, ["audit", "--action", "dataset.create", "--json", "--url", hub_server.url])
    assert result.exit_code == 0, result.output
    assert {r["action"] for r in json.loads(result.output)["items"]} == {"dataset.create"}


# --- HTTP hardening -------------------------------------------------------------------------------------

def test_body_size_limits(hub_server: EmbeddedServer, admin: Client) -> None:
    with api(hub_server, admin_token(hub_server)) as http:
        big = http.post("/datasets", json={"name": "big", "description": "x" * 8000})
        assert big.status_code == 413
        assert big.headers["content-type"] == "application/problem+json"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            yield b'{"name": "big", "description": "'
            yield b"x" * 8000
            yield b'"}'
        streamed = http.post("/datasets", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
    with pytest.raises(NotFound):
        admin.datasets.get("big")


def test_security_headers_and_closed_cors(hub_server: EmbeddedServer) -> None:
    with api(hub_server) as http:
        response = http.get("/health/live", headers={"Origin": "https://evil.example"})
        preflight = http.options("/datasets", headers={"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
        docs = http.get("/docs")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "strict-transport-security" not in response.headers
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert docs.status_code == 200
    assert "default-src 'self'" in docs.headers["content-security-policy"]  # its own assets, nothing else


def test_cors_and_hsts_when_configured(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, cors_origins=["https://lab.example"], hsts=True)
    with serve_in_thread(settings) as server, api(server) as http:
        allowed = http.options("/datasets", headers={"Origin": "https://lab.example",
                                                     "Access-Control-Request-Method": "POST"})
        refused = http.options("/datasets", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
        live = http.get("/health/live")
    assert allowed.headers["access-control-allow-origin"] == "https://lab.example"
    assert "access-control-allow-origin" not in refused.headers
    assert live.headers["strict-transport-security"].startswith("max-age=")


def test_anonymous_reads_only_when_enabled_and_only_public(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, anonymous_read=True)
    with serve_in_thread(settings) as server, admin_client(server) as admin, api(server) as anonymous:
        admin.datasets.create("open").publish(public=True)
        admin.datasets.create("closed")
        assert anonymous.get("/datasets/open").status_code == 200
        assert anonymous.get("/datasets/closed").status_code == 404
        assert [d["name"] for d in anonymous.get("/datasets").json()["items"]] == ["open"]
        assert anonymous.post("/datasets", json={"name": "anon"}).status_code == 401
        assert anonymous.get("/jobs").status_code == 401


# --- isolation between groups, down to presigned URLs ---------------------------------------------------

def test_two_groups_see_nothing_of_each_other_even_through_presigned_urls(
        tmp_path: Path, redis_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = make_settings(tmp_path, redis_url, objects_url="s3://tuplehub/iso", s3_endpoint_url=s3_endpoint,
                             presign_ttl_s=300)
    arrays = episode_arrays(episodes=3, length=8, seed=3)
    with serve_in_thread(settings) as server, admin_client(server) as admin:
        alice, bob, carol = (new_user(admin) for _ in range(3))
        admin.groups.create("team-a")
        admin.groups.create("team-b")
        admin.groups.set_member("team-a", alice, ["contributor"])
        admin.groups.set_member("team-a", carol, ["member"])
        admin.groups.set_member("team-b", bob, ["contributor"])
        with Client(server.url, token=login(server, alice)["access_token"]) as a, \
                Client(server.url, token=login(server, bob)["access_token"]) as b, \
                Client(server.url, token=login(server, carol)["access_token"]) as c:
            private = a.datasets.create("a-private")
            shared = a.datasets.create("a-shared")
            for dataset in (private, shared):
                upload = dataset.upload(arrays)
                upload.wait()
            shared.publish(groups=["team-a"])
            export = private.export(format="parquet")
            export.wait()
            url = a._http.get(f"/exports/{export.id}/url").json()
            assert url["url"].startswith(s3_endpoint)  # a presigned S3 URL ...
            expires = int(parse_qs(urlparse(url["url"]).query)["X-Amz-Expires"][0])
            assert expires <= 300  # ... that dies within minutes
            with b._http as http:
                for path in (f"/datasets/{private.name}", f"/datasets/{shared.name}",
                             f"/datasets/{shared.name}/versions/1/episodes", f"/jobs/{export.id}",
                             f"/exports/{export.id}/url", f"/exports/{export.id}/file",
                             f"/uploads/{upload.record.params['upload_id']}"):
                    assert http.get(path).status_code == 404, path
                assert http.post(f"/datasets/{shared.name}/exports", json={}).status_code == 404
                assert http.get("/datasets").json()["total"] == 0
                assert http.get("/jobs").json()["total"] == 0
            # Artifacts too: bytes go to S3 in presigned parts; the download URL is handed out only
            # after the read check, and expires within minutes.
            artifact = a.artifacts.upload(b"weights" * 1000, name="policy.bin")
            assert artifact.read() == b"weights" * 1000
            signed = a._http.get(f"/artifacts/{artifact.id}/url").json()
            assert signed["url"].startswith(s3_endpoint)
            assert int(parse_qs(urlparse(signed["url"]).query)["X-Amz-Expires"][0]) <= 300
            with api(server, login(server, bob)["access_token"]) as http:
                for suffix in ("", "/url", "/file"):
                    assert http.get(f"/artifacts/{artifact.id}{suffix}").status_code == 404, suffix
            # carol (team-a) reads the shared dataset and exports it; once it is withdrawn, her
            # finished export is withdrawn too: read access is checked again when the result is fetched.
            mine = c.datasets.get(shared.name).export(format="parquet")
            np.testing.assert_array_equal(mine.to_numpy()["reward"], arrays["reward"])
            shared.unpublish(groups=["team-a"])
            assert c._http.get(f"/exports/{mine.id}/url").status_code == 404
            assert c._http.get(f"/exports/{mine.id}/file").status_code == 404
            with pytest.raises(NotFound):
                c.datasets.get(shared.name)


def test_revoked_and_narrowed_tokens_on_content(hub_server: EmbeddedServer, admin: Client) -> None:
    owner = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, owner)["access_token"]) as client:
        dataset = client.datasets.create(f"own-{uuid.uuid4().hex[:8]}")
        read_only = client.tokens.create("ro", rights=["dataset:read"]).token
    with Client(hub_server.url, token=read_only) as narrowed:
        assert narrowed.datasets.get(dataset.name).name == dataset.name
        with pytest.raises(Forbidden):
            narrowed.datasets.get(dataset.name).delete()
        with pytest.raises(Forbidden):
            narrowed.datasets.get(dataset.name).publish(public=True)
    with Client(hub_server.url, token="tht_" + "x" * 43) as forged, pytest.raises(Unauthenticated):
        forged.whoami()


# --- found in review: escalation and persistence paths that must stay closed -----------------------------

def test_site_group_admins_cannot_grant_themselves_content_rights(hub_server: EmbeddedServer, admin: Client) -> None:
    """Site-wide group administration reaches every group's membership, not its content."""
    owner, keeper = new_user(admin), new_user(admin, roles=["group_admin", "guest"])
    group = f"sec-{uuid.uuid4().hex[:8]}"
    with Client(hub_server.url, token=login(hub_server, owner)["access_token"]) as client:
        client.groups.create(group)
        secret = client.datasets.create(f"sec-{uuid.uuid4().hex[:8]}").publish(groups=[group]).name
    with Client(hub_server.url, token=login(hub_server, keeper)["access_token"]) as client:
        with pytest.raises(NotFound):
            client.datasets.get(secret)
        with pytest.raises(Forbidden, match="cannot grant"):
            client.groups.set_member(group, keeper, ["member"])
        client.groups.set_member(group, keeper, ["group_admin"])  # group rights only: allowed ...
        with pytest.raises(NotFound):
            client.datasets.get(secret)  # ... and still blind to the content


def test_resetting_a_password_needs_every_right_the_target_holds_anywhere(hub_server: EmbeddedServer,
                                                                         admin: Client) -> None:
    helper = new_user(admin, roles=["user_admin", "contributor"])
    target = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, target)["access_token"]) as client:
        client.groups.create(f"own-{uuid.uuid4().hex[:8]}")  # now a group admin there
    with Client(hub_server.url, token=login(hub_server, helper)["access_token"]) as client, \
            pytest.raises(Forbidden, match="holds rights you do not"):
        client.users.reset_password(target, "taken-over-Pass-1")


def test_an_admin_reset_revokes_api_tokens_but_an_own_change_does_not(hub_server: EmbeddedServer,
                                                                      admin: Client) -> None:
    user = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, user)["access_token"]) as client:
        script = client.tokens.create("script").token
        client.change_password(PASSWORD, "changed-Passphrase-3")
    assert status_as(hub_server, script) == 200  # a script keeps working after a routine change
    admin.users.reset_password(user, "recovered-Passphrase-4")
    assert status_as(hub_server, script) == 401  # account recovery shuts out what a thief minted


def test_narrowed_tokens_cannot_manage_tokens_and_children_expire_with_their_parent(
        hub_server: EmbeddedServer, admin: Client) -> None:
    user = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, user)["access_token"]) as client:
        full = client.tokens.create("full", expires_at=utcnow() + timedelta(hours=1)).token
        narrow = client.tokens.create("narrow", rights=["dataset:read"]).token
    with Client(hub_server.url, token=narrow) as client:
        for attempt in (client.tokens.list, lambda: client.tokens.create("more"), lambda: client.tokens.revoke("x")):
            with pytest.raises(Forbidden, match="managing API tokens"):
                attempt()
    with Client(hub_server.url, token=full) as client:
        child = client.tokens.create("child", expires_at=utcnow() + timedelta(days=30))
        assert child.expires_at is not None
        assert child.expires_at <= utcnow() + timedelta(hours=1)


def test_times_without_a_zone_are_refused_not_a_500(hub_server: EmbeddedServer, admin: Client) -> None:
    with api(hub_server, login(hub_server, new_user(admin))["access_token"]) as http:
        answer = http.post("/tokens", json={"name": "t", "expires_at": "2031-01-01T00:00:00"})
        assert answer.status_code == 422
        assert "expires_at" in answer.json()["detail"]
    with api(hub_server, admin_token(hub_server)) as http:
        assert http.get("/audit", params={"since": "2026-01-01T00:00:00"}).status_code == 422


def test_a_held_role_cannot_be_deleted(hub_server: EmbeddedServer, admin: Client) -> None:
    role = f"ops_{uuid.uuid4().hex[:6]}"
    admin.roles.create(role, ["dataset:read"])
    user = new_user(admin, roles=["contributor", role])
    with pytest.raises(Exception, match="still held") as caught:
        admin.roles.delete(role)
    assert caught.value.status == 409
    admin.users.set_roles(user, ["contributor"])
    admin.roles.delete(role)


def test_the_last_admin_cannot_step_down(admin: Client) -> None:
    with pytest.raises(Exception, match="last admin") as caught:
        admin.users.set_roles("admin", ["contributor"])
    assert caught.value.status == 409


def test_owner_tokens_may_carry_owner_rights_and_narrow_ones_cannot_write(hub_server: EmbeddedServer,
                                                                         admin: Client) -> None:
    owner = new_user(admin)
    with Client(hub_server.url, token=login(hub_server, owner)["access_token"]) as client:
        dataset = client.datasets.create(f"tok-{uuid.uuid4().hex[:8]}")
        job = dataset.upload(episode_arrays(episodes=2, length=4))
        job.wait()
        cleaner = client.tokens.create("cleaner", rights=["dataset:read", "dataset:delete"]).token
        reader = client.tokens.create("reader", rights=["dataset:read"]).token
        session = client._http.post(f"/datasets/{dataset.name}/uploads", json={}).json()
    with api(hub_server, reader) as http:
        assert http.delete(f"/uploads/{session['id']}").status_code == 403
        assert http.post(f"/jobs/{job.id}/cancel").status_code == 403
        assert http.delete(f"/datasets/{dataset.name}").status_code == 403
    with api(hub_server, cleaner) as http:
        assert http.delete(f"/datasets/{dataset.name}").status_code == 204


def test_parallel_guesses_cannot_outrun_the_limit(hub_server: EmbeddedServer, admin: Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    user = new_user(admin)

    def guess(i: int) -> int:
        with api(hub_server) as http:
            return http.post("/auth/login", json={"username": user, "password": f"guess-{i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(guess, range(8)))
    assert statuses.count(401) == PER_USER
    assert statuses.count(429) == 8 - PER_USER
    _clear_login_counters(hub_server)


def test_a_stolen_access_token_is_no_password_oracle(hub_server: EmbeddedServer, admin: Client) -> None:
    user = new_user(admin)
    with api(hub_server, login(hub_server, user)["access_token"]) as http:
        statuses = [http.put("/auth/password", json={"current_password": f"guess-{i}",
                                                     "new_password": "whatever-Pass-9"}).status_code
                    for i in range(PER_USER + 1)]
    assert statuses == [403] * PER_USER + [429]
    _clear_login_counters(hub_server)


def _clear_login_counters(server: EmbeddedServer) -> None:
    """The counters expire on their own; tests clear them so later tests start from zero."""
    import redis as redis_lib

    with redis_lib.Redis.from_url(server.settings.redis_url or "") as client:
        for key in client.scan_iter(f"{server.settings.queue_name}:login-failures:*"):
            client.delete(key)


def test_sessions_go_to_the_os_keyring_when_one_is_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuplehub.client import sessions

    class Keyring:  # stands in for the OS service (Keychain, Secret Service) the keyring package reaches
        def __init__(self) -> None:
            self.items: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, key: str) -> str | None:
            return self.items.get((service, key))

        def set_password(self, service: str, key: str, value: str) -> None:
            self.items[(service, key)] = value

        def delete_password(self, service: str, key: str) -> None:
            del self.items[(service, key)]

    keyring = Keyring()
    monkeypatch.setattr(sessions, "_usable_keyring", lambda: keyring)
    store = sessions.SessionStore(tmp_path)
    assert store.where == "the OS keyring"
    store.save("http://hub", sessions.Session("alice", "access", "refresh"))
    assert store.load("http://hub") == sessions.Session("alice", "access", "refresh")
    assert not (tmp_path / "sessions.json").exists()  # nothing on disk
    store.delete("http://hub")
    assert store.load("http://hub") is None
    assert keyring.items == {}
