"""Flood control for voice notes: a per-user cool-down and per-channel pacing of replies.

Two independent limits protect the bot and Discord's rate limits:

* :class:`UserCooldown` -- each user may have at most ``max_notes`` voice
  notes analysed per sliding window of ``window_s`` seconds
  (``SER_USER_MAX_NOTES`` / ``SER_USER_COOLDOWN_S``). A note over the limit
  is refused at once with :class:`CooldownError` (a short, polite answer)
  and is neither downloaded nor analysed. Together with the service's
  bounded queue (``SER_MAX_PENDING``, refused as "busy, try again") this
  keeps the work -- and the memory -- of a burst bounded.
* :class:`ReplyPacer` -- a token bucket per channel
  (``SER_CHANNEL_REPLY_BURST`` replies at once, then
  ``SER_CHANNEL_REPLIES_PER_S`` per second) that makes replies *wait*
  rather than run into HTTP 429. Discord documents per-route limits only
  through response headers (https://discord.com/developers/docs/topics/rate-limits),
  which discord.py obeys; the defaults (5 at once, 1 per second) follow the
  widely observed limit of 5 messages per 5 seconds per channel.

  A reply never waits longer than the caller's ``max_wait_s``: a reply that
  would is *dropped* (no token is taken, so it delays nobody). Refusals
  (cool-down, busy) pass the time one burst takes to drain
  (``burst / per_s``, 5 s at the defaults): a refusal queues behind at most
  one burst of replies and is dropped when the backlog is longer. In the
  burst of issue 13 (200 notes in one channel within 0.1 s), queued
  refusals were what kept 136 replies waiting a minute later.
  :meth:`ReplyPacer.close` (at shutdown) releases every waiting reply as
  dropped.

  The bucket reserves a token and computes the wait *before* waiting, which
  the drop decision needs; ``aiolimiter.AsyncLimiter`` can only say whether
  capacity is free now (``has_capacity``), not how long a queued
  ``acquire`` would wait, so it is not used here.

Both structures hold at most ``max_keys`` users/channels (least recently seen
ones are dropped first), so their memory is bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from ..common import UserFacingError

__all__ = ["CooldownError", "UserCooldown", "ReplyPacer"]


class CooldownError(UserFacingError):
    """A user sent more voice notes than the cool-down allows.

    Parameters
    ----------
    retry_after_s : float
        Seconds until the user's next note would be accepted (> 0).
    """

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"You're sending voice messages faster than I can listen. Please try again in {wait} s."
        )


class UserCooldown:
    """At most ``max_notes`` accepted notes per user in any window of ``window_s`` seconds.

    Parameters
    ----------
    max_notes : int
        Notes accepted per window (>= 1).
    window_s : float
        Length of the sliding window in seconds (> 0).
    max_keys : int, optional
        Users remembered at once (default 100 000); the least recently seen
        user is forgotten first, which can only make the limit more lenient.
    clock : callable, optional
        Monotonic clock in seconds (default :func:`time.monotonic`).

    Raises
    ------
    ValueError
        For a non-positive ``max_notes``, ``window_s`` or ``max_keys``.
    """

    def __init__(
        self,
        max_notes: int,
        window_s: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_notes < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("UserCooldown: max_notes, window_s and max_keys must be positive")
        self.max_notes = max_notes
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[int, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Users currently remembered."""
        return len(self._seen)

    def admit(self, user_id: int) -> None:
        """Count one note of ``user_id``, or refuse it.

        A refused note is not counted, so a user who keeps sending is let in
        again as soon as their oldest accepted note leaves the window.

        Raises
        ------
        CooldownError
            The user already had ``max_notes`` notes accepted in the window.
        """
        now = self._clock()
        stamps = self._seen.pop(user_id, None)
        if stamps is None:
            stamps = deque()
        while stamps and now - stamps[0] >= self.window_s:
            stamps.popleft()
        self._seen[user_id] = stamps  # most recently seen last
        if len(stamps) >= self.max_notes:
            raise CooldownError(self.window_s - (now - stamps[0]))
        stamps.append(now)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)


class ReplyPacer:
    """Token bucket per channel: replies wait for a token instead of meeting HTTP 429.

    Parameters
    ----------
    burst : int
        Replies a quiet channel may receive at once (bucket size, >= 1).
    per_s : float
        Tokens added per second per channel (> 0).
    max_keys : int, optional
        Channels remembered at once (default 10 000; least recently used
        dropped first -- a dropped channel starts again with a full bucket).
    clock : callable, optional
        Monotonic clock in seconds (default :func:`time.monotonic`).

    Raises
    ------
    ValueError
        For a non-positive ``burst``, ``per_s`` or ``max_keys``.
    """

    def __init__(
        self,
        burst: int,
        per_s: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_s <= 0 or max_keys < 1:
            raise ValueError("ReplyPacer: burst, per_s and max_keys must be positive")
        self.burst = burst
        self.per_s = per_s
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()  # channel -> (tokens, at)
        self._waiting = 0
        self._closed = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Replies currently waiting for their token (all channels)."""
        return self._waiting

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def reserve(self, channel_id: int, *, max_wait_s: float = math.inf) -> float | None:
        """Take a token for ``channel_id`` now; return how many seconds the reply must wait for it (>= 0).

        Tokens may go negative: waiting replies queue up in order of reservation.

        Parameters
        ----------
        channel_id : int
            The channel (or user, for direct messages) the reply goes to.
        max_wait_s : float, optional
            Longest acceptable wait in seconds (default: unbounded).

        Returns
        -------
        float or None
            Seconds to wait; ``None`` when the wait would exceed
            ``max_wait_s`` -- then no token is taken.
        """
        now = self._clock()
        tokens, at = self._buckets.pop(channel_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        delay = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_s
        if delay <= max_wait_s:
            tokens -= 1.0
        self._buckets[channel_id] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return delay if delay <= max_wait_s else None

    async def wait(self, channel_id: int, *, max_wait_s: float = math.inf) -> bool:
        """Wait until a reply may be sent in ``channel_id``, or drop it.

        Parameters
        ----------
        channel_id : int
            The channel (or user, for direct messages) the reply goes to.
        max_wait_s : float, optional
            Longest acceptable wait in seconds (``0``: only if a token is free now;
            default: unbounded).

        Returns
        -------
        bool
            ``True``: send now. ``False``: drop the reply -- it would have
            waited longer than ``max_wait_s``, or :meth:`close` was called
            before or while it waited.
        """
        if self._closed.is_set():
            return False
        delay = self.reserve(channel_id, max_wait_s=max_wait_s)
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

    def close(self) -> int:
        """Release every waiting reply as dropped; later :meth:`wait` calls drop at once.

        Returns
        -------
        int
            Replies that were waiting.
        """
        waiting = self._waiting
        self._closed.set()
        return waiting
