"""Database fixtures for the storage tests: a throw-away SQLite file or PostgreSQL database.

Import the fixtures into a test module (``from tests._storage_db import
db_url_fixture, pg_admin_fixture, store_fixture``); they are registered as
``db_url``, ``pg_admin`` and ``store``. ``db_url`` is parametrised over
``["sqlite", "postgresql"]``.

PostgreSQL: a server on ``SER_TEST_PG_HOST:SER_TEST_PG_PORT`` (default
``127.0.0.1:5432``) reachable with trust authentication as ``postgres`` or
``root``, or as ``SER_TEST_PG_USER`` with ``SER_TEST_PG_PASSWORD`` (a role
allowed to create databases; see the CI script). Each test creates its own
database ``ser_test_<random>`` and drops it afterwards. If no server answers,
the PostgreSQL variants FAIL under ``CI=true`` and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from bot.storage import Store, sqlite_url

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST = os.environ.get("SER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SER_TEST_PG_PORT", "5432"))
_REASON: dict[str, str] = {}


def _candidates() -> list[dict[str, Any]]:
    users = [os.environ["SER_TEST_PG_USER"]] if os.environ.get("SER_TEST_PG_USER") else ["postgres", "root"]
    password = os.environ.get("SER_TEST_PG_PASSWORD") or None
    return [
        {"host": PG_HOST, "port": PG_PORT, "user": u, "password": password, "database": db}
        for u in users
        for db in dict.fromkeys(("postgres", "test", u))
    ]


async def _probe() -> tuple[dict[str, Any] | None, str]:
    errors = []
    for kw in _candidates():
        try:
            conn = await asyncpg.connect(**kw, timeout=3)
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next one"
            errors.append(f"{kw['user']}@{kw['database']}: {type(exc).__name__}: {exc}")
            continue
        try:
            can = await conn.fetchval("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        finally:
            await conn.close()
        if can:
            return kw, ""
        errors.append(f"{kw['user']}: may not create databases")
    return None, "; ".join(errors[:3])


@pytest.fixture(scope="session", name="pg_admin")
def pg_admin_fixture() -> dict[str, Any] | None:
    """Connection arguments of a PostgreSQL role that may create databases, or None."""
    kw, why = asyncio.run(_probe())
    if kw is None:
        _REASON["pg"] = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({why})"
    return kw


def require_pg(admin: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``admin``; when None, fail under CI and skip elsewhere."""
    if admin is not None:
        return admin
    reason = _REASON.get("pg", f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}")
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: PostgreSQL is required; .ci/run must start it)")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgresql"], name="db_url")
async def db_url_fixture(request: pytest.FixtureRequest, tmp_path, pg_admin) -> AsyncIterator[str]:
    """URL of an empty database: an SQLite file in ``tmp_path``, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "ser.db")
        return
    admin = require_pg(pg_admin)
    name = f"ser_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(**admin, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield URL.create(
            "postgresql+asyncpg",
            username=admin["user"],
            password=admin["password"],
            host=admin["host"],
            port=admin["port"],
            database=name,
        ).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(**admin, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(name="store")
async def store_fixture(db_url: str) -> AsyncIterator[Store]:
    """A started :class:`Store` on a fresh database (migrated to head)."""
    st = await Store.open(db_url)
    try:
        yield st
    finally:
        await st.close()
