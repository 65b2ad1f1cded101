"""The bot's data store: one typed async facade over SQLAlchemy 2.

Every public method runs in its own short transaction and either succeeds or
raises :class:`~bot.storage.errors.StoreUnavailableError` (database down,
refused, timed out, unopenable) -- quickly: connecting is bounded by
``connect_timeout_s``, PostgreSQL statements by ``statement_timeout_s``, SQLite
lock waits by ``sqlite_busy_timeout_s``, and for ``retry_after_s`` seconds after
such a failure further calls fail at once without touching the network.

Migrations run at :meth:`Store.start`; if the database is down then, they are
retried by the first call after it comes back, so the bot can start without
its database and keep answering voice notes.

Concurrency: alert cool-downs (:meth:`Store.should_alert`) are one atomic
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement, so concurrent calls
for the same user and channel yield exactly one alert; speaker statistics lock
their row (by a no-op upsert) before the read-modify-write.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Float,
    String,
    delete,
    distinct,
    event,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.insights.compute import (
    ChannelShare,
    EmotionInsights,
    Scope,
    Window,
    bucket_starts,
    build_insights,
    build_series,
    order_labels,
    rank_channels,
    window_bounds,
)

from .errors import StoreError, StoreUnavailableError
from .migrate import upgrade_to_head
from .models import (
    DEFAULT_RETENTION_DAYS,
    AlertLog,
    Analysis,
    Feedback,
    FeedbackConsent,
    GuildSettingsRow,
    SpeakerStats,
    UserOptOut,
    UTCDateTime,
)
from .records import (
    MAX_ALERT_COOLDOWN_S,
    DeletionCounts,
    FeedbackSample,
    GuildSettings,
    PurgeCounts,
    UserDataSummary,
    frozen_ids,
    validate_settings,
)
from .stats import RunningStats, merge_batch
from .urls import normalise_database_url

__all__ = ["UNSET", "Store"]

log = logging.getLogger("bot.storage")


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: Marker for "leave this setting unchanged" where ``None`` is a valid value.
UNSET = _Unset.UNSET

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # PG connection errors; SQLite: see _SQLITE_UNAVAILABLE
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # pool checkout
    OSError,  # ConnectionRefusedError and friends, raised by asyncpg on connect
    TimeoutError,  # asyncio.TimeoutError (connect / command timeouts)
)
# SQLite raises OperationalError for SQL mistakes too ("no such table"); only
# these messages mean the file cannot be used right now.
_SQLITE_UNAVAILABLE = ("unable to open", "locked", "busy", "disk i/o", "readonly", "read-only", "disk is full")


def _is_unavailable(exc: BaseException, dialect: str) -> bool:
    if dialect == "sqlite" and isinstance(exc, sa_exc.OperationalError):
        return exc.connection_invalidated or any(m in str(exc.orig).lower() for m in _SQLITE_UNAVAILABLE)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE_ERRORS)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def _check_id(name: str, value: int | None, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ValueError(f"{name} must be a positive 64-bit Discord id, got {value!r}")


class Store:
    """Async repository of analyses, settings, opt-outs, alerts, speaker stats, feedback.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        Database URL: ``sqlite+aiosqlite:///FILE`` (default choice, see
        :func:`bot.storage.resolve_database_url`) or
        ``postgresql+asyncpg://user:pw@host:port/db``; ``postgres://``,
        ``postgresql://`` and ``sqlite://`` are mapped to those drivers.
    connect_timeout_s : float
        Upper bound of one connection attempt, seconds (PostgreSQL).
    statement_timeout_s : float
        Upper bound of one statement, seconds (PostgreSQL ``command_timeout``).
    sqlite_busy_timeout_s : float
        How long SQLite waits for another writer's lock, seconds.
    retry_after_s : float
        After the database was found unavailable, calls during this many
        seconds raise :class:`StoreUnavailableError` at once.
    pool_size : int
        Connections kept open (PostgreSQL).

    Raises
    ------
    ValueError
        For an unsupported URL.

    Notes
    -----
    All methods are coroutines to be awaited on the bot's event loop; none
    blocks it (drivers: aiosqlite, asyncpg). Every ``now`` argument defaults
    to the current UTC time and must be timezone-aware when given.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        connect_timeout_s: float = 3.0,
        statement_timeout_s: float = 10.0,
        sqlite_busy_timeout_s: float = 5.0,
        retry_after_s: float = 2.0,
        pool_size: int = 5,
    ) -> None:
        self._url = normalise_database_url(url)
        self.connect_timeout_s = float(connect_timeout_s)
        self.statement_timeout_s = float(statement_timeout_s)
        self.retry_after_s = float(retry_after_s)
        self._engine = self._create_engine(self._url, pool_size, float(sqlite_busy_timeout_s))
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._migrated = False
        self._migrate_lock = asyncio.Lock()
        self._down_until = 0.0  # time.monotonic() before which calls fail fast
        self._optout_cache: set[int] = set()
        #: Database errors since the store was made (unreachable, failed statements, failed migrations);
        #: exported as ``ser_database_errors_total`` by :mod:`bot.health`.
        self.errors = 0

    # ------------------------------------------------------------------ set-up

    def _create_engine(self, url: URL, pool_size: int, busy_timeout_s: float) -> AsyncEngine:
        if url.get_backend_name() == "sqlite":
            engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": busy_timeout_s})

            @event.listens_for(engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            return engine
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=self.connect_timeout_s,
            pool_pre_ping=True,
            hide_parameters=True,  # no user ids or feature bytes in error messages and logs
            connect_args={
                "timeout": self.connect_timeout_s,
                "command_timeout": self.statement_timeout_s,
                "server_settings": {"application_name": "ser-bot"},
            },
        )

    @classmethod
    async def open(cls, url: str | URL, **kwargs: Any) -> Store:
        """Create a store and migrate its database (see :meth:`start`).

        Parameters
        ----------
        url : str or sqlalchemy.engine.URL
            Database URL.
        **kwargs
            Passed to :class:`Store`.

        Returns
        -------
        Store
            Started store; close it with :meth:`close` (or ``async with``).

        Raises
        ------
        StoreUnavailableError
            When the database cannot be reached (the engine is disposed).
        """
        store = cls(url, **kwargs)
        try:
            await store.start()
        except BaseException:
            await store.close()
            raise
        return store

    async def start(self) -> None:
        """Run the migrations up to the newest schema and load the opt-out list.

        Raises
        ------
        StoreUnavailableError
            When the database cannot be reached. The store stays usable: the
            migrations are retried by the next call after ``retry_after_s``.
        """
        await self._ensure_ready(force=True)

    async def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Database URL with the password masked (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._url.get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        """The underlying SQLAlchemy engine (for tests and maintenance)."""
        return self._engine

    @property
    def ready(self) -> bool:
        """Whether the migrations have run in this process."""
        return self._migrated

    @property
    def available(self) -> bool:
        """Whether the database was migrated and is not marked down after a failure (no I/O)."""
        return self._migrated and time.monotonic() >= self._down_until

    async def ping(self) -> None:
        """Check that the database answers.

        Raises
        ------
        StoreUnavailableError
            When it does not.
        """
        async with self._session() as s:
            await s.execute(select(literal(1)))

    # --------------------------------------------------------------- plumbing

    def _unavailable(self, exc: BaseException, what: str) -> StoreUnavailableError:
        self.errors += 1
        self._down_until = time.monotonic() + self.retry_after_s
        log.warning("database %s unavailable during %s: %s", self.url, what, type(exc).__name__)
        detail = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        return StoreUnavailableError(f"database unavailable during {what}: {type(exc).__name__}: {detail}")

    def _fail_fast(self) -> None:
        if time.monotonic() < self._down_until:
            raise StoreUnavailableError("database was unavailable moments ago; not retrying yet")

    async def _ensure_ready(self, *, force: bool = False) -> None:
        if self._migrated:
            return
        if not force:
            self._fail_fast()
        async with self._migrate_lock:
            if self._migrated:
                return
            try:
                revision = await upgrade_to_head(self._engine)
                async with self._sessions() as s:
                    ids = (await s.scalars(select(UserOptOut.user_id))).all()
            except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
                if _is_unavailable(exc, self.dialect):
                    raise self._unavailable(exc, "migration") from exc
                self.errors += 1
                raise StoreError(f"migration failed: {type(exc).__name__}: {exc}") from exc
            self._optout_cache = set(ids)
            self._migrated = True
            log.info("database %s at schema revision %s", self.url, revision)

    @asynccontextmanager
    async def _session(self, what: str = "query") -> AsyncIterator[AsyncSession]:
        """One transaction; errors mapped to :class:`StoreError` subclasses."""
        await self._ensure_ready()
        self._fail_fast()
        try:
            async with self._sessions.begin() as session:
                yield session
        except StoreError:
            raise
        except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            if _is_unavailable(exc, self.dialect):
                raise self._unavailable(exc, what) from exc
            detail = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
            self.errors += 1
            raise StoreError(f"{what} failed: {type(exc).__name__}: {detail}") from exc

    def _insert(self, model: type[Any]) -> Any:
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(model)

    # ------------------------------------------------------------- analyses

    async def record_analysis(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        message_id: int,
        label: str,
        confidence: float,
        probabilities: Mapping[str, float],
        model_version: str,
        duration_s: float,
        created_at: datetime | None = None,
    ) -> int | None:
        """Store one analysis of a voice note (never its audio).

        The insert and the opt-out check are one statement
        (``INSERT ... SELECT ... WHERE NOT EXISTS (opt-out)``), so a user who
        opted out is never stored, even when opting out while their note is
        being analysed.

        Parameters
        ----------
        guild_id : int or None
            Guild of the message; ``None`` for a direct message.
        channel_id, user_id, message_id : int
            Discord ids of the channel (or thread), author and message.
        label : str
            Predicted emotion.
        confidence : float
            Probability of ``label``, 0..1.
        probabilities : mapping of str to float
            Probability of every label, 0..1.
        model_version : str
            Version (or name) of the model that predicted.
        duration_s : float
            Length of the voice note, seconds.
        created_at : datetime, optional
            Time of analysis (UTC-aware); default now.

        Returns
        -------
        int or None
            Id of the new row, or ``None`` when the user has opted out.

        Raises
        ------
        ValueError
            For an invalid id, a confidence outside 0..1 or a negative duration.
        StoreUnavailableError
            When the database is unreachable.
        """
        _check_id("guild_id", guild_id, nullable=True)
        for name, value in (("channel_id", channel_id), ("user_id", user_id), ("message_id", message_id)):
            _check_id(name, value)
        if not 0.0 <= float(confidence) <= 1.0:
            raise ValueError(f"confidence must be within 0..1, got {confidence}")
        if not float(duration_s) >= 0.0:
            raise ValueError(f"duration_s must be >= 0, got {duration_s}")
        probs = {str(k): float(v) for k, v in probabilities.items()}
        when = _utc(created_at)
        row = select(
            literal(guild_id, BigInteger),
            literal(channel_id, BigInteger),
            literal(user_id, BigInteger),
            literal(message_id, BigInteger),
            literal(when, UTCDateTime()),
            literal(str(label), String(32)),
            literal(float(confidence), Float),
            literal(probs, JSON),
            literal(str(model_version), String(128)),
            literal(float(duration_s), Float),
        ).where(~exists().where(UserOptOut.user_id == user_id))
        cols = [
            "guild_id",
            "channel_id",
            "user_id",
            "message_id",
            "created_at",
            "label",
            "confidence",
            "probabilities",
            "model_version",
            "duration_s",
        ]
        stmt = Analysis.__table__.insert().from_select(cols, row).returning(Analysis.__table__.c.id)
        async with self._session("record_analysis") as s:
            new_id = (await s.execute(stmt)).scalar_one_or_none()
        if new_id is None:
            self._optout_cache.add(user_id)
        return new_id

    # --------------------------------------------------------------- privacy

    async def is_opted_out(self, user_id: int) -> bool:
        """Whether the user opted out (then: never analyse, never store).

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable; then :meth:`known_opted_out`
            gives the last known answer.
        """
        async with self._session("is_opted_out") as s:
            found = await s.scalar(select(UserOptOut.user_id).where(UserOptOut.user_id == user_id))
        if found is None:
            self._optout_cache.discard(user_id)
            return False
        self._optout_cache.add(user_id)
        return True

    def known_opted_out(self, user_id: int) -> bool:
        """Last known opt-out state, without the database (never raises).

        The set is loaded at start and kept up to date by every call that
        reads or changes a user's opt-out. Use it when :meth:`is_opted_out`
        raises :class:`StoreUnavailableError`.
        """
        return user_id in self._optout_cache

    async def opt_out(self, user_id: int, *, now: datetime | None = None) -> bool:
        """Opt a user out, in every guild (idempotent). Stored data is kept; see :meth:`delete_user_data`.

        Returns
        -------
        bool
            ``True`` if the user was not opted out before.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        _check_id("user_id", user_id)
        stmt = (
            self._insert(UserOptOut)
            .values(user_id=user_id, created_at=_utc(now))
            .on_conflict_do_nothing(index_elements=["user_id"])
            .returning(UserOptOut.user_id)
        )
        async with self._session("opt_out") as s:
            inserted = (await s.execute(stmt)).first() is not None
        self._optout_cache.add(user_id)
        return inserted

    async def opt_in(self, user_id: int) -> bool:
        """Reverse :meth:`opt_out`.

        Returns
        -------
        bool
            ``True`` if the user had opted out.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        async with self._session("opt_in") as s:
            result = await s.execute(delete(UserOptOut).where(UserOptOut.user_id == user_id))
        self._optout_cache.discard(user_id)
        return bool(result.rowcount)

    async def delete_user_data(self, user_id: int) -> DeletionCounts:
        """Delete every stored row about a user, in one transaction.

        Deletes their analyses, feedback, feedback consent, speaker statistics
        and alert cool-down rows, in every guild. The opt-out marker is kept
        (deleting one's data does not opt one back in).

        Returns
        -------
        DeletionCounts
            Rows deleted per table.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable (nothing is deleted).
        """
        async with self._session("delete_user_data") as s:
            counts = {}
            for name, model in (
                ("analyses", Analysis),
                ("feedback", Feedback),
                ("feedback_consent", FeedbackConsent),
                ("speaker_stats", SpeakerStats),
                ("alert_log", AlertLog),
            ):
                res = await s.execute(delete(model).where(model.user_id == user_id))
                counts[name] = int(res.rowcount or 0)
        return DeletionCounts(**counts)

    async def user_summary(self, user_id: int) -> UserDataSummary:
        """What is stored about a user, across all guilds (``/privacy show``).

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        a = Analysis
        async with self._session("user_summary") as s:
            opted_at = await s.scalar(select(UserOptOut.created_at).where(UserOptOut.user_id == user_id))
            by_label = dict(
                (await s.execute(select(a.label, func.count()).where(a.user_id == user_id).group_by(a.label))).all()
            )
            first, last, guilds, dms = (
                await s.execute(
                    select(
                        func.min(a.created_at),
                        func.max(a.created_at),
                        func.count(distinct(a.guild_id)),
                        func.count().filter(a.guild_id.is_(None)),
                    ).where(a.user_id == user_id)
                )
            ).one()
            n_feedback = await s.scalar(select(func.count()).where(Feedback.user_id == user_id))
            consent = await s.scalar(select(FeedbackConsent.consent).where(FeedbackConsent.user_id == user_id))
            n_stats = await s.scalar(select(func.count()).where(SpeakerStats.user_id == user_id))
            n_alerts = await s.scalar(select(func.count()).where(AlertLog.user_id == user_id))
        # min()/max() lose the column type on some dialects: normalise to aware UTC.
        first = _as_utc(first)
        last = _as_utc(last)
        ordered = {lab: int(by_label[lab]) for lab in order_labels(by_label)}
        return UserDataSummary(
            user_id=user_id,
            opted_out_at=opted_at,
            analyses=sum(ordered.values()),
            analyses_by_label=ordered,
            guilds=int(guilds or 0),
            direct_messages=int(dms or 0),
            first_analysis_at=first,
            last_analysis_at=last,
            feedback=int(n_feedback or 0),
            feedback_consent=consent,
            speaker_stats=int(n_stats or 0),
            alert_log=int(n_alerts or 0),
        )

    async def delete_guild_data(self, guild_id: int) -> int:
        """Delete a guild's analyses, settings and alert rows (e.g. when the bot leaves it).

        Returns
        -------
        int
            Rows deleted.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        total = 0
        async with self._session("delete_guild_data") as s:
            for model in (Analysis, AlertLog, GuildSettingsRow):
                res = await s.execute(delete(model).where(model.guild_id == guild_id))
                total += int(res.rowcount or 0)
        return total

    async def delete_departed_guilds(self, present_guild_ids: Iterable[int]) -> tuple[int, int]:
        """Delete the analyses, settings and alert rows of every guild not in ``present_guild_ids``.

        What :meth:`delete_guild_data` does for one guild the bot leaves, for
        the guilds it left while it was offline or while the database was
        down (so ``on_guild_remove`` could not delete). Rows without a guild
        (direct messages) are never touched. Only call it with the complete
        list of the bot's guilds, i.e. after the gateway's READY: with a
        partial list it deletes the data of guilds the bot is still in.

        Parameters
        ----------
        present_guild_ids : iterable of int
            Every guild the bot is in (unavailable ones included).

        Returns
        -------
        tuple of int
            ``(guilds, rows)``: departed guilds that had data, rows deleted.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        present = {int(g) for g in present_guild_ids}
        models = (Analysis, AlertLog, GuildSettingsRow)
        rows = 0
        async with self._session("delete_departed_guilds") as s:
            known: set[int] = set()
            for model in models:  # DISTINCT on analyses uses ix_analyses_guild_created
                known.update(await s.scalars(select(model.guild_id).where(model.guild_id.is_not(None)).distinct()))
            gone = sorted(known - present)
            for i in range(0, len(gone), 500):  # bounded IN lists
                chunk = gone[i : i + 500]
                for model in models:
                    res = await s.execute(delete(model).where(model.guild_id.in_(chunk)))
                    rows += int(res.rowcount or 0)
        return len(gone), rows

    # --------------------------------------------------------------- settings

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """A guild's settings; defaults for a guild that never changed any.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        async with self._session("get_guild_settings") as s:
            row = await s.get(GuildSettingsRow, guild_id)
        return _settings_from_row(guild_id, row)

    async def update_guild_settings(
        self,
        guild_id: int,
        *,
        auto_analyse: bool | None = None,
        allowed_channels: Iterable[int] | None = None,
        denied_channels: Iterable[int] | None = None,
        reply_mode: str | None = None,
        modlog_channel_id: int | None | _Unset = UNSET,
        alert_emotions: Iterable[str] | None = None,
        alert_threshold: float | None = None,
        alert_cooldown_s: int | None = None,
        retention_days: int | None = None,
        now: datetime | None = None,
    ) -> GuildSettings:
        """Change some of a guild's settings; arguments left out stay as they are.

        Only the given columns are written (one ``UPDATE``), so concurrent
        changes of different settings do not overwrite each other.

        Parameters
        ----------
        guild_id : int
            The guild.
        auto_analyse : bool, optional
            Analyse voice notes automatically.
        allowed_channels, denied_channels : iterable of int, optional
            Whole new lists (empty allow list = every channel).
        reply_mode : {"reply", "dm"}, optional
            Public reply or DM to the speaker.
        modlog_channel_id : int or None, optional
            Mod-log channel; pass ``None`` to disable alerts, leave out (``UNSET``)
            to keep.
        alert_emotions : iterable of str, optional
            Labels that alert.
        alert_threshold : float, optional
            Confidence 0..1 from which a note alerts.
        alert_cooldown_s : int, optional
            Seconds, 0..86400.
        retention_days : int, optional
            Days, 1..3650.
        now : datetime, optional
            Time of the change (UTC-aware).

        Returns
        -------
        GuildSettings
            The settings after the change.

        Raises
        ------
        ValueError
            For out-of-range values (nothing is written).
        StoreUnavailableError
            When the database is unreachable.
        """
        _check_id("guild_id", guild_id)
        changes: dict[str, Any] = {}
        if auto_analyse is not None:
            changes["auto_analyse"] = bool(auto_analyse)
        if allowed_channels is not None:
            changes["allowed_channels"] = sorted(frozen_ids(allowed_channels))
        if denied_channels is not None:
            changes["denied_channels"] = sorted(frozen_ids(denied_channels))
        if reply_mode is not None:
            changes["reply_mode"] = reply_mode
        if modlog_channel_id is not UNSET:
            _check_id("modlog_channel_id", modlog_channel_id, nullable=True)
            changes["modlog_channel_id"] = modlog_channel_id
        if alert_emotions is not None:
            changes["alert_emotions"] = list(dict.fromkeys(str(e).strip().lower() for e in alert_emotions))
        if alert_threshold is not None:
            changes["alert_threshold"] = float(alert_threshold)
        if alert_cooldown_s is not None:
            changes["alert_cooldown_s"] = int(alert_cooldown_s)
        if retention_days is not None:
            changes["retention_days"] = int(retention_days)
        # Validate the changed values against the same rules as a whole settings object.
        probe = {k: v for k, v in changes.items() if k not in ("allowed_channels", "denied_channels")}
        if "alert_emotions" in probe:
            probe["alert_emotions"] = tuple(probe["alert_emotions"])
        validate_settings(GuildSettings(guild_id, **probe))
        when = _utc(now)
        defaults = _settings_to_columns(GuildSettings(guild_id))
        ensure = (
            self._insert(GuildSettingsRow)
            .values(guild_id=guild_id, updated_at=when, **defaults)
            .on_conflict_do_nothing(index_elements=["guild_id"])
        )
        async with self._session("update_guild_settings") as s:
            await s.execute(ensure)
            await s.execute(
                update(GuildSettingsRow).where(GuildSettingsRow.guild_id == guild_id).values(updated_at=when, **changes)
            )
            row = await s.get(GuildSettingsRow, guild_id, populate_existing=True)
        return _settings_from_row(guild_id, row)

    # ----------------------------------------------------------------- alerts

    async def should_alert(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        label: str,
        confidence: float,
        *,
        now: datetime | None = None,
        settings: GuildSettings | None = None,
    ) -> bool:
        """Decide whether a voice note raises a mod-log alert, and claim the cool-down.

        True when the guild has a mod-log channel, ``label`` is one of its
        alert emotions, ``confidence >= alert_threshold``, and no alert was
        raised for this user in this channel during the last
        ``alert_cooldown_s`` seconds. Returning True records ``now`` as the
        last alert, in the same atomic statement
        (``INSERT ... ON CONFLICT DO UPDATE ... WHERE last_alert_at <= now - cool-down``),
        so of several concurrent calls inside one cool-down exactly one gets True.

        Parameters
        ----------
        guild_id, channel_id, user_id : int
            Where and who.
        label : str
            Predicted emotion.
        confidence : float
            Its probability, 0..1.
        now : datetime, optional
            Time of the note (UTC-aware); default now.
        settings : GuildSettings, optional
            The guild's settings if already fetched (saves a query).

        Returns
        -------
        bool
            Whether to post the alert now.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        s_ = settings if settings is not None else await self.get_guild_settings(guild_id)
        if not s_.crosses_alert(label, confidence):
            return False
        when = _utc(now)
        cutoff = when - timedelta(seconds=s_.alert_cooldown_s)
        table = AlertLog.__table__
        ins = self._insert(AlertLog).values(
            guild_id=guild_id, channel_id=channel_id, user_id=user_id, last_alert_at=when
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["guild_id", "channel_id", "user_id"],
            set_={"last_alert_at": ins.excluded.last_alert_at},
            where=table.c.last_alert_at <= cutoff,
        ).returning(table.c.user_id)
        async with self._session("should_alert") as s:
            claimed = (await s.execute(stmt)).first() is not None
        return claimed

    # -------------------------------------------------------------- retention

    async def purge_expired(self, *, now: datetime | None = None) -> PurgeCounts:
        """Delete rows older than each guild's retention (the background task).

        Analyses and non-consented feedback older than the guild's
        ``retention_days`` (default 30 for guilds without settings and for
        direct messages), and alert cool-down rows older than the longest
        possible cool-down (one day), are deleted. Consented feedback and
        speaker statistics are kept until the user deletes their data.

        Parameters
        ----------
        now : datetime, optional
            Reference time (UTC-aware).

        Returns
        -------
        PurgeCounts
            Rows deleted.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        when = _utc(now)
        gs = GuildSettingsRow
        n_analyses = n_feedback = 0
        async with self._session("purge_expired") as s:
            custom_days = (
                await s.scalars(select(gs.retention_days).where(gs.retention_days != DEFAULT_RETENTION_DAYS).distinct())
            ).all()
            custom_guilds = select(gs.guild_id).where(gs.retention_days != DEFAULT_RETENTION_DAYS)
            plans: list[tuple[int, ColumnElement[bool], ColumnElement[bool]]] = [
                (
                    DEFAULT_RETENTION_DAYS,
                    or_(Analysis.guild_id.is_(None), Analysis.guild_id.not_in(custom_guilds)),
                    or_(Feedback.guild_id.is_(None), Feedback.guild_id.not_in(custom_guilds)),
                )
            ]
            for days in custom_days:
                guilds = select(gs.guild_id).where(gs.retention_days == days)
                plans.append((int(days), Analysis.guild_id.in_(guilds), Feedback.guild_id.in_(guilds)))
            for days, in_analyses, in_feedback in plans:
                cutoff = when - timedelta(days=days)
                res = await s.execute(delete(Analysis).where(in_analyses, Analysis.created_at < cutoff))
                n_analyses += int(res.rowcount or 0)
                res = await s.execute(
                    delete(Feedback).where(in_feedback, Feedback.consent.is_(False), Feedback.created_at < cutoff)
                )
                n_feedback += int(res.rowcount or 0)
            res = await s.execute(
                delete(AlertLog).where(AlertLog.last_alert_at < when - timedelta(seconds=MAX_ALERT_COOLDOWN_S))
            )
            n_alerts = int(res.rowcount or 0)
        if n_analyses or n_feedback or n_alerts:
            log.info("purged %d analyses, %d feedback, %d alert rows", n_analyses, n_feedback, n_alerts)
        return PurgeCounts(analyses=n_analyses, feedback=n_feedback, alert_log=n_alerts)

    # --------------------------------------------------------------- insights

    def _bucket_expr(self, bucket: str) -> ColumnElement[str]:
        col = Analysis.created_at
        if self.dialect == "postgresql":
            fmt = "YYYY-MM-DD HH24" if bucket == "hour" else "YYYY-MM-DD"
            # literal_column: identical SQL text in SELECT and GROUP BY (no bind parameters).
            return func.to_char(func.timezone(literal_column("'UTC'"), col), literal_column(f"'{fmt}'"), type_=String)
        # SQLite stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff" text.
        n = 13 if bucket == "hour" else 10
        return func.substr(col, literal_column("1"), literal_column(str(n)), type_=String)

    @staticmethod
    def _scope_where(scope: Scope, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [
            Analysis.guild_id == scope.guild_id,
            Analysis.created_at >= since,
            Analysis.created_at < until,
        ]
        if scope.channel_id is not None:
            conds.append(Analysis.channel_id == scope.channel_id)
        if scope.user_id is not None:
            conds.append(Analysis.user_id == scope.user_id)
        if scope.channel_ids is not None:
            conds.append(Analysis.channel_id.in_(sorted(scope.channel_ids)))
        return conds

    async def _label_counts(self, s: AsyncSession, where: Sequence[ColumnElement[bool]]) -> list[tuple[str, int]]:
        rows = await s.execute(select(Analysis.label, func.count()).where(*where).group_by(Analysis.label))
        return [(str(lab), int(n)) for lab, n in rows.all()]

    async def _bucket_rows(
        self, s: AsyncSession, where: Sequence[ColumnElement[bool]], bucket: str
    ) -> list[tuple[str, str, int]]:
        key = self._bucket_expr(bucket).label("bucket")
        rows = await s.execute(select(key, Analysis.label, func.count()).where(*where).group_by(key, Analysis.label))
        return [(str(k), str(lab), int(n)) for k, lab, n in rows.all()]

    async def _channel_rows(self, s: AsyncSession, where: Sequence[ColumnElement[bool]]) -> list[tuple[int, str, int]]:
        rows = await s.execute(
            select(Analysis.channel_id, Analysis.label, func.count())
            .where(*where)
            .group_by(Analysis.channel_id, Analysis.label)
        )
        return [(int(c), str(lab), int(n)) for c, lab, n in rows.all()]

    async def count_analysed(self, scope: Scope, window: Window, *, now: datetime | None = None) -> int:
        """Number of notes analysed in the scope during the window.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        since, until = window_bounds(window, _utc(now))
        async with self._session("count_analysed") as s:
            n = await s.scalar(
                select(func.count()).select_from(Analysis).where(*self._scope_where(scope, since, until))
            )
        return int(n or 0)

    async def emotion_distribution(
        self, scope: Scope, window: Window, *, now: datetime | None = None
    ) -> dict[str, int]:
        """Notes per label in the scope during the window (labels in emotion order).

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        since, until = window_bounds(window, _utc(now))
        async with self._session("emotion_distribution") as s:
            counts = dict(await self._label_counts(s, self._scope_where(scope, since, until)))
        return {lab: counts[lab] for lab in order_labels(counts)}

    async def counts_per_bucket(
        self, scope: Scope, window: Window, *, now: datetime | None = None
    ) -> tuple[list[datetime], dict[str, tuple[int, ...]]]:
        """Notes per label per UTC hour (24 h window) or day (7 d, 30 d).

        Returns
        -------
        starts : list of datetime
            Bucket starts, shape ``(n_buckets,)``.
        series : dict of str to tuple of int
            Per label, counts of shape ``(n_buckets,)``.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        since, until = window_bounds(window, _utc(now))
        async with self._session("counts_per_bucket") as s:
            rows = await self._bucket_rows(s, self._scope_where(scope, since, until), window.bucket)
        starts = bucket_starts(since, until, window.bucket)
        return starts, build_series(rows, starts, window.bucket)

    async def negative_channels(
        self,
        scope: Scope,
        window: Window,
        *,
        now: datetime | None = None,
        min_notes: int = 3,
        limit: int = 5,
    ) -> list[ChannelShare]:
        """Channels with the highest share of angry/fearful/sad notes.

        See :func:`bot.insights.compute.rank_channels` for the ranking.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        since, until = window_bounds(window, _utc(now))
        async with self._session("negative_channels") as s:
            rows = await self._channel_rows(s, self._scope_where(scope, since, until))
        return rank_channels(rows, min_notes=min_notes, limit=limit)

    async def insights(
        self,
        scope: Scope,
        window: Window,
        *,
        now: datetime | None = None,
        min_channel_notes: int = 3,
        max_channels: int = 5,
    ) -> EmotionInsights:
        """Everything ``/insights`` shows, from one consistent read.

        Parameters
        ----------
        scope : Scope
            Guild, channel or user (inside a guild).
        window : Window
            24 h, 7 d or 30 d ending at ``now``.
        now : datetime, optional
            End of the window (UTC-aware).
        min_channel_notes, max_channels : int
            Channel ranking parameters (:func:`bot.insights.compute.rank_channels`).

        Returns
        -------
        EmotionInsights
            Totals, distribution, per-bucket series and channel ranking.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        when = _utc(now)
        since, until = window_bounds(window, when)
        where = self._scope_where(scope, since, until)
        async with self._session("insights") as s:
            labels = await self._label_counts(s, where)
            buckets = await self._bucket_rows(s, where, window.bucket)
            channels = await self._channel_rows(s, where)
        return build_insights(
            scope,
            window,
            when,
            labels,
            buckets,
            channels,
            min_channel_notes=min_channel_notes,
            max_channels=max_channels,
        )

    # ---------------------------------------------------------- speaker stats

    async def update_speaker_stats(
        self,
        user_id: int,
        feature_config_version: str,
        features: np.ndarray,
        *,
        now: datetime | None = None,
    ) -> RunningStats | None:
        """Add feature vectors to a user's running statistics (Welford/Chan merge).

        The row is locked (a no-op upsert) before it is read, so concurrent
        updates for one user are serialised and none is lost.

        Parameters
        ----------
        user_id : int
            The speaker.
        feature_config_version : str
            Version of the feature configuration the vectors come from;
            statistics of different versions are kept apart.
        features : numpy.ndarray
            Shape ``(n_features,)`` or ``(k, n_features)``.
        now : datetime, optional
            Time of the update (UTC-aware).

        Returns
        -------
        RunningStats or None
            The updated statistics, or ``None`` (nothing stored) for a user
            who opted out.

        Raises
        ------
        ValueError
            When the vector length differs from the stored statistics', or the
            values are not finite.
        StoreUnavailableError
            When the database is unreachable.
        """
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"features must have shape (n_features,) or (k, n_features), got {np.shape(features)}")
        d = x.shape[1]
        when = _utc(now)
        empty_mean, empty_m2 = RunningStats.empty(d).to_bytes()
        ins = self._insert(SpeakerStats).values(
            user_id=user_id,
            feature_config_version=feature_config_version,
            n=0,
            n_features=d,
            mean=empty_mean,
            m2=empty_m2,
            updated_at=when,
        )
        lock = ins.on_conflict_do_update(
            index_elements=["user_id", "feature_config_version"],
            set_={"n": SpeakerStats.__table__.c.n},  # no-op write: takes the row lock
        )
        async with self._session("update_speaker_stats") as s:
            if await s.scalar(select(UserOptOut.user_id).where(UserOptOut.user_id == user_id)) is not None:
                return None
            await s.execute(lock)
            row = (
                await s.execute(
                    select(SpeakerStats.n, SpeakerStats.mean, SpeakerStats.m2).where(
                        SpeakerStats.user_id == user_id,
                        SpeakerStats.feature_config_version == feature_config_version,
                    )
                )
            ).one()
            current = RunningStats.from_bytes(row.n, row.mean, row.m2)
            merged = merge_batch(current, x)  # ValueError rolls the transaction back
            mean_b, m2_b = merged.to_bytes()
            await s.execute(
                update(SpeakerStats)
                .where(
                    SpeakerStats.user_id == user_id,
                    SpeakerStats.feature_config_version == feature_config_version,
                )
                .values(n=merged.n, mean=mean_b, m2=m2_b, updated_at=when)
            )
        return merged

    async def get_speaker_stats(self, user_id: int, feature_config_version: str) -> RunningStats | None:
        """A user's running feature statistics, or ``None`` if none are stored.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        async with self._session("get_speaker_stats") as s:
            row = await s.get(SpeakerStats, (user_id, feature_config_version))
        if row is None or row.n == 0:
            return None
        return RunningStats.from_bytes(row.n, row.mean, row.m2)

    # --------------------------------------------------------------- feedback

    async def set_feedback_consent(self, user_id: int, consent: bool, *, now: datetime | None = None) -> None:
        """Record a user's answer to "may your feedback train the model?".

        Withdrawing consent (``False``) also marks all their stored feedback
        as not consented, so no later training uses it.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        _check_id("user_id", user_id)
        when = _utc(now)
        ins = self._insert(FeedbackConsent).values(user_id=user_id, consent=bool(consent), decided_at=when)
        stmt = ins.on_conflict_do_update(
            index_elements=["user_id"], set_={"consent": ins.excluded.consent, "decided_at": ins.excluded.decided_at}
        )
        async with self._session("set_feedback_consent") as s:
            await s.execute(stmt)
            if not consent:
                await s.execute(update(Feedback).where(Feedback.user_id == user_id).values(consent=False))

    async def get_feedback_consent(self, user_id: int) -> bool | None:
        """The user's standing consent answer; ``None`` if never asked.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        async with self._session("get_feedback_consent") as s:
            return await s.scalar(select(FeedbackConsent.consent).where(FeedbackConsent.user_id == user_id))

    async def record_feedback(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        message_id: int,
        label: str,
        features: np.ndarray,
        feature_config_version: str,
        consent: bool,
        created_at: datetime | None = None,
    ) -> int | None:
        """Store a user's label for their voice note with its feature vector (no audio).

        Parameters
        ----------
        user_id, message_id : int
            The speaker and their message.
        guild_id : int or None
            Guild, ``None`` for a direct message.
        label : str
            The label the speaker gave.
        features : numpy.ndarray
            Shape ``(n_features,)``; stored as float32.
        feature_config_version : str
            Version of the feature configuration that produced ``features``.
        consent : bool
            Whether the speaker consented to training on it.
        created_at : datetime, optional
            UTC-aware; default now.

        Returns
        -------
        int or None
            Row id, or ``None`` (nothing stored) for a user who opted out.

        Raises
        ------
        ValueError
            For a non-1-D or non-finite vector.
        StoreUnavailableError
            When the database is unreachable.
        """
        _check_id("user_id", user_id)
        _check_id("guild_id", guild_id, nullable=True)
        _check_id("message_id", message_id)
        vec = np.asarray(features, dtype="<f4")
        if vec.ndim != 1 or vec.size == 0 or not np.all(np.isfinite(vec)):
            raise ValueError("features must be a non-empty finite 1-D vector")
        row = Feedback(
            user_id=user_id,
            guild_id=guild_id,
            message_id=message_id,
            label=str(label),
            feature_config_version=feature_config_version,
            n_features=int(vec.size),
            features=vec.tobytes(),
            consent=bool(consent),
            created_at=_utc(created_at),
        )
        async with self._session("record_feedback") as s:
            if await s.scalar(select(UserOptOut.user_id).where(UserOptOut.user_id == user_id)) is not None:
                return None
            s.add(row)
            await s.flush()
            return row.id

    async def training_feedback(self, feature_config_version: str) -> list[FeedbackSample]:
        """Consented feedback of one feature configuration, for ``/retrain``.

        Users who opted out are left out even if rows remain.

        Returns
        -------
        list of FeedbackSample
            Oldest first.

        Raises
        ------
        StoreUnavailableError
            When the database is unreachable.
        """
        f = Feedback
        stmt = (
            select(f.id, f.user_id, f.label, f.features, f.created_at)
            .where(
                f.feature_config_version == feature_config_version,
                f.consent.is_(True),
                ~exists().where(UserOptOut.user_id == f.user_id),
            )
            .order_by(f.created_at, f.id)
        )
        async with self._session("training_feedback") as s:
            rows = (await s.execute(stmt)).all()
        return [
            FeedbackSample(
                id=r.id,
                user_id=r.user_id,
                label=r.label,
                features=np.frombuffer(r.features, dtype="<f4").astype(np.float32),
                created_at=r.created_at,
            )
            for r in rows
        ]


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregate over the text column
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _settings_to_columns(s: GuildSettings) -> dict[str, Any]:
    return {
        "auto_analyse": s.auto_analyse,
        "allowed_channels": sorted(s.allowed_channels),
        "denied_channels": sorted(s.denied_channels),
        "reply_mode": s.reply_mode,
        "modlog_channel_id": s.modlog_channel_id,
        "alert_emotions": list(s.alert_emotions),
        "alert_threshold": s.alert_threshold,
        "alert_cooldown_s": s.alert_cooldown_s,
        "retention_days": s.retention_days,
    }


def _settings_from_row(guild_id: int, row: GuildSettingsRow | None) -> GuildSettings:
    if row is None:
        return GuildSettings(guild_id)
    return GuildSettings(
        guild_id=guild_id,
        auto_analyse=bool(row.auto_analyse),
        allowed_channels=frozenset(int(c) for c in row.allowed_channels),
        denied_channels=frozenset(int(c) for c in row.denied_channels),
        reply_mode=row.reply_mode,
        modlog_channel_id=row.modlog_channel_id,
        alert_emotions=tuple(row.alert_emotions),
        alert_threshold=float(row.alert_threshold),
        alert_cooldown_s=int(row.alert_cooldown_s),
        retention_days=int(row.retention_days),
    )
