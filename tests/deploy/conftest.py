"""The deployment tier: real containers built from the repository's ``Containerfile`` with podman.

It needs root, podman, buildah and debootstrap, and minutes, so the README's plain ``pytest`` never
collects it: ``tests/deploy/run.sh`` installs what it needs and runs it with ``TUPLEHUB_DEPLOY_TIER=1``.
No registry is needed: the base image is a Debian made by debootstrap from the apt mirror this
machine uses, cached in ``TUPLEHUB_DEPLOY_CACHE`` (default ``/var/tmp/tuplehub-deploy``) so a rerun
skips it. Containers publish ports on 127.0.0.1 only, and every container and volume a test starts
is removed at its end.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuplehub.client import Client
from tuplehub.client.sessions import SessionStore

from .part_images import PARTS, part_image
from .podman import IMAGE, ROOT, build, podman, size_mb
from .stack import ACME_EMAIL, DOMAIN, Stack, resolve_to_loopback, wait_for_certificate, write_pebble_config

CACHE = Path(os.environ.get("TUPLEHUB_DEPLOY_CACHE", "/var/tmp/tuplehub-deploy"))
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_RECIPE = 2  # part of the cache key: bump it when _make_rootfs_tar changes
# The machine's own extra CA certificates (a TLS-inspecting egress proxy, a company CA): without them
# pip inside the build cannot reach the package index.
EXTRA_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
READY_TIMEOUT_S = 90
FIGURES: list[str] = []  # printed at the end of the run (build time, image size)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool:
    """Never part of the plain run, even when ``tests/`` is collected as a whole."""
    return os.environ.get("TUPLEHUB_DEPLOY_TIER") != "1"


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if FIGURES:
        terminalreporter.section("deployment tier figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _apt_mirror() -> str:
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _base_key() -> str:
    digest = hashlib.sha256(f"{BASE_RECIPE} {SUITE} {' '.join(BASE_PACKAGES)}".encode())
    for ca in EXTRA_CAS:
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:12]


def _make_rootfs_tar(tar_path: Path) -> None:
    """debootstrap a minimal Debian with Python, add the machine's CAs, pack it as a tar for podman import."""
    rootfs = CACHE / "rootfs.partial"
    shutil.rmtree(rootfs, ignore_errors=True)
    with (CACHE / "debootstrap.log").open("w") as log:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                        str(rootfs), _apt_mirror()], stdout=log, stderr=subprocess.STDOUT, check=True, timeout=900)
    for ca in EXTRA_CAS:
        shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
    subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], capture_output=True, check=True)
    for leftover in (*(rootfs / "var/cache/apt/archives").glob("*.deb"), *(rootfs / "var/lib/apt/lists").glob("*_*")):
        leftover.unlink()  # as in the slim images: no package lists or downloaded packages
    partial = tar_path.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        tar.add(rootfs, arcname=".")
    partial.replace(tar_path)
    shutil.rmtree(rootfs)


@pytest.fixture(scope="session")
def base_image() -> str:
    """A local Debian image with python3 and venv, standing in for the public Python slim image."""
    key = _base_key()
    name = f"localhost/tuplehub-deploy-base:{SUITE}-{key}"
    if podman("image", "exists", name, check=False).returncode == 0:
        return name
    CACHE.mkdir(parents=True, exist_ok=True)
    tar_path = CACHE / f"base-{SUITE}-{key}.tar"
    started = time.monotonic()
    if not tar_path.exists():
        _make_rootfs_tar(tar_path)
    podman("import", "--change", "CMD=/bin/bash", "--change", "ENV=LANG=C.UTF-8", str(tar_path), name, timeout=300)
    FIGURES.append(f"base image ({SUITE} by debootstrap, cached in {CACHE}): {time.monotonic() - started:.0f} s")
    return name


def _pyproject_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


@pytest.fixture(scope="session")
def image(base_image: str) -> str:
    """The repository's image, built from its Containerfile on the local base (layers cached by podman)."""
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    seconds = build(IMAGE, base_image, "--build-arg", f"VERSION={_pyproject_version()}",
                    "--build-arg", f"REVISION={revision or 'unknown'}")
    FIGURES.append(f"image build (podman, layers cached between runs): {seconds:.0f} s")
    FIGURES.append(f"image size {IMAGE}: {size_mb(IMAGE)} MB (base {size_mb(base_image)} MB)")
    return IMAGE


