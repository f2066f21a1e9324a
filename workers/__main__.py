"""``python -m tuplehub.workers``: one Arq worker process, stopped cleanly by SIGINT or SIGTERM.

``tuplehub worker`` (deployments) and the worker that ``tuplehub serve`` supervises in the
embedded default both run :func:`run`. Settings come from ``TUPLEHUB_*`` variables; the queue's
URL (``TUPLEHUB_REDIS_URL``) travels in the environment, never on the command line, where other
local accounts could read a password in it. On a signal the worker takes no new job and lets each
running one finish its current step, for up to ``TUPLEHUB_SHUTDOWN_GRACE_S``; the job then hands
itself back to the queue (another worker runs it again; the attempt does not count as lost). The
exit status is 0 after a signal and 1 when the worker itself failed (Redis went away, say), so a
supervisor restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from tuplehub.storage.logs import configure_logging
from tuplehub.storage.settings import Settings
from tuplehub.workers.settings import build_worker, drain_worker, stop_worker

logger = logging.getLogger("tuplehub.workers")


async def run(settings: Settings, *, sole: bool = False) -> int:
    """Run a worker until a signal (0) or until it fails (1)."""
    if settings.redis_url is None:
        raise SystemExit("a worker needs TUPLEHUB_REDIS_URL: it joins a server's queue")
    worker = build_worker(settings, settings.redis_url, handle_signals=False, sole=sole)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    working = asyncio.create_task(worker.main())
    signalled = asyncio.create_task(stopping.wait())
    await asyncio.wait({working, signalled}, return_when=asyncio.FIRST_COMPLETED)
    failed = working.done() and not working.cancelled() and working.exception() is not None
    if failed:
        logger.error("the worker stopped: %s", working.exception())
    signalled.cancel()
    working.cancel()
    await asyncio.gather(working, signalled, return_exceptions=True)
    try:
        await (stop_worker(worker) if failed else drain_worker(worker, settings.shutdown_grace_s))
    except Exception as exc:  # its Redis is gone: nothing left to close cleanly
        logger.warning("the worker could not close cleanly: %s", exc)
        failed = True
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tuplehub.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--sole", action="store_true",
                        help="no other worker serves this queue (set by tuplehub serve)")
    sole = parser.parse_args().sole
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(run(settings, sole=sole)))


if __name__ == "__main__":
    main()
