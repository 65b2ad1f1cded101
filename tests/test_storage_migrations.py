"""Alembic migrations from an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage import Store, current_revision, head_revision, upgrade_to_head
from bot.storage.migrate import alembic_config
from bot.storage.models import Base
from tests._storage_db import db_url_fixture, pg_admin_fixture, store_fixture  # noqa: F401 (fixtures)

TABLES = {
    "analyses",
    "guild_settings",
    "user_optout",
    "alert_log",
    "speaker_stats",
    "feedback",
    "feedback_consent",
}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def _diff(conn: Connection) -> list:
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def _downgrade_base(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, "base")


async def test_upgrade_from_empty_creates_schema_matching_models(db_url):
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        assert await current_revision(engine) is None
        rev = await upgrade_to_head(engine)
        assert rev == head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == TABLES | {"alembic_version"}
            # The migrated schema is exactly what the models describe (no drift).
            assert await conn.run_sync(_diff) == []
            # No audio is ever stored: an analysis has exactly these columns.
            assert await conn.run_sync(_columns, "analyses") == {
                "id", "guild_id", "channel_id", "user_id", "message_id", "created_at",
                "label", "confidence", "probabilities", "model_version", "duration_s",
            }  # fmt: skip
        # Idempotent: a second start changes nothing.
        assert await upgrade_to_head(engine) == rev
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_up_again(db_url):
    engine = create_async_engine(db_url)
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade_base)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
        assert await current_revision(engine) is None
        assert await upgrade_to_head(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_store_start_migrates_and_reports_ready(db_url):
    st = Store(db_url)
    try:
        assert not st.ready
        await st.start()
        assert st.ready
        assert await current_revision(st.engine) == head_revision()
        await st.ping()
    finally:
        await st.close()
