"""Per-user cool-downs and per-channel pacing shared by every bot process (shards), in Redis.

With several shard processes, a member in two servers served by two shards
would get the per-user quota twice, and two processes replying in one
channel (a DM channel reached through two shards) would each use the whole
burst.  These classes keep the same rules as :mod:`bot.cogs.emotion.limits`
(:class:`~bot.cogs.emotion.limits.UserCooldown`: ``max_notes`` per sliding
``window_s``; :class:`~bot.cogs.emotion.limits.ReplyPacer`: a token bucket of
``burst`` tokens refilled at ``per_s``), but the state lives in the broker's
Redis and each decision is one Lua script (atomic on the server; the clock
is Redis' ``TIME``, so the processes need no synchronised clocks).

Keys (they expire on their own): ``ser:cd:<user id>`` (a sorted set of
accept times, lives ``window_s``), ``ser:pace:<channel id>`` (a hash of tokens
and time, lives until the bucket is full again).

When Redis cannot be reached, each process falls back to its own local
limiter (the per-process behaviour of a single bot) and logs it once per
outage: a broker outage never refuses or holds back notes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from typing import Any

from .cogs.emotion.limits import CooldownError, ReplyPacer, UserCooldown

__all__ = ["SharedUserCooldown", "SharedReplyPacer"]

log = logging.getLogger(__name__)

# KEYS[1] user key; ARGV: max_notes, window_ms, member. Returns 0 (admitted) or ms until a slot frees.
_COOLDOWN_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

# KEYS[1] channel key; ARGV: burst, per_s, max_wait_ms (-1: unbounded).
# Returns the wait in ms (>= 0) with a token taken, or -1 (dropped, no token taken).
_PACE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local burst = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local max_wait = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * per_ms)
local delay = 0
if tokens < 1 then delay = (1 - tokens) / per_ms end
local result = -1
if max_wait < 0 or delay <= max_wait then
  tokens = tokens - 1
  result = delay
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / per_ms) + 1000)
return tostring(result)
"""


class _Fallback:
    """Log a Redis outage once, and its end once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning("shared %s: Redis unavailable (%s); using this process's own limits", self.what,
                        type(exc).__name__)  # fmt: skip

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.info("shared %s: Redis is back; limits are shared again", self.what)


class SharedUserCooldown:
    """:class:`~bot.cogs.emotion.limits.UserCooldown` across processes: ``max_notes`` per user per ``window_s``.

    Parameters
    ----------
    redis : redis.asyncio.Redis
        The broker's connection pool.
    max_notes : int
        Notes accepted per window (>= 1).
    window_s : float
        Length of the sliding window in seconds (> 0).
    prefix : str, optional
        Key prefix (default ``"ser:cd:"``).

    Raises
    ------
    ValueError
        For a non-positive ``max_notes`` or ``window_s``.
    """

    def __init__(self, redis: Any, max_notes: int, window_s: float, *, prefix: str = "ser:cd:") -> None:
        self.local = UserCooldown(max_notes, window_s)  # validates; used while Redis is down
        self.redis, self.max_notes, self.window_s, self.prefix = redis, max_notes, window_s, prefix
        self._script = redis.register_script(_COOLDOWN_LUA)
        self._fallback = _Fallback("cool-downs")

    async def admit(self, user_id: int) -> None:
        """Count one note of ``user_id`` in every process's window, or refuse it.

        Raises
        ------
        CooldownError
            The user already had ``max_notes`` notes accepted in the window (by any process).
        """
        try:
            wait_ms = await self._script(
                keys=[f"{self.prefix}{user_id}"], args=[self.max_notes, int(self.window_s * 1000), uuid.uuid4().hex]
            )  # fmt: skip
        except Exception as exc:  # redis.exceptions.RedisError, OSError: fall back to this process
            self._fallback.failed(exc)
            self.local.admit(user_id)
            return
        self._fallback.ok()
        if int(wait_ms) > 0:
            raise CooldownError(int(wait_ms) / 1000)


class SharedReplyPacer(ReplyPacer):
    """:class:`~bot.cogs.emotion.limits.ReplyPacer` whose buckets live in Redis (one per channel, all processes).

    Parameters
    ----------
    redis : redis.asyncio.Redis
        The broker's connection pool.
    burst, per_s : int, float
        As :class:`~bot.cogs.emotion.limits.ReplyPacer` (replies; replies per second).
    prefix : str, optional
        Key prefix (default ``"ser:pace:"``).
    """

    def __init__(self, redis: Any, burst: int, per_s: float, *, prefix: str = "ser:pace:") -> None:
        super().__init__(burst, per_s)
        self.redis, self.prefix = redis, prefix
        self._script = redis.register_script(_PACE_LUA)
        self._fallback = _Fallback("reply pacing")

    async def reserve_shared(self, channel_id: int, *, max_wait_s: float = math.inf) -> float | None:
        """:meth:`ReplyPacer.reserve` on the shared bucket (the local one while Redis is down)."""
        max_wait_ms = -1 if math.isinf(max_wait_s) else int(max_wait_s * 1000)
        try:
            result = await self._script(keys=[f"{self.prefix}{channel_id}"], args=[self.burst, self.per_s, max_wait_ms])
        except Exception as exc:
            self._fallback.failed(exc)
            return self.reserve(channel_id, max_wait_s=max_wait_s)
        self._fallback.ok()
        delay_ms = float(result)
        return None if delay_ms < 0 else delay_ms / 1000

    async def wait(self, channel_id: int, *, max_wait_s: float = math.inf) -> bool:
        """As :meth:`ReplyPacer.wait`, with the token taken from the shared bucket."""
        if self._closed.is_set():
            return False
        delay = await self.reserve_shared(channel_id, max_wait_s=max_wait_s)
        if delay is None:
            return False
        if delay > 0:
            self._waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
            finally:
                self._waiting -= 1
        return not self._closed.is_set()