@dataclass
class Api:
    container: str
    url: str
    admin_password: str


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/health/ready", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def api(image: str) -> Iterator[Api]:
    """The image's default command (the embedded default, ``tuplehub serve``) with a data volume,
    published on a free port of 127.0.0.1."""
    suffix = secrets.token_hex(4)
    container, volume = f"tuplehub-deploy-api-{suffix}", f"tuplehub-deploy-data-{suffix}"
    password = secrets.token_urlsafe(18)
    podman("run", "-d", "--name", container, "-p", "127.0.0.1::8000", "-v", f"{volume}:/data",
           "-e", f"TUPLEHUB_ADMIN_PASSWORD={password}", image)
    try:
        port = podman("port", container, "8000/tcp").stdout.strip().rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url):
            running = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                logs = podman("logs", container, check=False)
                raise AssertionError(f"the API container did not get ready (running: {running}):\n"
                                     f"{logs.stdout}\n{logs.stderr}")
            time.sleep(1)
        yield Api(container, url, password)
    finally:
        podman("rm", "-f", "-t", "10", container, check=False)
        podman("volume", "rm", "-f", volume, check=False)


# --- the compose stack (tests/deploy/stack.py says what runs and how to use it) --------------------
@pytest.fixture(scope="session")
def part_images(base_image: str) -> dict[str, str]:
    """The stack's other parts' images, by part name (tests/deploy/part_images.py)."""
    return {name: part_image(name, base_image, FIGURES) for name in PARTS}


@pytest.fixture(scope="session")
def stack(image: str, part_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """compose/compose.yaml up with two API replicas and two workers, its certificates issued by pebble;
    taken down (``down -v``) at the end of the run, and the podman service stopped, even on failure."""
    workdir = tmp_path_factory.mktemp("stack")
    init = subprocess.run([sys.executable, "-m", "tuplehub.client.cli", "deploy", "init", "--domain", DOMAIN,
                           "--email", ACME_EMAIL, "--dir", str(workdir / "deploy")],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    stack = Stack(workdir, image, part_images)
    try:
        # What a test must change, and nothing else: loopback and free ports, pebble as the ACME CA
        # (its TLS root mounted by compose.tier.yaml), the published HTTPS port in presigned URLs.
        stack.set_env(TUPLEHUB_BIND="127.0.0.1", TUPLEHUB_HTTP_PORT=str(stack.http_port),
                      TUPLEHUB_HTTPS_PORT=str(stack.https_port), TUPLEHUB_ACME_CA="https://pebble:14000/dir",
                      TUPLEHUB_ACME_CA_ROOT="/etc/tier/pebble-ca.pem", TUPLEHUB_S3_PUBLIC_ENDPOINT_URL=stack.s3_url)
        write_pebble_config(workdir / "pebble")
        seconds = stack.up("--scale", "api=2", "--scale", "worker=2")
        FIGURES.append(f"stack up (compose up -d --scale api=2 --scale worker=2, healthy): {seconds:.0f} s")
        with resolve_to_loopback(DOMAIN, f"s3.{DOMAIN}"):
            root = stack.pebble_root()
            FIGURES.append(f"certificate by ACME (pebble), first verified HTTPS answer: "
                           f"{wait_for_certificate(stack.url, root):.1f} s after up")
            yield stack
    except BaseException:
        logs = stack.logs()
        print(f"compose logs, last 150 lines:\n{chr(10).join(logs.splitlines()[-150:])}")
        print(stack.compose("ps", "-a", check=False).stdout)
        raise
    finally:
        stack.down()


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[Client]:
    """The tuplehub client, signed in as the admin through the proxy; it verifies the certificate against
    pebble's root (SSL_CERT_FILE, which httpx reads: API calls and presigned transfers alike)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(stack.workdir / "pebble-root.pem"))
        with Client(stack.url, timeout=120, sessions=SessionStore(stack.workdir / "client", use_keyring=False)) as hub:
            hub.login("admin", stack.env["TUPLEHUB_ADMIN_PASSWORD"], remember=False)
            yield hub
