"""Run the package's Alembic migrations programmatically (no ``alembic.ini``).

The Alembic environment lives in ``bot/storage/migrations`` (``env.py`` and
``versions/``). :func:`upgrade_to_head` runs ``alembic upgrade head`` through
Alembic's command API on an async connection via ``run_sync`` (Alembic
cookbook, "Using Asyncio with Alembic", connection sharing).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade_to_head"]

#: Folder of the Alembic environment shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant key of the PostgreSQL advisory lock serialising migrations
# when several bot processes start at once.
_PG_MIGRATION_LOCK = 4_046_771_204


def alembic_config() -> Config:
    """Return an Alembic :class:`~alembic.config.Config` for the package's migrations.

    Returns
    -------
    alembic.config.Config
        No ini file; ``script_location`` points at :data:`MIGRATIONS_DIR`.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """Return the newest migration revision id shipped with the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_to_head(engine: AsyncEngine) -> str:
    """Migrate the database to the newest schema (idempotent).

    Runs in one transaction (PostgreSQL and SQLite both have transactional
    DDL); on PostgreSQL an advisory lock serialises concurrent starts.

    Parameters
    ----------
    engine : sqlalchemy.ext.asyncio.AsyncEngine
        Engine of the target database.

    Returns
    -------
    str
        The revision the database is at afterwards (:func:`head_revision`).

    Raises
    ------
    sqlalchemy.exc.SQLAlchemyError, OSError
        When the database cannot be reached or a migration fails
        (:class:`bot.storage.Store` maps these to ``StoreUnavailableError``).
    """
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    return await current_revision(engine) or ""


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the database's Alembic revision, or ``None`` when never migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
