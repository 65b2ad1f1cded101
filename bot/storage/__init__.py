"""Storage of the bot: analyses (never audio), guild settings, privacy, alerts.

SQLAlchemy 2 (async) over SQLite (default, a local file) or PostgreSQL
(``DATABASE_URL``), with Alembic migrations run at start. The bot talks to it
only through :class:`Store`; see its methods for what each command needs.
"""

from __future__ import annotations

from bot.insights.compute import ChannelShare, EmotionInsights, Scope, ScopeKind, Window

from .errors import StoreError, StoreUnavailableError
from .migrate import current_revision, head_revision, upgrade_to_head
from .models import (
    DEFAULT_ALERT_COOLDOWN_S,
    DEFAULT_ALERT_EMOTIONS,
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_RETENTION_DAYS,
    REPLY_MODES,
)
from .records import (
    MAX_ALERT_COOLDOWN_S,
    MAX_RETENTION_DAYS,
    DeletionCounts,
    FeedbackSample,
    GuildSettings,
    PurgeCounts,
    UserDataSummary,
)
from .stats import RunningStats, merge_batch
from .store import UNSET, Store
from .urls import normalise_database_url, resolve_database_url, sqlite_url

__all__ = [
    "DEFAULT_ALERT_COOLDOWN_S",
    "DEFAULT_ALERT_EMOTIONS",
    "DEFAULT_ALERT_THRESHOLD",
    "DEFAULT_RETENTION_DAYS",
    "MAX_ALERT_COOLDOWN_S",
    "MAX_RETENTION_DAYS",
    "REPLY_MODES",
    "UNSET",
    "ChannelShare",
    "DeletionCounts",
    "EmotionInsights",
    "FeedbackSample",
    "GuildSettings",
    "PurgeCounts",
    "RunningStats",
    "Scope",
    "ScopeKind",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "UserDataSummary",
    "Window",
    "current_revision",
    "head_revision",
    "merge_batch",
    "normalise_database_url",
    "resolve_database_url",
    "sqlite_url",
    "upgrade_to_head",
]
