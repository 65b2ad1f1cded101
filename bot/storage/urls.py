"""Database URL helpers: SQLite file by default, PostgreSQL from ``DATABASE_URL``."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

__all__ = ["normalise_database_url", "resolve_database_url", "sqlite_url"]

_SYNC_TO_ASYNC = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """Return the async SQLAlchemy URL of an SQLite file.

    Parameters
    ----------
    path : str or os.PathLike
        Database file; relative paths are made absolute.

    Returns
    -------
    str
        ``sqlite+aiosqlite:////abs/path.db``.
    """
    return f"sqlite+aiosqlite:///{Path(path).expanduser().resolve()}"


def normalise_database_url(url: str | URL) -> URL:
    """Map a user-given database URL to its async driver.

    ``postgres://`` and ``postgresql://`` (as hosting services print them)
    become ``postgresql+asyncpg://``; ``sqlite://`` becomes
    ``sqlite+aiosqlite://``. URLs already naming an async driver pass through.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        The database URL.

    Returns
    -------
    sqlalchemy.engine.URL
        URL with an async driver.

    Raises
    ------
    ValueError
        When the URL cannot be parsed or names another database.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise ValueError("DATABASE_URL is not a valid database URL") from exc
    name = _SYNC_TO_ASYNC.get(parsed.drivername, parsed.drivername)
    if name not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(f"unsupported database driver {parsed.drivername!r}: use sqlite:///FILE or postgresql://...")
    return parsed.set(drivername=name)


def resolve_database_url(database_url: str | None, default_sqlite_path: str | os.PathLike[str]) -> URL:
    """Pick the database: ``database_url`` when given, else an SQLite file.

    Parameters
    ----------
    database_url : str or None
        Usually the ``DATABASE_URL`` environment variable; empty means unset.
    default_sqlite_path : str or os.PathLike
        SQLite file used when no URL is given (its folder is created).

    Returns
    -------
    sqlalchemy.engine.URL
        An async URL (see :func:`normalise_database_url`).
    """
    if database_url and database_url.strip():
        return normalise_database_url(database_url.strip())
    path = Path(default_sqlite_path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return normalise_database_url(sqlite_url(path))
