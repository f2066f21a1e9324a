"""Arq workers: the ``ingest`` and ``export`` jobs, their wiring and the recovery that keeps them honest."""

from tuplehub.workers.settings import build_worker, stop_worker

__all__ = ["build_worker", "stop_worker"]
