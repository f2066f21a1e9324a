"""Where signed-in sessions live between commands: the OS keyring when one is usable, else a 0600
file in the config folder. Keyed by server URL, so one machine can be signed in to several servers.

Refresh tokens rotate on every use and a reused one ends the session, so two processes must never
refresh the same token at once: :meth:`SessionStore.locked` serialises them across processes, and
the second one re-reads the token the first one stored instead of spending the old one again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuplehub.storage.paths import config_dir, read_json, write_private

KEYRING_SERVICE = "tuplehub"


@dataclass
class Session:
    username: str
    access_token: str
    refresh_token: str


def _usable_keyring() -> Any | None:
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) < 1:
        return None
    return keyring


class SessionStore:
    def __init__(self, folder: Path | None = None, *, use_keyring: bool = True) -> None:
        self.folder = folder or config_dir()
        self._keyring = _usable_keyring() if use_keyring else None

    @property
    def where(self) -> str:
        return "the OS keyring" if self._keyring else str(self.folder / "sessions.json")

    def load(self, url: str) -> Session | None:
        if self._keyring is not None:
            raw = self._keyring.get_password(KEYRING_SERVICE, url)
            entry = json.loads(raw) if raw else None
        else:
            entry = (read_json(self.folder / "sessions.json") or {}).get(url)
        return Session(**entry) if entry else None

    def save(self, url: str, session: Session) -> None:
        if self._keyring is not None:
            self._keyring.set_password(KEYRING_SERVICE, url, json.dumps(asdict(session)))
            return
        sessions = read_json(self.folder / "sessions.json") or {}
        sessions[url] = asdict(session)
        write_private(self.folder / "sessions.json", sessions)

    def delete(self, url: str) -> None:
        if self._keyring is not None:
            with contextlib.suppress(Exception):
                self._keyring.delete_password(KEYRING_SERVICE, url)
            return
        sessions = read_json(self.folder / "sessions.json") or {}
        if sessions.pop(url, None) is not None:
            write_private(self.folder / "sessions.json", sessions)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (across processes) while reading, refreshing and saving."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.folder / "sessions.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
