"""Checks run before the bot talks to Discord: writable data folders, the database, unknown variables.

Used at every start (:func:`first_unwritable`, :func:`unknown_ser_variables`)
and by ``ser-bot --check`` (:func:`run_checks`), which validates everything
an operator can get wrong and exits 0, 2 (settings, folders, database) or 3
(model) without connecting to Discord.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from bot.cogs.admin.settings import LifecycleSettings

    from .config import Settings

__all__ = [
    "CheckResult",
    "data_folders",
    "first_unwritable",
    "folder_problem",
    "database_problem",
    "unknown_ser_variables",
    "known_ser_variables",
    "run_checks",
]

#: ``SER_*`` variables read outside the settings classes (by the engine).
ENGINE_VARIABLES: frozenset[str] = frozenset({"SER_MODEL_HMAC_KEY", "SER_SILERO_MODEL"})
#: Prefixes of ``SER_*`` variables that belong to the test suite and CI (``tests/``, ``.ci/run``).
TEST_PREFIXES: tuple[str, ...] = ("SER_TEST_", "SER_PG_", "SER_RAVDESS_DIR")


def data_folders(settings: Settings, lifecycle: LifecycleSettings) -> list[tuple[str, Path]]:
    """Every folder the bot writes to, with the setting that names it.

    ``DATA_DIR`` always; the registry and the feature cache (under
    ``DATA_DIR`` unless ``SER_REGISTRY_DIR`` / ``SER_FEATURE_CACHE_DIR`` say
    otherwise); the folder of an SQLite ``DATABASE_URL``.
    """
    resolved = lifecycle.under(settings.data_dir)
    folders: list[tuple[str, Path]] = [("DATA_DIR", settings.data_dir)]
    folders.append(("SER_REGISTRY_DIR", resolved.ser_registry_dir))  # type: ignore[arg-type]
    folders.append(("SER_FEATURE_CACHE_DIR", resolved.ser_feature_cache_dir))  # type: ignore[arg-type]
    if settings.database_url is not None:
        from sqlalchemy.engine import make_url

        url = make_url(settings.database_url.get_secret_value())
        if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
            folders.append(("DATABASE_URL", Path(url.database).expanduser().parent))
    return folders


def folder_problem(path: Path) -> str | None:
    """Create ``path`` if needed and write (then delete) a file in it.

    Returns
    -------
    str or None
        ``None`` if a file could be written, else the reason (``strerror``).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".ser-write-test-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def first_unwritable(settings: Settings, lifecycle: LifecycleSettings) -> str | None:
    """The one line naming the first folder the bot cannot write, or ``None`` if all can be written."""
    for name, path in data_folders(settings, lifecycle):
        reason = folder_problem(path)
        if reason is not None:
            return f"{name} ({path}) is not writable: {reason}. Set {name} to a folder this user can write."
    return None


def known_ser_variables() -> frozenset[str]:
    """Names of every ``SER_*`` variable the bot or the engine reads."""
    from bot.cogs.admin.settings import LifecycleSettings

    from .config import Settings

    names = {name.upper() for name in Settings.model_fields} | {name.upper() for name in LifecycleSettings.model_fields}
    return frozenset(n for n in names if n.startswith("SER_")) | ENGINE_VARIABLES


def unknown_ser_variables(environ: Mapping[str, str], dotenv: Iterable[str] = ()) -> list[tuple[str, str | None]]:
    """``SER_*`` names in the environment (or ``.env``) that nothing reads, each with the closest known name.

    A misspelt setting (``SER_WORKER=4``) is otherwise silently ignored.

    Parameters
    ----------
    environ : mapping
        Usually ``os.environ``.
    dotenv : iterable of str
        Names from the ``.env`` file.

    Returns
    -------
    list of (str, str or None)
        Sorted unknown names with a suggestion (``None`` if nothing is close).
    """
    known = known_ser_variables()
    names = {n.upper() for n in (*environ.keys(), *dotenv)}
    unknown = sorted(n for n in names if n.startswith("SER_") and n not in known and not n.startswith(TEST_PREFIXES))
    return [(n, next(iter(difflib.get_close_matches(n, sorted(known), n=1, cutoff=0.75)), None)) for n in unknown]


async def database_problem(settings: Settings, *, migrate: bool = False) -> str | None:
    """Whether the database answers and has the newest schema.

    Parameters
    ----------
    settings : Settings
        ``DATABASE_URL`` (or the SQLite file in ``DATA_DIR``).
    migrate : bool
        Migrate it to the newest schema first (as the bot does at start).

    Returns
    -------
    str or None
        ``None`` when reachable and migrated, else one line (the URL's password never appears).
    """
    from bot.storage import resolve_database_url
    from bot.storage.migrate import current_revision, head_revision, upgrade_to_head
    from bot.storage.store import Store

    raw = settings.database_url.get_secret_value() if settings.database_url is not None else None
    url = resolve_database_url(raw, settings.sqlite_path)
    store = Store(url)
    where = store.url
    try:
        if migrate:
            await asyncio.wait_for(upgrade_to_head(store.engine), 60)
        current = await asyncio.wait_for(current_revision(store.engine), 15)
    except Exception as exc:  # unreachable, refused, wrong password, timeout ...
        return f"the database {where} cannot be reached ({type(exc).__name__})"
    finally:
        await store.close()
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return (f"the database {where} has no schema yet: start the bot once (it migrates at start) "
                "or run ser-bot --check --migrate")  # fmt: skip
    return f"the database {where} is at schema {current}, this version needs {head}: ser-bot --check --migrate"


@dataclass(frozen=True)
class CheckResult:
    """One line of ``ser-bot --check``: what was checked, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str
    exit_code: int = 2


def run_checks(
    settings: Settings,
    lifecycle: LifecycleSettings,
    *,
    model_problem: Callable[[Settings], str | None],
    migrate: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Everything ``ser-bot --check`` validates, in order; never connects to Discord.

    Parameters
    ----------
    settings, lifecycle : Settings, LifecycleSettings
        Already validated (invalid settings are reported before this).
    model_problem : callable
        Loads the model bundle as the bot would; ``None`` if it loads.
    migrate : bool
        Migrate the database first.
    environ : mapping, optional
        For the unknown-variable warning (default ``os.environ``).

    Returns
    -------
    list of CheckResult
        Failed folder and database checks carry exit code 2, the model 3;
        unknown variables are reported as passing warnings.
    """
    results = [CheckResult("settings", True, "every setting is valid")]
    for name, path in data_folders(settings, lifecycle):
        reason = folder_problem(path)
        results.append(CheckResult(name, reason is None, f"{path} is writable" if reason is None
                                   else f"{path} is not writable: {reason}"))  # fmt: skip
    problem = asyncio.run(database_problem(settings, migrate=migrate))
    results.append(CheckResult("database", problem is None, problem or "reachable and migrated"))
    problem = model_problem(settings)
    results.append(CheckResult("SER_MODEL_PATH", problem is None, problem or f"{settings.ser_model_path} loads", 3))
    for name, suggestion in unknown_ser_variables(environ if environ is not None else os.environ):
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        results.append(CheckResult(name, True, f"warning: unknown variable, ignored{hint}"))
    return results
