"""SQLAlchemy 2 ORM models (typed ``Mapped[]``) of the bot's database.

No audio is ever stored: an analysis keeps only the labels and numbers the
model produced; feedback keeps only a feature vector (``float32`` bytes).

Discord ids ("snowflakes") are 64-bit integers below 2**63 and are stored as
``BIGINT``. Times are stored in UTC and always returned as timezone-aware
:class:`datetime.datetime` objects (see :class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "DEFAULT_ALERT_COOLDOWN_S",
    "DEFAULT_ALERT_EMOTIONS",
    "DEFAULT_ALERT_THRESHOLD",
    "DEFAULT_RETENTION_DAYS",
    "REPLY_MODES",
    "AlertLog",
    "Analysis",
    "Base",
    "Feedback",
    "FeedbackConsent",
    "GuildSettingsRow",
    "SpeakerStats",
    "UTCDateTime",
    "UserOptOut",
]

#: Days an analysis is kept when a guild has not chosen otherwise (issue #4).
DEFAULT_RETENTION_DAYS = 30
#: Emotions that raise a mod-log alert by default.
DEFAULT_ALERT_EMOTIONS: tuple[str, ...] = ("angry",)
#: Minimum model confidence (probability, 0..1) of an alerting emotion.
DEFAULT_ALERT_THRESHOLD = 0.8
#: At most one alert per user per channel within this many seconds.
DEFAULT_ALERT_COOLDOWN_S = 600
#: How the bot answers a voice note: a public reply, or a DM to the speaker.
REPLY_MODES: tuple[str, ...] = ("reply", "dm")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only aliases ROWID for a column typed exactly INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware (UTC).

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; SQLite stores SQLAlchemy's
    ISO text ``YYYY-MM-DD HH:MM:SS.ffffff`` of the UTC time, so text order is
    time order and range comparisons work in SQL on both.

    Raises
    ------
    ValueError
        When a naive datetime is bound (its zone would be ambiguous).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware time (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; its ``metadata`` is Alembic's ``target_metadata``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        dict[str, float]: JSON(),
        list[int]: JSON(),
        list[str]: JSON(),
        bytes: LargeBinary(),
    }


class Analysis(Base):
    """One analysed voice note (never its audio).

    Columns: ``guild_id`` is ``None`` for a direct message; ``created_at`` is
    the UTC time of analysis; ``confidence`` is the top class probability
    (0..1); ``probabilities`` maps every label to its probability;
    ``duration_s`` is the note's length in seconds.
    """

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    message_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(index=True)
    label: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, float]]
    model_version: Mapped[str] = mapped_column(String(128))
    duration_s: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_analyses_guild_created", "guild_id", "created_at"),
        Index("ix_analyses_channel_created", "channel_id", "created_at"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        CheckConstraint("duration_s >= 0", name="duration_nonneg"),
    )


class GuildSettingsRow(Base):
    """Per-guild settings (``/settings``). A missing row means all defaults.

    ``allowed_channels`` empty means every channel; ``denied_channels`` wins
    over it. ``alert_threshold`` is a probability (0..1), ``alert_cooldown_s``
    seconds, ``retention_days`` days.
    """

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    auto_analyse: Mapped[bool] = mapped_column(Boolean, default=False)  # consent first: off until enabled
    allowed_channels: Mapped[list[int]] = mapped_column(default=list)
    denied_channels: Mapped[list[int]] = mapped_column(default=list)
    reply_mode: Mapped[str] = mapped_column(String(8), default="reply")
    modlog_channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alert_emotions: Mapped[list[str]] = mapped_column(default=lambda: list(DEFAULT_ALERT_EMOTIONS))
    alert_threshold: Mapped[float] = mapped_column(Float, default=DEFAULT_ALERT_THRESHOLD)
    alert_cooldown_s: Mapped[int] = mapped_column(Integer, default=DEFAULT_ALERT_COOLDOWN_S)
    retention_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETENTION_DAYS)
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("reply_mode IN ('reply', 'dm')", name="reply_mode"),
        CheckConstraint("alert_threshold >= 0 AND alert_threshold <= 1", name="threshold_range"),
        CheckConstraint("alert_cooldown_s >= 0", name="cooldown_nonneg"),
        CheckConstraint("retention_days >= 1", name="retention_positive"),
    )


class UserOptOut(Base):
    """A user who opted out: never analysed nor stored, in any guild."""

    __tablename__ = "user_optout"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime]


class AlertLog(Base):
    """Time of the last mod-log alert per (guild, channel, user), for cool-downs."""

    __tablename__ = "alert_log"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, index=True)
    last_alert_at: Mapped[datetime]


class SpeakerStats(Base):
    """Running per-user feature statistics (Welford), for speaker normalisation.

    ``mean`` and ``m2`` are little-endian ``float64`` vectors of length
    ``n_features`` (``numpy.ndarray.tobytes``); the unbiased variance is
    ``m2 / (n - 1)``.
    """

    __tablename__ = "speaker_stats"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    feature_config_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    n_features: Mapped[int] = mapped_column(Integer)
    mean: Mapped[bytes]
    m2: Mapped[bytes]
    updated_at: Mapped[datetime]


class Feedback(Base):
    """A user's label for one of their voice notes, with its feature vector.

    ``features`` is a little-endian ``float32`` vector of length
    ``n_features`` (no audio). ``consent`` is the user's consent to using it
    for training (issue #3); rows without consent are never used for training.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_id: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(32))
    feature_config_version: Mapped[str] = mapped_column(String(64))
    n_features: Mapped[int] = mapped_column(Integer)
    features: Mapped[bytes]
    consent: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_feedback_version_consent", "feature_config_version", "consent"),)


class FeedbackConsent(Base):
    """A user's standing answer to "may your feedback be used for training?"."""

    __tablename__ = "feedback_consent"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    consent: Mapped[bool] = mapped_column(Boolean)
    decided_at: Mapped[datetime]
