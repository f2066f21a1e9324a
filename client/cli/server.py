"""Running the server: the embedded default (API, worker and bundled Redis in one process) or parts of it.

This module is the composition root where the API and the workers meet; it imports them only
when a server command runs, so the client installs and works without any server dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tuplehub.client.discovery import SERVER_FILE

if TYPE_CHECKING:
    from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.server")
STARTUP_TIMEOUT_S = 60.0


def load_settings(**overrides: object) -> Settings:
    try:
        from tuplehub.storage.settings import Settings
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise SystemExit("the server needs its extra: pip install 'tuplehub[server]'") from exc
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One embedded server per data folder: a second would fight over its Redis and catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "serve.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SystemExit(f"another tuplehub server is already using {folder}; stop it or pick another "
                             "TUPLEHUB_DATA_DIR") from exc
        yield


class EmbeddedServer:
    """API + optional worker (+ bundled Redis when no TUPLEHUB_REDIS_URL is set) in one process."""

    def __init__(self, settings: Settings, *, with_worker: bool = True) -> None:
        self.settings = settings
        self.with_worker = with_worker
        self.url = ""
        self.started = threading.Event()
        self._server = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        import uvicorn

        from tuplehub.api import create_app
        from tuplehub.storage.embedded_redis import EmbeddedRedis
        from tuplehub.workers import build_worker, stop_worker

        self._loop = asyncio.get_running_loop()
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        redis = EmbeddedRedis(settings.data_dir / "redis") if settings.embedded_redis else None
        redis_url = redis.start() if redis is not None else settings.redis_url
        announce = settings.data_dir / SERVER_FILE
        worker_task = None
        try:
            config = uvicorn.Config(create_app(settings, redis_url), host=settings.host, port=settings.port,
                                    log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
            self._server = server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve())
            for _ in range(int(STARTUP_TIMEOUT_S / 0.05)):
                if server.started or serving.done():
                    break
                await asyncio.sleep(0.05)
            if not server.started:
                await serving  # raises the start-up error
                raise SystemExit("the API server did not start")
            port = server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://{settings.host}:{port}"
            announce.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
            if self.with_worker:
                worker = build_worker(settings, redis_url, handle_signals=False)
                worker_task = asyncio.create_task(worker.main())
            self.started.set()
            await serving
        finally:
            if worker_task is not None:
                worker_task.cancel()
                await asyncio.gather(worker_task, return_exceptions=True)
                await stop_worker(worker)
            with contextlib.suppress(FileNotFoundError):
                if json.loads(announce.read_text()).get("pid") == os.getpid():
                    announce.unlink()
            if redis is not None:
                redis.stop()

    def stop(self) -> None:
        """Ask a server running in another thread to shut down."""
        if self._server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)


def serve(settings: Settings, *, with_worker: bool = True) -> None:
    """Run until interrupted (Ctrl-C or SIGTERM), then stop the worker and the bundled Redis."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = EmbeddedServer(settings, with_worker=with_worker)

    def on_signal(signum: int, frame: object) -> None:
        # Uvicorn handles signals while it serves, then re-raises them to this handler: shutting
        # down here (not dying of the signal) lets the worker, Redis and server.json be cleaned up.
        if server._server is not None:
            server._server.should_exit = True
        else:
            raise SystemExit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    with _exclusive(settings.data_dir) if settings.embedded_redis else contextlib.nullcontext():
        asyncio.run(server.run())


@contextlib.contextmanager
def serve_in_thread(settings: Settings) -> Iterator[EmbeddedServer]:
    """An embedded server in a background thread, stopped on exit (the demo uses this)."""
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


def run_worker(settings: Settings) -> None:
    """A standalone Arq worker (deployments); needs TUPLEHUB_REDIS_URL."""
    from tuplehub.workers import build_worker

    if settings.redis_url is None:
        raise SystemExit("tuplehub worker needs TUPLEHUB_REDIS_URL: it joins a server's queue "
                         "(tuplehub serve runs its own worker in the embedded default)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.set_event_loop(asyncio.new_event_loop())
    build_worker(settings, settings.redis_url).run()
