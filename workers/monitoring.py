"""A worker process's Prometheus metrics: what its jobs did, and how long the queue is.

:func:`tuplehub.workers.context.run_job` records every job here once, when its attempt ends. Each
worker process has its own registry and, when ``TUPLEHUB_WORKER_METRICS_PORT`` is set, serves it on
that port (from a thread, so a busy event loop never makes a scrape time out); Prometheus scrapes
every worker. Labels are job kinds and outcomes only: never a dataset, a user or a job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tuplehub.storage.errors import ConfigError
from tuplehub.storage.models import JobKind
from tuplehub.storage.queue import Queue

logger = logging.getLogger("tuplehub.workers")
# Seconds: from a metrics job of a few ms to an hour-long ingest (the default job timeout).
disable_created_metrics()  # as the API does: no ``_created`` gauge beside every counter
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
QUEUE_TIMEOUT_S = 2.0  # a scrape that cannot reach Redis in this time reports no queue depth
# What each kind's result says it moved: (result key of rows, result key of bytes).
VOLUME_KEYS: dict[str, tuple[str | None, str | None]] = {
    JobKind.ingest: ("transitions", "bytes"), JobKind.derive: ("transitions", None),
    JobKind.export: ("rows", "bytes"), JobKind.artifact: (None, "size")}


class WorkerMonitor:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("tuplehub_jobs", "Job attempts ended, by kind and outcome (succeeded, failed, "
                            "cancelled, retrying, handed_back, superseded).", ["kind", "outcome"],
                            registry=self.registry)
        self.duration = Histogram("tuplehub_job_duration_seconds", "How long job attempts ran, by kind and "
                                  "outcome.", ["kind", "outcome"], buckets=JOB_BUCKETS, registry=self.registry)
        self.attempts = Counter("tuplehub_job_attempts", "Job attempts started (a retry is one more).", ["kind"],
                                registry=self.registry)
        self.running = Gauge("tuplehub_jobs_running", "Jobs running in this process now.", ["kind"],
                             registry=self.registry)
        self.stuck = Counter("tuplehub_jobs_stuck", "Jobs stopped because their progress did not move for "
                             "TUPLEHUB_STUCK_AFTER_S.", ["kind"], registry=self.registry)
        self.lost = Counter("tuplehub_jobs_lost", "Running jobs whose worker went silent (its heartbeat stopped), "
                            "found by this worker's recovery sweep and run again.", ["kind"], registry=self.registry)
        self.rows = Counter("tuplehub_job_rows", "Rows moved by succeeded jobs: ingested (ingest, derive) or "
                            "exported (export).", ["kind"], registry=self.registry)
        self.bytes = Counter("tuplehub_job_bytes", "Bytes moved by succeeded jobs: uploads ingested, export "
                             "files written, artifacts stored.", ["kind"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None

    def started(self, kind: str) -> None:
        self.attempts.labels(kind).inc()
        self.running.labels(kind).inc()

    def ended(self, kind: str, outcome: str, seconds: float, result: dict[str, Any] | None) -> None:
        self.running.labels(kind).dec()
        self.jobs.labels(kind, outcome).inc()
        self.duration.labels(kind, outcome).observe(seconds)
        rows_key, bytes_key = VOLUME_KEYS.get(kind, (None, None))
        for counter, key in ((self.rows, rows_key), (self.bytes, bytes_key)):
            value = (result or {}).get(key) if key else None
            if isinstance(value, int):
                counter.labels(kind).inc(value)

    def watch_queue(self, queue: Queue, loop: asyncio.AbstractEventLoop) -> None:
        """Report the queue's depth, read from Redis at each scrape through the worker's own event loop."""
        self.registry.register(_QueueDepth(queue, loop))

    def serve(self, host: str, port: int, token: str | None) -> None:
        """Serve the metrics on ``host:port`` from a daemon thread; with ``token``, only to its bearer."""
        app = make_wsgi_app(self.registry)
        expected = f"Bearer {token}".encode() if token else None

        def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if expected is not None and not hmac.compare_digest(given, expected):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
                return [b"send 'Authorization: Bearer <TUPLEHUB_METRICS_TOKEN>'\n"]
            return app(environ, start_response)

        try:
            self._server = make_server(host, port, guarded, _ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:  # two workers on one host with one port: say which setting
            raise ConfigError(f"the worker metrics port {host}:{port} (TUPLEHUB_WORKER_METRICS_PORT) cannot be "
                              f"opened: {exc.strerror}", hint="give each worker on one host its own port") from exc
        threading.Thread(target=self._server.serve_forever, name="tuplehub-worker-metrics", daemon=True).start()

    # issue 12 (compose): free disk space, for Prometheus' "disk almost full" alert.
    def watch_disks(self, folders: Iterable[Path]) -> None:
        """Report the free and total bytes of the file system under each folder, read at each scrape."""
        self.registry.register(_DiskSpace(folders))

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _QueueDepth(Collector):
    def __init__(self, queue: Queue, loop: asyncio.AbstractEventLoop) -> None:
        self.queue = queue
        self.loop = loop

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        with contextlib.suppress(Exception):  # Redis away, or the loop closed: no sample this time
            running_here = self.loop.is_running() and _running_loop() is self.loop
            if not running_here:  # waiting on the loop from inside it would wait for ever
                future = asyncio.run_coroutine_threadsafe(self.queue.depth(), self.loop)
                try:
                    family.add_metric([], future.result(QUEUE_TIMEOUT_S))
                finally:
                    future.cancel()
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("tuplehub_queue_depth", "Jobs waiting in the queue that may start now (deferred "
                                 "retries left out); the same for every worker of one queue.")


class _DiskSpace(Collector):
    """``tuplehub_disk_free_bytes`` and ``_size_bytes`` by folder. In a container the folders sit on its
    image layer or volume, whose file system is the host's disk that holds the other volumes too (by default)."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.folders = sorted({str(folder) for folder in folders})

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        free, size = self._families()
        for folder in self.folders:
            with contextlib.suppress(OSError):  # a folder not made yet: no sample
                usage = shutil.disk_usage(folder)
                free.add_metric([folder], usage.free)  # what an unprivileged process may still write
                size.add_metric([folder], usage.total)
        yield free
        yield size

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("tuplehub_disk_free_bytes", "Bytes this process may still write on the file "
                                  "system of each folder it uses (data folder, temporary files).", labels=["path"]),
                GaugeMetricFamily("tuplehub_disk_size_bytes", "Size in bytes of the file system of each folder "
                                  "it uses.", labels=["path"]))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a line per scrape is noise
        pass
