"""Backup and restore of the compose deployment, run the way docs/deployment.md ("A deployment") tells a user.

On the session stack: two users, a group, two datasets of alice (one shared with the group, of
which bob is a member), an artifact. ``run --rm -v DIR:/backups api tuplehub backup`` while the stack
runs, the ``.env`` and ``secrets/`` saved beside it; then a fresh stack (a second compose project:
its own volumes, podman service, pebble and certificates) gets the saved secrets and ``tuplehub
restore`` before its first ``up``. On it: every version has the content hash it had, bob (with the
API token he made before the backup) reads the shared dataset and its rows, not the other one,
alice signs in with her password, the artifact's bytes are the same. The session stack is only
read and added to; the fresh stack is taken down (``down -v``) at the end.

The embedded default's backup and restore are the plain suite's (tests/test_backup.py, with a real
``tuplehub serve`` in ``test_backup_and_restore_as_commands_beside_a_real_serve``), not repeated here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tuplehub.client import Client
from tuplehub.client.sessions import SessionStore
from tuplehub.storage.errors import NotFound

from ..conftest import PASSWORD
from ..factories import episode_arrays
from .podman import podman
from .stack import Stack, wait_for_certificate, write_pebble_config

pytestmark = pytest.mark.timeout(1800)  # the first tier test of a run builds the images and brings the stack up

IMAGE_UID = 10001  # the image's user, who writes the backup (Containerfile: USER 10001:10001)


def _signed_in(stack: Stack, folder: Path, username: str) -> Client:
    hub = Client(stack.url, timeout=120, sessions=SessionStore(folder / username, use_keyring=False))
    hub.login(username, PASSWORD, remember=False)
    return hub


def _hashes(hub: Client, *names: str) -> dict[str, dict[int, str | None]]:
    return {name: {v.number: v.content_hash for v in hub.datasets.get(name).record.versions} for name in names}


@contextmanager
def _pinned_image(stack: Stack) -> Iterator[str]:
    """The image the session stack's API replicas run, under a tag of this test's own, which the session
    stack's ``compose run`` uses too while the test runs.

    ``image`` is a shared tag that every worktree's tier run builds again; ``compose run`` and a second
    project look a tag up when they start a container, so they would run whatever was built last.
    """
    image_id = podman("inspect", "--format", "{{.Image}}", stack.containers("api")[0]).stdout.strip()
    tag = f"localhost/tuplehub-stackobs-tier:{image_id[:12]}"
    podman("tag", image_id, tag)
    shared = stack.process_env["TUPLEHUB_TIER_IMAGE"]
    stack.process_env["TUPLEHUB_TIER_IMAGE"] = tag
    try:
        yield tag
    finally:
        stack.process_env["TUPLEHUB_TIER_IMAGE"] = shared
        podman("untag", image_id, tag, check=False)


def _run_api(stack: Stack, backups: Path, *command: str, timeout: float = 300) -> dict:
    """``run --rm --no-deps -v BACKUPS:/backups api tuplehub COMMAND --json``: one more container of the api
    service; its JSON answer. ``--no-deps``, as docs/deployment.md says: without it compose recreated
    MongoDB, the store and Redis here (an empty catalog and store, in this tier)."""
    done = stack.compose("run", "--rm", "-T", "--no-deps", "-v", f"{backups}:/backups", "api", "tuplehub", *command,
                         "--json", timeout=timeout)
    assert "Recreate" not in done.stderr, done.stderr
    answer = json.loads(done.stdout)
    # compose run on podman's API answered 0 where the command exited 1: the JSON says what happened.
    assert "error" not in answer, (command, done.returncode, answer, done.stderr[-2000:])
    return answer


def test_a_backup_of_the_stack_restores_into_a_fresh_stack(
        stack: Stack, client: Client, part_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _pinned_image(stack) as image:
        _backup_and_restore(stack, client, image, part_images, tmp_path_factory, tmp_path, monkeypatch)


def _backup_and_restore(stack: Stack, client: Client, image: str, part_images: dict[str, str],
                        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    suffix = secrets.token_hex(3)
    alice, bob, group = f"alice{suffix}", f"bob{suffix}", f"lab{suffix}"
    for user in (alice, bob):
        client.users.create(user, PASSWORD, site_roles=["contributor"])
    client.groups.create(group)
    client.groups.set_member(group, alice, ["contributor"])
    client.groups.set_member(group, bob, ["member"])
    shared_name, private_name = f"shared-{suffix}", f"private-{suffix}"
    with _signed_in(stack, tmp_path, alice) as hub:
        shared = hub.datasets.create(shared_name)
        shared.upload(episode_arrays(episodes=4, length=30, seed=21), episode_metadata={0: {"policy": "a"}}).wait()
        shared.upload(episode_arrays(episodes=3, length=20, seed=22, first_id=10)).wait()
        shared.publish(groups=[group])
        hub.datasets.create(private_name).upload(episode_arrays(episodes=2, length=40, seed=23)).wait()
        content = os.urandom(300_000)
        artifact = hub.artifacts.upload(content, name="policy.bin")
        rows = shared.export().to_numpy()
        hashes = _hashes(hub, shared_name, private_name)
    assert [len(v) for v in hashes.values()] == [2, 1]
    assert all(h for versions in hashes.values() for h in versions.values()), hashes
    with _signed_in(stack, tmp_path, bob) as hub:
        bob_token = hub.tokens.create("after-restore").token
        hub.datasets.get(shared_name)
        with pytest.raises(NotFound):
            hub.datasets.get(private_name)
    prepared = time.monotonic()

    # docs/deployment.md: a host folder the image's user can write, then `run --rm ... tuplehub backup`.
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    os.chown(backups, IMAGE_UID, IMAGE_UID)
    summary = _run_api(stack, backups, "backup", "/backups/tuplehub")
    assert summary["kind"] == "deployment", summary
    assert summary["counts"]["versions"] >= 3, summary
    checked = _run_api(stack, backups, "restore", "/backups/tuplehub", "--check")
    assert checked["restored"] is False, checked
    deploy = stack.env_file.parent
    shutil.copy2(deploy / ".env", backups / "tuplehub.env")
    shutil.copytree(deploy / "secrets", backups / "tuplehub.secrets")
    backed_up = time.monotonic()

    # A fresh stack (new project, new volumes) with the saved secrets, restored before its first `up`.
    workdir = tmp_path_factory.mktemp("restored-stack")
    (workdir / "deploy").mkdir(mode=0o700)
    shutil.copy2(backups / "tuplehub.env", workdir / "deploy" / ".env")
    shutil.copytree(backups / "tuplehub.secrets", workdir / "deploy" / "secrets")
    restored = Stack(workdir, image, part_images)
    try:
        # As the session stack's fixture does: loopback ports of its own (Stack picked them), pebble's root
        # certificate in its own folder; the secrets stay as saved.
        restored.set_env(TUPLEHUB_HTTP_PORT=str(restored.http_port), TUPLEHUB_HTTPS_PORT=str(restored.https_port),
                         TUPLEHUB_S3_PUBLIC_ENDPOINT_URL=restored.s3_url,
                         TUPLEHUB_METRICS_TOKEN_FILE=str(workdir / "deploy" / "secrets" / "metrics-token"))
        write_pebble_config(workdir / "pebble")
        restored.pump.start()  # `up --wait` waits for the healthchecks the pump runs
        restored.compose("up", "-d", "--wait", "mongo", "minio", "redis", timeout=300)
        answer = _run_api(restored, backups, "restore", "/backups/tuplehub")
        assert answer["restored"] is True, answer
        restored_at = time.monotonic()
        # --no-recreate, as docs/deployment.md says: without it compose recreated the backends here (their
        # data gone with them in this tier, whose stand-ins keep it in memory).
        first_up = restored.compose("up", "-d", "--no-recreate", "--scale", "api=1", "--scale", "worker=1",
                                    timeout=420)
        assert "Recreate" not in first_up.stderr, first_up.stderr
        root = restored.pebble_root()
        wait_for_certificate(restored.url, root)
        up = time.monotonic()

        monkeypatch.setenv("SSL_CERT_FILE", str(root))  # the fresh stack's pebble issued its certificate
        with _signed_in(restored, tmp_path / "restored", alice) as hub, \
                Client(restored.url, token=bob_token, timeout=120) as bob_hub:
            assert _hashes(hub, shared_name, private_name) == hashes
            assert hub.artifacts.get(artifact.id).read() == content
            assert bob_hub.whoami().name == bob
            with pytest.raises(NotFound):
                bob_hub.datasets.get(private_name)
            again = bob_hub.datasets.get(shared_name).export().to_numpy()
        assert again.keys() == rows.keys() >= {"episode_id", "observation", "action", "reward"}
        for name in rows:
            np.testing.assert_array_equal(again[name], rows[name], err_msg=name)
        print(f"backup of {summary['counts']}; seconds: data {prepared - started:.1f}, backup + check + secrets "
              f"{backed_up - prepared:.1f}, restore into the fresh stack (its dependencies' start included) "
              f"{restored_at - backed_up:.1f}, its up and certificate {up - restored_at:.1f}, checks "
              f"{time.monotonic() - up:.1f}")
    except BaseException:
        print(f"restored stack's compose logs (tail):\n{restored.logs()[-8000:]}")
        print(f"session stack's api logs (tail):\n{stack.logs('api')[-4000:]}")
        raise
    finally:
        restored.down()
