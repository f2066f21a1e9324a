"""Sign-in attempt counting in Redis, per user name and per client address (shared by every API replica).

An attempt is counted *before* the password is checked, atomically, so a burst of parallel
guesses cannot all slip in before the counter moves; a successful attempt gives its count back.
Each key counts in a fixed window that starts at its first attempt. Once a key is over its limit,
attempts are refused with 429 and ``Retry-After`` until the window ends.
"""

from __future__ import annotations

from typing import Any

from tuplehub.storage.errors import RateLimited

# Count and start the window in one step (atomic, and works on Redis before 7, which lacks EXPIRE NX).
_COUNT = """
local attempts = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {attempts, redis.call('TTL', KEYS[1])}
"""


class LoginLimiter:
    def __init__(self, redis: Any, *, per_user: int, per_address: int, window_s: int, namespace: str) -> None:
        self._redis = redis
        self._prefix = f"{namespace}:login-failures:"  # deployments sharing a Redis count apart
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s

    async def _count(self, key: str, limit: int, what: str) -> None:
        attempts, ttl = await self._redis.eval(_COUNT, 1, key, self.window_s)
        if int(attempts) > limit:
            raise RateLimited(f"too many failed attempts for this {what}; try again later",
                              retry_after=max(int(ttl), 1))

    async def attempt(self, username: str, address: str) -> None:
        """Count a sign-in attempt, or refuse it (429) when the user or the address is over its limit."""
        await self._count(f"{self._prefix}user:{username.lower()}", self.per_user, "user")
        await self._count(f"{self._prefix}address:{address}", self.per_address, "address")

    async def succeeded(self, username: str, address: str) -> None:
        """A right password: forget the user's failures and give the address its attempt back."""
        await self._redis.delete(f"{self._prefix}user:{username.lower()}")
        await self._redis.decr(f"{self._prefix}address:{address}")

    async def signup(self, address: str) -> None:
        """Sign-ups count against the address and are never given back."""
        await self._count(f"{self._prefix}signup:{address}", self.per_address, "address")
