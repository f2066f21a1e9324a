"""Real ``tuplehub`` processes for tests and perf scripts: started on loopback, always stopped by PID.

``start_serve`` runs ``tuplehub serve`` in its own process group (as a terminal would run it), so
a test can send SIGINT to the whole group the way Ctrl-C does.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tuplehub.client import Client

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuplehub.client.cli", *args]


def isolated_env(config_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without a configured server or token, with its own config folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUPLEHUB_")}
    if config_dir is not None:
        env["TUPLEHUB_CONFIG_DIR"] = str(config_dir)
    elif "TUPLEHUB_CONFIG_DIR" in os.environ:
        env["TUPLEHUB_CONFIG_DIR"] = os.environ["TUPLEHUB_CONFIG_DIR"]
    return {**env, **extra}


def start_serve(data_dir: Path, port: int = 0, *, env: dict[str, str] | None = None, log: Path | None = None,
                args: tuple[str, ...] = (), python: str = sys.executable) -> subprocess.Popen[bytes]:
    """``tuplehub serve`` on ``port`` with ``data_dir``, in a new process group."""
    handle = log.open("ab") if log is not None else subprocess.DEVNULL
    command = [python, *cli("serve", "--port", str(port), "--data-dir", str(data_dir), *args)[1:]]
    try:
        return subprocess.Popen(command,
                                env=env if env is not None else isolated_env(), stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if log is not None:
            handle.close()  # type: ignore[union-attr]


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal the process (if it runs), wait for it, kill it if it hangs; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


def wait_until(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_server(data_dir: Path, process: subprocess.Popen[bytes], log: Path | None = None) -> str:
    """The URL from ``server.json`` once the server there answers its readiness probe."""
    announce = data_dir / "server.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(f"server exited with {process.returncode}: {tail}")
        try:
            url = json.loads(announce.read_text())["url"]
            if httpx.get(f"{url}/api/v1/health/ready", timeout=2).status_code == 200:
                return url
        except (OSError, ValueError, KeyError, httpx.TransportError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not start: {log.read_text(errors='replace')[-3000:] if log else ''}")


def children_of(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux)."""
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Processes:
    """Child processes that are always stopped, whatever the test does."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def add(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.running.append(process)
        return process

    def start(self, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """``tuplehub ARGS...`` with its output appended to ``log``."""
        with log.open("ab") as handle:
            return self.add(subprocess.Popen(cli(*args), env=env, stdout=handle, stderr=subprocess.STDOUT))

    @staticmethod
    def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        return stop(process, sig)

    def stop_all(self) -> None:
        for process in self.running:
            stop(process)


def owned_processes() -> Iterator[Processes]:
    """Body of a fixture: ``yield from owned_processes()``."""
    children = Processes()
    try:
        yield children
    finally:
        children.stop_all()


def embedded_client(data_dir: Path, env: dict[str, str]) -> Client:
    """A client of the server running in ``data_dir``, signed in as its local admin (as the CLI would be)."""
    url = json.loads((data_dir / "server.json").read_text())["url"]
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]  # as storage.paths names it
    stored = json.loads((Path(env["TUPLEHUB_CONFIG_DIR"]) / "embedded" / f"{key}.json").read_text())
    client = Client(url)
    client.login(stored["username"], stored["password"], remember=False)
    return client
