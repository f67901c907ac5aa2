"""A budget of operation cost per user and minute: a token bucket per principal `sub`.

The bucket holds up to `per_minute` tokens and refills at `per_minute / 60` a second; an operation takes
its estimated cost. In process by default; with `OPENCSP_REDIS_URL` every replica shares one bucket per
user, updated atomically by one Lua script (read, refill by Redis's own clock, take, expire). Redis
unreachable: the process falls back to its own buckets and logs once (failing open to one replica's
budget, not to none: a Redis outage must not take the API down, nor lift every limit).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)

MAX_LOCAL_BUCKETS = 100_000  # least recently charged buckets go first; a full bucket loses nothing

# KEYS[1]: the bucket. ARGV: capacity, refill per second, cost. Returns 0 when taken, else the
# milliseconds until the cost fits. The bucket expires once it would be full again.
_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now_ms
end
tokens = math.min(capacity, tokens + (now_ms - at) * rate / 1000)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 1000 / rate) + 1000)
return wait
"""


class LocalBuckets:
    """The in-process buckets."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def charge(self, key: str, cost: int) -> int | None:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        wait: int | None = None
        if tokens >= cost:
            tokens -= cost
        else:
            wait = _seconds((cost - tokens) / self.rate)
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_LOCAL_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


class Budget:
    """`charge(sub, cost)`: None when admitted, else the seconds after which it would be (Retry-After)."""

    def __init__(
        self, per_minute: int, redis_url: str | None = None, prefix: str = "opencsp:budget:"
    ) -> None:
        self.per_minute = per_minute
        self.prefix = prefix
        self.local = LocalBuckets(per_minute)
        self._redis: Any = None
        self._script: Any = None
        self._warned = False
        if redis_url:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._script = self._redis.register_script(_SCRIPT)

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def charge(self, key: str, cost: int) -> int | None:
        if cost > self.per_minute:
            return 60  # never fits a minute's budget: the cost limit should be below the budget
        if self._script is None:
            return self.local.charge(key, cost)
        try:
            wait_ms = int(
                await self._script(
                    keys=[self.prefix + key], args=[self.per_minute, self.per_minute / 60.0, cost]
                )
            )
        except Exception as error:  # redis.RedisError, OSError, timeouts: the in-process bucket serves
            if not self._warned:
                self._warned = True
                logger.warning(
                    "the shared cost budget in Redis is unreachable (%s); using this process's", error
                )
            return self.local.charge(key, cost)
        if self._warned:
            self._warned = False
            logger.info("the shared cost budget in Redis is reachable again")
        return None if wait_ms <= 0 else _seconds(wait_ms / 1000)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
