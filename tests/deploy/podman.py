"""Calling podman from the deployment tier."""

from __future__ import annotations

import json
import subprocess
from typing import Any

IMAGE = "localhost/tuplehub:deploy-tier"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run podman; its stderr is in the failure message."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def image_config(name: str) -> dict[str, Any]:
    """``podman image inspect`` of one image."""
    return json.loads(podman("image", "inspect", name).stdout)[0]
