"""Plain, immutable results returned by :class:`bot.storage.Store`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from .models import (
    DEFAULT_ALERT_COOLDOWN_S,
    DEFAULT_ALERT_EMOTIONS,
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_RETENTION_DAYS,
    REPLY_MODES,
)

__all__ = [
    "MAX_ALERT_COOLDOWN_S",
    "MAX_RETENTION_DAYS",
    "DeletionCounts",
    "FeedbackSample",
    "GuildSettings",
    "PurgeCounts",
    "UserDataSummary",
]

#: Longest allowed alert cool-down (seconds): one day. Alert-log rows older
#: than this are useless and purged.
MAX_ALERT_COOLDOWN_S = 86_400
#: Longest allowed retention (days).
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class GuildSettings:
    """A guild's settings (defaults when the guild never changed any).

    Attributes
    ----------
    guild_id : int
        Guild id.
    auto_analyse : bool
        Analyse voice notes automatically. Off until someone with Manage
        Server turns it on (``/settings analysis``): consent first.
    allowed_channels : frozenset of int
        If not empty, only these channels (or threads whose parent is one).
    denied_channels : frozenset of int
        Never these channels (wins over ``allowed_channels``).
    reply_mode : {"reply", "dm"}
        Public reply in the channel, or a DM to the speaker.
    modlog_channel_id : int or None
        Where alerts go; ``None`` disables alerts.
    alert_emotions : tuple of str
        Labels that alert.
    alert_threshold : float
        Minimum confidence (probability, 0..1) that alerts.
    alert_cooldown_s : int
        At most one alert per user per channel per this many seconds.
    retention_days : int
        Analyses older than this many days are deleted.
    """

    guild_id: int
    auto_analyse: bool = False
    allowed_channels: frozenset[int] = frozenset()
    denied_channels: frozenset[int] = frozenset()
    reply_mode: str = "reply"
    modlog_channel_id: int | None = None
    alert_emotions: tuple[str, ...] = DEFAULT_ALERT_EMOTIONS
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    alert_cooldown_s: int = DEFAULT_ALERT_COOLDOWN_S
    retention_days: int = DEFAULT_RETENTION_DAYS

    def analyses_channel(self, channel_id: int, parent_id: int | None = None) -> bool:
        """Whether voice notes posted in this channel are analysed automatically.

        Parameters
        ----------
        channel_id : int
            The channel (or thread) of the message.
        parent_id : int or None
            For a thread, its parent channel: the lists also apply to it.
        """
        if not self.auto_analyse:
            return False
        ids = {channel_id} | ({parent_id} if parent_id is not None else set())
        if ids & self.denied_channels:
            return False
        return not self.allowed_channels or bool(ids & self.allowed_channels)

    @property
    def alerts_enabled(self) -> bool:
        """Alerts need a mod-log channel and at least one emotion."""
        return self.modlog_channel_id is not None and bool(self.alert_emotions)

    def crosses_alert(self, label: str, confidence: float) -> bool:
        """Whether a prediction crosses the alert settings (cool-down not considered)."""
        return self.alerts_enabled and label in self.alert_emotions and confidence >= self.alert_threshold


@dataclass(frozen=True)
class DeletionCounts:
    """Rows deleted by :meth:`bot.storage.Store.delete_user_data` (per table)."""

    analyses: int = 0
    feedback: int = 0
    feedback_consent: int = 0
    speaker_stats: int = 0
    alert_log: int = 0

    @property
    def total(self) -> int:
        """Sum over tables."""
        return self.analyses + self.feedback + self.feedback_consent + self.speaker_stats + self.alert_log


@dataclass(frozen=True)
class PurgeCounts:
    """Rows deleted by :meth:`bot.storage.Store.purge_expired`."""

    analyses: int = 0
    feedback: int = 0
    alert_log: int = 0


@dataclass(frozen=True)
class UserDataSummary:
    """What is stored about one user (``/privacy show``), across all guilds.

    Attributes
    ----------
    user_id : int
        The user.
    opted_out_at : datetime or None
        When they opted out (UTC), ``None`` if not opted out.
    analyses : int
        Stored analyses of their notes.
    analyses_by_label : dict of str to int
        The same, per label.
    guilds : int
        Distinct guilds those analyses come from (direct messages not counted).
    direct_messages : int
        Analyses of notes sent by direct message.
    first_analysis_at, last_analysis_at : datetime or None
        Oldest and newest analysis (UTC).
    feedback : int
        Feedback rows (labels with feature vectors, no audio).
    feedback_consent : bool or None
        Standing answer to the training consent question, ``None`` if never asked.
    speaker_stats : int
        Feature-statistics rows (one per feature configuration version).
    alert_log : int
        Cool-down rows (times of recent alerts about them).
    """

    user_id: int
    opted_out_at: datetime | None
    analyses: int
    analyses_by_label: dict[str, int]
    guilds: int
    direct_messages: int
    first_analysis_at: datetime | None
    last_analysis_at: datetime | None
    feedback: int
    feedback_consent: bool | None
    speaker_stats: int
    alert_log: int

    @property
    def opted_out(self) -> bool:
        """Whether the user opted out."""
        return self.opted_out_at is not None

    @property
    def total_rows(self) -> int:
        """Every stored row about the user, the opt-out marker excluded."""
        return (
            self.analyses
            + self.feedback
            + self.speaker_stats
            + self.alert_log
            + (0 if self.feedback_consent is None else 1)
        )


@dataclass(frozen=True)
class FeedbackSample:
    """One consented feedback row for training (issue #3).

    Attributes
    ----------
    id : int
        Row id.
    user_id : int
        The speaker: keep all of a speaker's samples in one fold.
    label : str
        The label the speaker gave.
    features : numpy.ndarray
        Shape ``(n_features,)``, float32.
    created_at : datetime
        UTC.
    """

    id: int
    user_id: int
    label: str
    features: np.ndarray = field(repr=False)
    created_at: datetime


def frozen_ids(ids: Iterable[int]) -> frozenset[int]:
    """Validate and freeze a collection of Discord ids."""
    out = frozenset(int(i) for i in ids)
    if any(i <= 0 or i >= 2**63 for i in out):
        raise ValueError("Discord ids are positive 64-bit integers")
    return out


def validate_settings(s: GuildSettings) -> None:
    """Check a :class:`GuildSettings`' ranges.

    Raises
    ------
    ValueError
        For a reply mode other than ``reply``/``dm``, a threshold outside
        0..1, a cool-down outside 0..:data:`MAX_ALERT_COOLDOWN_S` seconds, or
        a retention outside 1..:data:`MAX_RETENTION_DAYS` days.
    """
    if s.reply_mode not in REPLY_MODES:
        raise ValueError(f"reply_mode must be one of {REPLY_MODES}, not {s.reply_mode!r}")
    if not 0.0 <= s.alert_threshold <= 1.0:
        raise ValueError("alert_threshold is a probability between 0 and 1")
    if not 0 <= s.alert_cooldown_s <= MAX_ALERT_COOLDOWN_S:
        raise ValueError(f"alert_cooldown_s must be between 0 and {MAX_ALERT_COOLDOWN_S} seconds")
    if not 1 <= s.retention_days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
    if any(not e or len(e) > 32 for e in s.alert_emotions):
        raise ValueError("alert emotions must be non-empty labels of at most 32 characters")
