"""Calling podman from the deployment tier."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

IMAGE = "localhost/tuplehub:deploy-tier"
ROOT = Path(__file__).resolve().parents[2]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run podman; its stderr is in the failure message."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def image_config(name: str) -> dict[str, Any]:
    """``podman image inspect`` of one image."""
    return json.loads(podman("image", "inspect", name).stdout)[0]


def image_id(tag: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()


def build(tag: str, base_image: str, *args: str) -> float:
    """Build the repository's Containerfile as ``tag``; the seconds it took.

    Docker format: the OCI image config has no field for HEALTHCHECK, so podman would drop it. The
    image this tag named before is removed, so reruns do not fill the disk (its layers that the new
    one shares stay: they are the cache that makes a rerun fast).
    """
    previous = image_id(tag)
    started = time.monotonic()
    podman("build", "--format", "docker", "--build-arg", f"BASE_IMAGE={base_image}", *args,
           "-t", tag, "-f", str(ROOT / "Containerfile"), str(ROOT), timeout=1500)
    if previous and previous != image_id(tag):
        podman("rmi", previous, check=False)
    return time.monotonic() - started


def size_mb(tag: str) -> int:
    return round(int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6)
