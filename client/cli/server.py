"""Running the server: the embedded default (API, a supervised worker process and a bundled Redis) or parts of it.

This module is the composition root where the API and the workers meet; it imports them only
when a server command runs, so the client installs and works without any server dependency.

``tuplehub serve`` binds its port before it touches the data folder (a busy port is one line
and leaves nothing behind), makes everything it creates private to its user (umask 077: folders
0700, files 0600), runs the worker as a child process (see :mod:`tuplehub.client.cli.supervisor`)
and stops on SIGINT or SIGTERM: API first, worker next, Redis last, then ``server.json`` goes.
With ``--json`` its start and stop lines are JSON documents, one a line; a failure to start is a
tuplehub error, which the CLI reports in one line (or as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuplehub.client.discovery import SERVER_FILE
from tuplehub.client.errors import CommandLineError, MissingExtra
from tuplehub.storage.errors import ConfigError
from tuplehub.storage.logs import configure_logging
from tuplehub.storage.paths import SERVE_LOCK

if TYPE_CHECKING:
    import uvicorn

    from tuplehub.client.cli.supervisor import Supervisor
    from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.server")
STARTUP_TIMEOUT_S = 60.0


def load_settings(**overrides: Any) -> Settings:
    try:
        from tuplehub.storage.settings import Settings
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingExtra("the server", "server", exc.name or "pydantic_settings") from exc
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not (a busy port suggests ``--port``)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandLineError(f"{host}:{port} is already in use (another server?); pick another port "
                                   "with `tuplehub serve --port N` (0 picks a free one)") from None
        raise CommandLineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One embedded server per data folder: a second would fight over its Redis and catalog."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (folder / SERVE_LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CommandLineError(f"another tuplehub server is already using {folder}; stop it or pick another "
                                   "--data-dir") from exc
        yield


def loose_entries(folder: Path) -> list[Path]:
    """The data folder and its entries that other local accounts may read or enter."""
    found = []
    for path in (folder, *sorted(folder.iterdir())):
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.lstat().st_mode) & 0o077 and not path.is_symlink():
                found.append(path)
    return found


def _warn_if_loose(folder: Path) -> None:
    loose = loose_entries(folder)
    if loose:
        names = ", ".join(path.name or str(path) for path in loose[:5]) + (" ..." if len(loose) > 5 else "")
        print(f"warning: other local accounts can read parts of {folder} ({names}); "
              f"make it private with: chmod -R go= {folder}", file=sys.stderr, flush=True)


class EmbeddedServer:
    """API + a worker (+ bundled Redis when no TUPLEHUB_REDIS_URL is set).

    ``worker_process`` runs the worker as a supervised child process (``tuplehub serve``);
    otherwise it runs in this event loop (tests, which start many servers and want them fast).
    """

    def __init__(self, settings: Settings, *, with_worker: bool = True, worker_process: bool = False,
                 listener: socket.socket | None = None) -> None:
        self.settings = settings
        self.with_worker = with_worker
        self.worker_process = worker_process
        self.listener = listener
        self.url = ""
        self.exit_code = 0
        self.started = threading.Event()
        self.stop_requested = False
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        from tuplehub.client.cli.supervisor import Supervisor, settings_environment
        from tuplehub.storage.catalog import open_catalog
        from tuplehub.storage.embedded_redis import EmbeddedRedis

        self._loop = asyncio.get_running_loop()
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Opening the catalog migrates it (or refuses one a newer release upgraded) before anything
        # serves: its error is then one line, not a traceback from inside the API's lifespan.
        await (await open_catalog(settings.resolved_catalog_url())).aclose()
        redis = EmbeddedRedis(settings.data_dir / "redis") if settings.embedded_redis else None
        announce = settings.data_dir / SERVER_FILE
        supervisor: Supervisor | None = None
        worker = worker_task = watch = None
        try:
            redis_url = redis.launch() if redis is not None else str(settings.redis_url)
            import uvicorn  # while redis-server starts

            from tuplehub.api import create_app

            in_process = self.with_worker and not self.worker_process
            supervisor = Supervisor(redis, settings_environment(settings, redis_url)
                                    if self.with_worker and self.worker_process else None,
                                    stop_grace_s=settings.shutdown_grace_s)
            app = create_app(settings, redis_url)
            if redis is not None:
                redis.wait_ready()
            app.state.supervision = supervisor
            # log_config=None: uvicorn's lines go through the process's own handler (JSON or text), and the
            # API logs each request itself (tuplehub.api.monitoring), so uvicorn's access log stays off.
            config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                    log_config=None, access_log=False, lifespan="on",
                                    # uvicorn annotates an int, and uses it as the float timeout it is
                                    timeout_graceful_shutdown=settings.shutdown_grace_s)  # type: ignore[arg-type]
            self._server = server = uvicorn.Server(config)
            server.should_exit = self.stop_requested
            serving = asyncio.create_task(server.serve(sockets=[self.listener] if self.listener else None))
            for _ in range(int(STARTUP_TIMEOUT_S / 0.02)):
                if server.started or serving.done():
                    break
                await asyncio.sleep(0.02)
            if not server.started:
                await serving  # raises the start-up error
                if self.stop_requested:
                    return
                raise ConfigError("the API server did not start")
            port = server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://{settings.host}:{port}"
            announce.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
            supervisor.start_worker()  # once the API answers: on two cores its imports would slow the API's
            if in_process:
                from tuplehub.workers import build_worker

                worker = build_worker(settings, redis_url, handle_signals=False)
                worker_task = asyncio.create_task(worker.main())
            watch = asyncio.create_task(supervisor.watch(self._fatal))
            self.started.set()
            await serving
        finally:
            await self._shut_down(supervisor, worker, worker_task, watch)
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(announce.read_text()).get("pid") == os.getpid():
                    announce.unlink()
            if redis is not None:
                redis.stop()

    @staticmethod
    async def _shut_down(supervisor: Supervisor | None, worker: object, worker_task: asyncio.Task[None] | None,
                         watch: asyncio.Task[None] | None) -> None:
        """The worker stops after the API and before Redis, so it can still hand its jobs back."""
        if watch is not None:
            watch.cancel()
        if worker_task is not None:
            from tuplehub.workers import stop_worker

            worker_task.cancel()
            await asyncio.gather(worker_task, return_exceptions=True)
            with contextlib.suppress(Exception):
                await stop_worker(worker)  # type: ignore[arg-type]
        if supervisor is not None:
            await supervisor.stop()

    def _fatal(self, reason: str) -> None:
        logger.error("%s; stopping so that a service manager can restart the server", reason)
        self.exit_code = 1
        self.stop()

    def stop(self) -> None:
        """Ask the server to shut down (from a signal handler or another thread)."""
        self.stop_requested = True
        if self._server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)


def serve(settings: Settings, *, with_worker: bool = True, as_json: bool = False) -> None:
    """Run until SIGINT or SIGTERM, then stop the API, the worker and the bundled Redis; exit 0.

    A failure to start (a busy port, a data folder in use, a bundled Redis that will not start,
    an unusable folder) is raised as a tuplehub error or ``OSError``, which the CLI reports.
    """
    listener = bind(settings.host, settings.port)  # before anything is created in the data folder
    os.umask(0o077)  # the catalog, blocks, exports and secrets are this user's only
    configure_logging(settings.log_level, settings.log_format)
    server = EmbeddedServer(settings, with_worker=with_worker, worker_process=True, listener=listener)

    def on_signal(signum: int, frame: object) -> None:
        # Uvicorn handles signals while it serves, then raises them again here: shutting down
        # (not dying of the signal) lets the worker, Redis and server.json be cleaned up.
        server.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    embedded = settings.embedded_redis
    with _exclusive(settings.data_dir) if embedded else contextlib.nullcontext():
        if settings.embedded_catalog:
            _warn_if_loose(settings.data_dir)
        threading.Thread(target=_announce, args=(server, as_json), daemon=True).start()
        asyncio.run(server.run())
    if server.exit_code:
        raise SystemExit(server.exit_code)
    print(json.dumps({"status": "stopped", "url": server.url}) if as_json else "tuplehub stopped", flush=True)


def _announce(server: EmbeddedServer, as_json: bool) -> None:
    """Say where the server listens as soon as it does (with ``as_json``, as one JSON line for scripts)."""
    if server.started.wait(STARTUP_TIMEOUT_S) and server.url:
        data_dir = server.settings.data_dir if server.settings.embedded_catalog else None
        if as_json:
            print(json.dumps({"status": "serving", "url": server.url, "data_dir": data_dir and str(data_dir),
                              "pid": os.getpid(), "stop": "SIGINT (Ctrl-C) or SIGTERM"}), flush=True)
            return
        where = f" (data in {data_dir})" if data_dir else ""
        print(f"tuplehub serving {server.url}{where}; press Ctrl-C to stop", flush=True)


@contextlib.contextmanager
def serve_in_thread(settings: Settings) -> Iterator[EmbeddedServer]:
    """An embedded server with its worker in a background thread, stopped on exit (tests use this)."""
    server = EmbeddedServer(settings)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(server.run())
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)
            server.started.set()

    with _exclusive(settings.data_dir):
        thread = threading.Thread(target=target, name="tuplehub-server", daemon=True)
        thread.start()
        server.started.wait(STARTUP_TIMEOUT_S)
        if failure or not server.url:
            raise RuntimeError(f"the embedded server failed to start: {failure[0] if failure else 'timeout'}")
        try:
            yield server
        finally:
            server.stop()
            thread.join(30)


@contextlib.contextmanager
def serve_in_subprocess(data_dir: Path) -> Iterator[str]:
    """A ``tuplehub serve`` child on a free port for ``data_dir``, stopped on exit; yields its URL.

    Its output goes to a temporary log, whose last line is the error if it fails to start (the
    demo uses this).
    """
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen([sys.executable, "-m", "tuplehub.client.cli", "serve", "--port", "0",
                                  "--data-dir", str(data_dir)], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            url = _wait_announced(child, data_dir)
            if url is None:
                log.seek(0)
                lines = log.read().decode(errors="replace").strip().splitlines()
                errors = [line for line in lines if line.startswith("error: ")] or lines  # a hint may follow
                raise ConfigError(errors[-1].removeprefix("error: ") if errors else
                                  "the embedded server did not start")
            yield url
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(30)


def _wait_announced(child: subprocess.Popen[bytes], data_dir: Path) -> str | None:
    """The URL the child wrote to ``server.json``, once it answers as ready; None if it exited."""
    import httpx

    from tuplehub.storage.paths import read_json

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and child.poll() is None:
        announced = read_json(data_dir / SERVER_FILE) or {}
        if announced.get("pid") == child.pid:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{announced['url']}/api/v1/health/ready", timeout=2).status_code == 200:
                    return str(announced["url"])
        time.sleep(0.05)
    return None


def run_worker(settings: Settings, *, as_json: bool = False) -> None:
    """A standalone Arq worker (deployments); needs TUPLEHUB_REDIS_URL. Says that it started (with
    ``as_json``, as one JSON line); the queue's URL is not printed (it may hold a password)."""
    from tuplehub.workers.__main__ import run

    if settings.redis_url is None:
        raise ConfigError("tuplehub worker needs TUPLEHUB_REDIS_URL: it joins a server's queue",
                          hint="set TUPLEHUB_REDIS_URL to the server's Redis; `tuplehub serve` runs its own "
                               "worker in the embedded default")
    configure_logging(settings.log_level, settings.log_format)
    if as_json:
        print(json.dumps({"status": "working", "pid": os.getpid(), "data_dir": str(settings.data_dir),
                          "stop": "SIGINT (Ctrl-C) or SIGTERM"}), flush=True)
    else:
        print(f"tuplehub worker running (pid {os.getpid()}); press Ctrl-C to stop", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(run(settings)))
