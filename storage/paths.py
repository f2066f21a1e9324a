"""Where tuplehub keeps files on this machine; shared by the embedded server and the client.

``TUPLEHUB_CONFIG_DIR`` moves the config folder (sessions, embedded admin credentials), like
``TUPLEHUB_DATA_DIR`` moves the data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs

SERVE_LOCK = "serve.lock"  # held (flock) by the one embedded server of a data folder; restore checks it


def config_dir() -> Path:
    configured = os.environ.get("TUPLEHUB_CONFIG_DIR")
    return Path(configured) if configured else platformdirs.user_config_path("tuplehub")


def embedded_credentials_file(data_dir: Path) -> Path:
    """The local admin of the embedded server whose data lives in ``data_dir``."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return config_dir() / "embedded" / f"{key}.json"


def write_private(path: Path, content: dict[str, Any]) -> None:
    """Write JSON readable by this user only (0600 file in a 0700 folder), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(content, handle)
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
