"""Where the server is: ``TUPLEHUB_URL``, else the embedded server this machine runs (and its local admin).

``tuplehub serve`` writes its address to ``server.json`` in its data folder while it runs, so
``Client()`` finds it even on a port chosen at start-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

from tuplehub.storage.paths import embedded_credentials_file, read_json

DEFAULT_URL = "http://127.0.0.1:8470"
SERVER_FILE = "server.json"


def data_dir() -> Path:
    """The embedded server's data folder, as ``tuplehub serve`` resolves it."""
    configured = os.environ.get("TUPLEHUB_DATA_DIR")
    return Path(configured) if configured else platformdirs.user_data_path("tuplehub")


def resolve_url(url: str | None = None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("TUPLEHUB_URL"):
        return os.environ["TUPLEHUB_URL"].rstrip("/")
    announced = data_dir() / SERVER_FILE
    try:
        return json.loads(announced.read_text())["url"].rstrip("/")
    except (OSError, ValueError, KeyError):
        return DEFAULT_URL


def embedded_credentials(url: str, folder: Path | None = None) -> tuple[str, str] | None:
    """The local admin's name and password, if ``url`` is the embedded server of that data folder."""
    folder = folder or data_dir()
    announced = read_json(folder / SERVER_FILE)
    if announced is None or str(announced.get("url", "")).rstrip("/") != url.rstrip("/"):
        return None
    stored = read_json(embedded_credentials_file(folder))
    if stored is None or "username" not in stored or "password" not in stored:
        return None
    return str(stored["username"]), str(stored["password"])
