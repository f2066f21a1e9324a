"""The job queue: Arq on Redis. It only carries job ids; the catalog holds the truth about jobs.

The Arq job id is the catalog job id, so enqueuing a job twice does nothing, and a job that Redis
lost (a restart without persistence, an expired key) is put back from the catalog by the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tuplehub.storage.errors import Conflict, StoreUnavailable
from tuplehub.storage.models import JobRecord

if TYPE_CHECKING:
    from arq.connections import ArqRedis, RedisSettings

# Arq's own key prefixes (arq.constants); named here so recovery code reads plainly.
JOB_KEY = "arq:job:"
IN_PROGRESS_KEY = "arq:in-progress:"
RESULT_KEY = "arq:result:"
RETRY_KEY = "arq:retry:"  # Arq's count of a job's tries: one more at each pick
LOCK_KEY = "tuplehub:lock:"
# A held lock expires this long after its holder stops renewing it (a dead worker's lock frees itself).
LOCK_TTL_S = 30.0
MAX_HOLD_S = 24 * 3600


def redis_settings(url: str) -> RedisSettings:
    from arq.connections import RedisSettings

    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 2
    return settings


class Queue:
    def __init__(self, pool: ArqRedis, queue_name: str) -> None:
        self.pool = pool
        self.queue_name = queue_name

    @classmethod
    async def connect(cls, url: str, queue_name: str) -> Queue:
        from arq import create_pool

        try:
            pool = await create_pool(redis_settings(url), default_queue_name=queue_name)
        except Exception as exc:
            raise StoreUnavailable(f"queue {url}: {exc}") from exc
        return cls(pool, queue_name)

    async def enqueue(self, job: JobRecord) -> bool:
        """Put the job on the queue; False if Redis already holds it (queued, running or just done)."""
        queued = await self.pool.enqueue_job(job.kind.value, job.id, _job_id=job.id, _queue_name=self.queue_name)
        return queued is not None

    async def knows(self, job_id: str) -> bool:
        """Whether Redis still carries the job (queued, running, or finished a moment ago)."""
        keys = (JOB_KEY + job_id, IN_PROGRESS_KEY + job_id, RESULT_KEY + job_id)
        return bool(await self.pool.exists(*keys))

    async def depth(self) -> int:
        """Jobs waiting in the queue whose time has come; retries deferred to later are left out.

        Arq keeps the queue as a sorted set scored by when each job may start, in milliseconds.
        """
        return int(await self.pool.zcount(self.queue_name, "-inf", int(time.time() * 1000)))

    async def uncount_try(self, job_id: str) -> None:
        """Take back the try Arq counted when it picked a job that was then handed back on a clean
        stop. Arq gives up on a job (without running it, leaving it ``queued`` in the catalog) after
        ``max_tries`` picks; a job moved along by rolling restarts of several workers must not get
        there. The catalog counts the attempts that matter (``lost``, see ``jobstate.claim``)."""
        key = RETRY_KEY + job_id
        if int(await self.pool.get(key) or 0) > 0:
            await self.pool.decr(key)

    async def release(self, job_id: str) -> None:
        """Forget that a dead worker was running the job, so a live worker may start it again."""
        await self.pool.delete(IN_PROGRESS_KEY + job_id)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, *, wait: Callable[[], Awaitable[None]], wait_s: float,
                        poll_s: float = 1.0) -> AsyncIterator[None]:
        """Hold the lock ``name`` across workers while the block runs; renewed until it ends.

        While another holder has it, ``wait`` is awaited between polls (a job checks for
        cancellation there) for at most ``wait_s`` seconds, then :class:`Conflict`.
        """
        lock = self.pool.lock(LOCK_KEY + name, timeout=LOCK_TTL_S)
        for _ in range(max(1, int(wait_s / poll_s))):
            if await lock.acquire(blocking=False):
                break
            await wait()
            await asyncio.sleep(poll_s)
        else:
            # Not an outage: a job that gets this fails instead of retrying.
            raise Conflict(f"another job kept {name} busy for {wait_s:.0f} s; ask again later", name=name)
        renew = asyncio.create_task(self._renew(lock))
        try:
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(Exception):  # expired meanwhile: someone else may hold it now
                await lock.release()

    @staticmethod
    async def _renew(lock: Any) -> None:
        for _ in range(int(MAX_HOLD_S / (LOCK_TTL_S / 3))):
            await asyncio.sleep(LOCK_TTL_S / 3)
            with contextlib.suppress(Exception):
                await lock.reacquire()

    async def ping(self) -> None:
        try:
            await self.pool.ping()
        except Exception as exc:
            raise StoreUnavailable(f"queue: {exc}") from exc

    async def aclose(self) -> None:
        await self.pool.aclose(close_connection_pool=True)
