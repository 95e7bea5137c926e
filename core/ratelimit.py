"""One send rate for every worker: a sliding-log limiter.

With `REDIS_URL` set the log is a sorted set in Redis, updated by one Lua
script that reads Redis's own clock, so every thread, process and machine
shares `AWS_SES_RATE_LIMIT_PER_SECOND` and clock skew between machines does
not matter. Without Redis, one log per process (enough for one `qcluster`).

A sliding log (not fixed 1-second buckets) keeps every 1-second span, not
only every calendar second, under the limit. The window is a little longer
than a second (`EMAIL_RATE_WINDOW_SECONDS`, default 1.02) so the few
milliseconds between a grant and the request leaving never push a span over.
"""

from __future__ import annotations

import collections
import math
import random
import threading
import time
import uuid

import redis
from django.conf import settings

_lock = threading.Lock()
_limiters: dict[tuple[str, float, str, float], SendRateLimiter] = {}

# Returns {0, now} when a send was granted (now: Redis's clock, microseconds),
# else {microseconds until one may be, 0}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {0, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {math.max(1, tonumber(oldest[2]) + window - now), 0}
"""


def window_for(per_second: float, window_seconds: float) -> tuple[int, float]:
    """(sends, seconds) of the sliding window for a rate: 14/s -> 14 per 1.02 s,
    0.5/s -> 1 per 2.04 s."""
    if per_second <= 0:
        raise ValueError(f"the send rate must be positive, not {per_second}")
    limit = max(1, math.floor(per_second))
    return limit, window_seconds * limit / per_second


class SendRateLimiter:
    """Blocks each send until the shared window has room for it."""

    def __init__(
        self,
        *,
        per_second: float,
        key: str,
        redis_url: str = "",
        window_seconds: float = 1.02,
    ) -> None:
        self.per_second = per_second
        self.key = key
        self.limit, self.window = window_for(per_second, window_seconds)
        self._redis = None
        if redis_url:
            self._redis = redis.Redis.from_url(redis_url)
            self._script = self._redis.register_script(_ACQUIRE_LUA)
        self._log: collections.deque[float] = collections.deque()
        self._local = threading.Lock()
        self._ids = f"{uuid.uuid4().hex[:8]}-"
        self._n = 0

    def try_acquire(self) -> tuple[float, float]:
        """Take one send if the window has room: (0.0, when granted, epoch
        seconds); else (seconds to wait, 0.0)."""
        if self._redis is not None:
            with self._local:
                self._n += 1
                member = f"{self._ids}{self._n}"
            wait_us, granted_us = self._script(
                keys=[self.key], args=[int(self.window * 1_000_000), self.limit, member]
            )
            return int(wait_us) / 1_000_000, int(granted_us) / 1_000_000
        with self._local:
            now = time.monotonic()
            while self._log and self._log[0] <= now - self.window:
                self._log.popleft()
            if len(self._log) < self.limit:
                self._log.append(now)
                return 0.0, time.time()
            return max(self._log[0] + self.window - now, 0.0001), 0.0

    def acquire(self, *, timeout: float | None = None) -> float | None:
        """Wait for one send; returns when it was granted (epoch seconds, the
        limiter's clock), or None if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait, granted = self.try_acquire()
            if not wait:
                return granted
            # A little jitter so waiting workers do not all ask at once.
            wait += random.uniform(0, 0.002)
            if deadline is not None and time.monotonic() + wait > deadline:
                return None
            time.sleep(wait)

    def reset(self) -> None:
        if self._redis is not None:
            self._redis.delete(self.key)
        with self._local:
            self._log.clear()


def shared_limiter(*, per_second: float | None = None, key: str | None = None) -> SendRateLimiter:
    """The process's limiter for these settings (Redis-backed when REDIS_URL is set)."""
    rate = float(per_second if per_second is not None else settings.AWS_SES_RATE_LIMIT_PER_SECOND)
    redis_url = getattr(settings, "REDIS_URL", "") or ""
    prefix = getattr(settings, "CACHES", {}).get("default", {}).get("KEY_PREFIX") or "backoffice"
    name = f"{prefix}:ratelimit:{key or settings.EMAIL_RATE_LIMIT_KEY}"
    window = float(settings.EMAIL_RATE_WINDOW_SECONDS)
    cache_key = (redis_url, rate, name, window)
    with _lock:
        limiter = _limiters.get(cache_key)
        if limiter is None:
            limiter = SendRateLimiter(
                per_second=rate, key=name, redis_url=redis_url, window_seconds=window
            )
            _limiters[cache_key] = limiter
        return limiter


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most events that started within any `window`-second span: what the
    limiter promises to keep at or under its limit (tests and the bench check it)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
