"""The image: one for API and workers, non-root, no compilers or caches, healthy, usable from the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIGURES, Api
from .podman import IMAGE, build, image_config, podman, size_mb

pytestmark = pytest.mark.timeout(1800)  # the first test builds the base and the image

COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")


def test_runs_as_a_non_root_user(api: Api) -> None:
    """The server (PID 1 and its worker and Redis children) runs as the image's user, not root."""
    uids = podman("exec", api.container, "sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status").stdout.split("\n")
    assert uids[0], "no process found"
    assert {line.split()[1] for line in uids if line} == {"10001"}


def test_final_stage_has_no_compiler_sources_or_pip_cache(image: str) -> None:
    script = ("for c in " + " ".join(COMPILERS) + "; do command -v $c; done; "
              "ls -d /src /root/.cache /home/tuplehub/.cache 2>/dev/null; "
              "find / -xdev -name '*.whl' -path '*cache*' 2>/dev/null | head -3; true")
    found = podman("run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", image, "-c", script).stdout
    assert found.strip() == ""


def test_build_context_holds_only_the_package(base_image: str, image: str) -> None:
    """.dockerignore: no .git, .venv, tests or bytecode reach the build (the build stage is cached)."""
    tag = f"{IMAGE}-build-stage"  # kept: removing it would remove the cached layers the next build reuses
    build(tag, base_image, "--target", "build")
    listing = podman("run", "--rm", tag, "sh", "-c",
                     "ls -A /src; find /src -name __pycache__ -o -name '*.pyc' | head -3").stdout.split()
    made_by_the_wheel_build = {"build", "tuplehub.egg-info"}
    assert sorted(set(listing) - made_by_the_wheel_build) == [
        "LICENSE", "README.md", "api", "client", "pyproject.toml", "storage", "workers"]


def test_image_metadata(image: str) -> None:
    config = image_config(image)["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "tuplehub"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] not in ("", "dev")
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/tuplehub-deploy-base")
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["tuplehub", "serve"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/api/v1/health/ready" in " ".join(image_config(image)["Healthcheck"]["Test"])  # podman keeps it here


def test_worker_command_is_in_the_same_image(image: str) -> None:
    done = podman("run", "--rm", image, "tuplehub", "worker", "--help")
    assert "TUPLEHUB_REDIS_URL" in done.stdout


def test_healthcheck_passes(api: Api) -> None:
    podman("healthcheck", "run", api.container)
    assert podman("inspect", "--format", "{{.State.Health.Status}}", api.container).stdout.strip() == "healthy"


def test_sign_in_from_the_host(api: Api) -> None:
    cli = [sys.executable, "-m", "tuplehub.client.cli"]
    login = subprocess.run([*cli, "login", "--username", "admin", "--password-stdin", "--url", api.url],
                           input=api.admin_password, capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    whoami = subprocess.run([*cli, "whoami", "--json", "--url", api.url], capture_output=True, text=True, timeout=60)
    assert whoami.returncode == 0, whoami.stderr
    assert '"admin"' in whoami.stdout


WHEELS = Path(os.environ.get("TUPLEHUB_DEPLOY_WHEELS", "/opt/wheels"))


@pytest.mark.skipif(not any(WHEELS.glob("torch-2.13.0*.whl")), reason=(
    f"no torch 2.13.0 wheel in {WHEELS} (TUPLEHUB_DEPLOY_WHEELS): PyPI's torch is the CUDA build, gigabytes"))
def test_torch_extra_builds_a_worker_that_runs_fitted_q(base_image: str, image: str) -> None:
    """EXTRAS=torch: the same Containerfile, with torch from a folder of wheels (the CPU build)."""
    tag = f"{IMAGE}-torch"  # kept, like the main image, so a rerun builds from cached layers
    seconds = build(tag, base_image, "--build-arg", "EXTRAS=torch", "--build-arg", "TORCH_INDEX_URL=",
                    "--build-arg", "PIP_FIND_LINKS=/wheels", "-v", f"{WHEELS}:/wheels:ro")
    FIGURES.append(f"torch image build: {seconds:.0f} s, size {size_mb(tag)} MB")
    probe = "import torch, tuplehub.workers.metrics.fqe; print(torch.__version__)"
    assert podman("run", "--rm", tag, "python3", "-c", probe).stdout.startswith("2.13.0")
    assert "PIP_FIND_LINKS" not in " ".join(image_config(tag)["Config"]["Env"])
