"""Failed-login counting in Redis, per user name and per client address (shared by every API replica).

Each key counts failures in a fixed window that starts at the first failure; once a key reaches
its limit, attempts are refused with 429 and ``Retry-After`` until the window ends, before the
password is even checked, so guessing costs the attacker the whole window.
"""

from __future__ import annotations

from typing import Any

from tuplehub.storage.errors import RateLimited

_PREFIX = "tuplehub:login-failures:"
# Count and start the window in one step (atomic, and works on Redis before 7, which lacks EXPIRE NX).
_COUNT = """
local failures = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return failures
"""


class LoginLimiter:
    def __init__(self, redis: Any, *, per_user: int, per_address: int, window_s: int) -> None:
        self._redis = redis
        self._limits = {"user": per_user, "address": per_address}
        self.window_s = window_s

    def _keys(self, username: str, address: str) -> dict[str, str]:
        return {"user": f"{_PREFIX}user:{username.lower()}", "address": f"{_PREFIX}address:{address}"}

    async def check(self, username: str, address: str) -> None:
        for scope, key in self._keys(username, address).items():
            failures = int(await self._redis.get(key) or 0)
            if failures >= self._limits[scope]:
                wait = await self._redis.ttl(key)
                raise RateLimited(f"too many failed sign-ins for this {scope}; try again later",
                                  retry_after=max(int(wait), 1))

    async def failed(self, username: str, address: str) -> None:
        for key in self._keys(username, address).values():
            await self._redis.eval(_COUNT, 1, key, self.window_s)

    async def succeeded(self, username: str) -> None:
        await self._redis.delete(self._keys(username, "")["user"])
