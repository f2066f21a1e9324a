"""The job queue: Arq on Redis. It only carries job ids; the catalog holds the truth about jobs.

The Arq job id is the catalog job id, so enqueuing a job twice does nothing, and a job that Redis
lost (a restart without persistence, an expired key) is put back from the catalog by the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuplehub.storage.errors import StoreUnavailable
from tuplehub.storage.models import JobRecord

if TYPE_CHECKING:
    from arq.connections import ArqRedis, RedisSettings

# Arq's own key prefixes (arq.constants); named here so recovery code reads plainly.
JOB_KEY = "arq:job:"
IN_PROGRESS_KEY = "arq:in-progress:"
RESULT_KEY = "arq:result:"


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

    async def release(self, job_id: str) -> None:
        """Forget that a dead worker was running the job, so a live worker may start it again."""
        await self.pool.delete(IN_PROGRESS_KEY + job_id)

    async def ping(self) -> None:
        try:
            await self.pool.ping()
        except Exception as exc:
            raise StoreUnavailable(f"queue: {exc}") from exc

    async def aclose(self) -> None:
        await self.pool.aclose(close_connection_pool=True)
