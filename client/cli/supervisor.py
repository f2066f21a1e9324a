"""Keeping the embedded default's children alive: the worker process and the bundled Redis.

``tuplehub serve`` runs the API itself and supervises two children. The worker process
(``python -m tuplehub.workers --sole``) is started again with growing pauses whenever it exits,
so a job that kills its process (a segfault, the kernel's OOM killer) costs that job an attempt,
not the whole server. The bundled ``redis-server`` is started again on the same socket and
password if it dies, then the worker is restarted so its start-up sweep re-enqueues from the
catalog whatever Redis lost; if Redis cannot come back the server exits non-zero, for a service
manager to restart it. While a child is down, the readiness probe says so (:meth:`checks`).

Both children run in their own session: a Ctrl-C sent to the terminal's process group reaches
only ``tuplehub serve``, which then stops the API first, the worker next and Redis last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tuplehub.storage.embedded_redis import die_with_parent

if TYPE_CHECKING:
    from tuplehub.storage.embedded_redis import EmbeddedRedis
    from tuplehub.storage.settings import Settings

logger = logging.getLogger("tuplehub.server")
POLL_S = 0.2
# Pauses before restarting a worker that exited: doubled each time, back to the first after a calm minute.
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0
CALM_S = 60.0
REDIS_RESTARTS = 3
WORKER_STOP_S = 15.0  # beyond its drain grace (TUPLEHUB_SHUTDOWN_GRACE_S), before a stopping worker is killed


def settings_environment(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment of a child that must see exactly these settings (command-line overrides included)."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        field = getattr(settings, name)
        if value is None:
            env.pop(f"TUPLEHUB_{name.upper()}", None)
            continue
        if hasattr(field, "get_secret_value"):
            value = field.get_secret_value()
        env[f"TUPLEHUB_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["TUPLEHUB_REDIS_URL"] = redis_url
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts, watches and stops the children of ``tuplehub serve``."""

    def __init__(self, redis: EmbeddedRedis | None, worker_env: dict[str, str] | None, *,
                 stop_grace_s: float = 0.0) -> None:
        self.redis = redis
        self.worker_env = worker_env
        self.stop_wait_s = stop_grace_s + WORKER_STOP_S
        self.worker: subprocess.Popen[bytes] | None = None
        self.fatal: str | None = None
        self._state = {"redis": "ok"} if redis is not None else {}
        if worker_env is not None:
            self._state["worker"] = "starting"
        self._pause_s = FIRST_PAUSE_S
        self._worker_started = 0.0
        self._restart_at: float | None = None
        self._stopping = False

    def checks(self) -> dict[str, str]:
        """What the readiness probe adds: "ok", or why a child is down."""
        return dict(self._state)

    def start_worker(self) -> None:
        if self.worker_env is None:
            return
        self.worker = subprocess.Popen([sys.executable, "-m", "tuplehub.workers", "--sole"], env=self.worker_env,
                                       stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        self._worker_started = time.monotonic()
        self._restart_at = None
        self._state["worker"] = "ok"

    async def watch(self, on_fatal: Callable[[str], None]) -> None:
        """Poll the children until :meth:`stop`; ``on_fatal`` is called if Redis cannot come back."""
        while not self._stopping:
            await asyncio.sleep(POLL_S)
            if self._stopping:  # stop() may have set it during the sleep; mypy keeps the narrowing
                return  # type: ignore[unreachable]
            if self.redis is not None and not self.redis.alive() and not await self._restart_redis():
                on_fatal(self.fatal or "the bundled redis-server died")
                return
            if self.worker is not None and self.worker.poll() is not None:
                self._worker_exited()
            if self.worker is None and self._restart_at is not None and time.monotonic() >= self._restart_at:
                self.start_worker()

    async def _restart_redis(self) -> bool:
        assert self.redis is not None
        code = self.redis.process.returncode if self.redis.process is not None else 0
        logger.error("the bundled redis-server %s; restarting it", _describe_exit(code or 0))
        self._state["redis"] = "down: the bundled redis-server died; restarting it"
        for attempt in range(1, REDIS_RESTARTS + 1):
            try:
                self.redis.restart()  # in this thread: PR_SET_PDEATHSIG follows the thread that starts it
            except Exception as exc:  # reported, then tried again; fatal after the last try
                self.fatal = f"the bundled redis-server died and could not be restarted: {exc}"
                logger.error("restart %d of %d of redis-server failed: %s", attempt, REDIS_RESTARTS, exc)
                await asyncio.sleep(0.5 * attempt)
                continue
            self._state["redis"] = "ok"
            logger.warning("the bundled redis-server is back; restarting the worker to re-enqueue its jobs")
            await self._stop_worker()
            self._pause_s = FIRST_PAUSE_S
            self.start_worker()
            return True
        return False

    def _worker_exited(self) -> None:
        """Schedule a new worker process after a pause that grows while it keeps dying."""
        assert self.worker is not None
        code = self.worker.returncode
        if time.monotonic() - self._worker_started > CALM_S:
            self._pause_s = FIRST_PAUSE_S
        logger.error("the worker process %s; starting a new one in %.1f s (a job it was running counts "
                     "one lost attempt)", _describe_exit(code), self._pause_s)
        self._state["worker"] = f"down: the worker process {_describe_exit(code)}; restarting it"
        self.worker = None
        self._restart_at = time.monotonic() + self._pause_s
        self._pause_s = min(self._pause_s * 2, LONGEST_PAUSE_S)

    async def _stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None or worker.poll() is not None:
            return
        worker.terminate()  # its jobs finish their current step and are handed back to the queue
        try:
            await asyncio.to_thread(worker.wait, self.stop_wait_s)
        except subprocess.TimeoutExpired:
            logger.warning("the worker did not stop within %.0f s; killing it", self.stop_wait_s)
            worker.kill()
            await asyncio.to_thread(worker.wait, WORKER_STOP_S)

    async def stop(self) -> None:
        """Stop the worker (its jobs are handed back); the caller stops Redis after it."""
        self._stopping = True
        await self._stop_worker()
