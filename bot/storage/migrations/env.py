"""Alembic environment of the bot's database (used programmatically).

:func:`bot.storage.migrate.upgrade_to_head` passes an open synchronous
connection (from ``AsyncConnection.run_sync``) in
``config.attributes["connection"]``. Without one (e.g. to autogenerate a new
revision with ``alembic.command.revision(bot.storage.migrate.alembic_config(),
autogenerate=True, message=...)``), the database named by ``-x url=...`` or
the ``DATABASE_URL`` environment variable is used.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage.models import Base
from bot.storage.urls import normalise_database_url

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL (or -x url=...) to run Alembic from the command line")
    return normalise_database_url(url).render_as_string(hide_password=False)


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    shared = config.attributes.get("connection")
    if shared is not None:
        _configure(shared)
    else:
        asyncio.run(_run_async())
