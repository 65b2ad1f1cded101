"""Consent first: automatic analysis is off in a server until it is turned on (issue 14).

Tests that post voice notes in a server turn it on first, as a server manager
would with ``/settings analysis enabled:True`` (that command itself is tested
over the fake Discord in ``tests/test_bot_consent.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def allow_analysis(bot: Any, *guild_ids: int | str) -> None:
    """Turn automatic analysis on in ``guild_ids`` through the running bot's store."""
    for guild_id in guild_ids:
        settings = await bot.store.update_guild_settings(int(guild_id), auto_analyse=True)
        bot.known_settings[int(guild_id)] = settings


async def allow_analysis_in(database: str | Path, *guild_ids: int | str) -> None:
    """Turn automatic analysis on in ``guild_ids`` before a bot process starts.

    ``database``: a ``DATABASE_URL``, or the bot's ``DATA_DIR`` (its SQLite file ``ser.db``).
    """
    from bot.config import SQLITE_FILENAME
    from bot.storage import Store, resolve_database_url

    if isinstance(database, Path):
        database.mkdir(parents=True, exist_ok=True)
        url = resolve_database_url(None, database / SQLITE_FILENAME)
    else:
        url = resolve_database_url(database, Path("unused.db"))
    async with Store(url) as store:
        for guild_id in guild_ids:
            await store.update_guild_settings(int(guild_id), auto_analyse=True)
