"""Voice notes in flight, kept in the broker's Redis so a restarted bot process answers them.

A bot process that stops (crash, deploy, SIGKILL) between receiving a voice
note and answering it would leave the note silently unanswered.  With a
broker (``SER_BROKER_URL``) each note being handled is recorded in the hash
``ser:inflight:<shard ids>`` (message id -> channel id) and removed once it
is answered (or deliberately left unanswered: opted out, channel off); an
answer dropped at shutdown keeps its entry.  The next process with the same
``SHARD_IDS`` answers every leftover once it is connected: with the
analysis if the workers finished it (the job id is the message id; results
are kept 120 s), else with a short "try again".  A crash between sending an
answer and removing its entry (one Redis round trip) can still double that
one answer.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["InflightNotes"]

log = logging.getLogger(__name__)


class InflightNotes:
    """The notes one shard group is handling, in a Redis hash.

    Parameters
    ----------
    redis : redis.asyncio.Redis
        The broker's connection pool.
    shard_ids : list of int or None
        This process's shards (``None``: unsharded or all shards); names the hash.
    """

    def __init__(self, redis: Any, shard_ids: list[int] | None) -> None:
        self.redis = redis
        self.key = "ser:inflight:" + (",".join(map(str, shard_ids)) if shard_ids else "all")

    async def add(self, message_id: int, channel_id: int) -> None:
        """Record a note before it is analysed (a broker outage only loses the record)."""
        try:
            await self.redis.hset(self.key, str(message_id), json.dumps({"channel": channel_id, "at": time.time()}))
        except Exception as exc:
            log.debug("in-flight record of %s not written: %s", message_id, type(exc).__name__)

    async def remove(self, message_id: int) -> None:
        """Forget a note that was answered (or deliberately not answered)."""
        try:
            await self.redis.hdel(self.key, str(message_id))
        except Exception as exc:
            log.debug("in-flight record of %s not removed: %s", message_id, type(exc).__name__)

    async def take_leftovers(self) -> list[tuple[int, int]]:
        """``(message id, channel id)`` of the notes a previous process left unanswered; removes them."""
        try:
            entries = await self.redis.hgetall(self.key)
            if entries:
                await self.redis.hdel(self.key, *entries.keys())
        except Exception as exc:
            log.warning("in-flight notes of a previous run not read: %s", type(exc).__name__)
            return []
        out = []
        for mid, raw in entries.items():
            out.append((int(mid), int(json.loads(raw)["channel"])))
        return out
