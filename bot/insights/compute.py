"""Pure computations behind ``/insights`` (no database, no Discord, no I/O).

The store (:meth:`bot.storage.Store.insights`) fetches grouped counts with SQL
and hands them to these functions; they can be tested and reused on plain
Python data.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from ser_engine.corpora import RAVDESS_EMOTIONS

__all__ = [
    "EMOTION_ORDER",
    "NEGATIVE_EMOTIONS",
    "Bucket",
    "ChannelShare",
    "EmotionInsights",
    "Scope",
    "ScopeKind",
    "Window",
    "bucket_key",
    "bucket_starts",
    "build_insights",
    "build_series",
    "floor_to_bucket",
    "order_labels",
    "rank_channels",
    "shares",
    "window_bounds",
]

#: The eight RAVDESS emotions in the dataset's code order (01..08; Livingstone
#: & Russo 2018, PLoS ONE 13(5): e0196391). Used to order labels and colours.
EMOTION_ORDER: tuple[str, ...] = RAVDESS_EMOTIONS
#: Emotions whose share ranks channels in ``/insights`` (issue #4).
NEGATIVE_EMOTIONS: tuple[str, ...] = ("angry", "fearful", "sad")

Bucket = Literal["hour", "day"]


class Window(enum.Enum):
    """Time window of ``/insights``: the last 24 hours, 7 days or 30 days.

    The value is the string users pick (``"24h"``, ``"7d"``, ``"30d"``).
    """

    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"

    @property
    def duration(self) -> timedelta:
        """Length of the window."""
        return {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}[self.value]

    @property
    def bucket(self) -> Bucket:
        """Trend resolution: hourly for 24 h, daily for 7 d and 30 d."""
        return "hour" if self is Window.DAY else "day"

    @property
    def description(self) -> str:
        """Human text, e.g. ``"last 7 days"``."""
        return {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days"}[self.value]

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse ``"24h"``, ``"7d"``, ``"30d"`` (also ``"1d"``, ``"week"``, ``"month"``).

        Raises
        ------
        ValueError
            For any other text.
        """
        key = text.strip().lower()
        aliases = {"1d": "24h", "day": "24h", "week": "7d", "month": "30d"}
        try:
            return cls(aliases.get(key, key))
        except ValueError:
            raise ValueError(f"unknown window {text!r}: use 24h, 7d or 30d") from None


class ScopeKind(enum.StrEnum):
    """What ``/insights`` looks at: the whole guild, one channel, or one user."""

    GUILD = "guild"
    CHANNEL = "channel"
    USER = "user"


@dataclass(frozen=True)
class Scope:
    """Scope of an insights query, always inside one guild.

    Parameters
    ----------
    guild_id : int
        Guild (server) id.
    channel_id : int or None
        Restrict to this channel.
    user_id : int or None
        Restrict to this user's notes (in this guild).
    channel_ids : frozenset of int or None
        Restrict further to notes posted in these channels or threads (e.g.
        those the asking member can view); ``None``: no such restriction.

    Raises
    ------
    ValueError
        When both ``channel_id`` and ``user_id`` are given.
    """

    guild_id: int
    channel_id: int | None = None
    user_id: int | None = None
    channel_ids: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.channel_id is not None and self.user_id is not None:
            raise ValueError("a scope is a guild, a channel or a user, not both")

    @property
    def kind(self) -> ScopeKind:
        """:class:`ScopeKind` of this scope."""
        if self.channel_id is not None:
            return ScopeKind.CHANNEL
        if self.user_id is not None:
            return ScopeKind.USER
        return ScopeKind.GUILD

    @classmethod
    def guild(cls, guild_id: int) -> Scope:
        """The whole guild."""
        return cls(guild_id)

    @classmethod
    def channel(cls, guild_id: int, channel_id: int) -> Scope:
        """One channel of the guild."""
        return cls(guild_id, channel_id=channel_id)

    @classmethod
    def user(cls, guild_id: int, user_id: int) -> Scope:
        """One user's notes in the guild."""
        return cls(guild_id, user_id=user_id)


@dataclass(frozen=True)
class ChannelShare:
    """A channel's share of negative notes.

    Attributes
    ----------
    channel_id : int
        Channel id.
    total : int
        Notes analysed in the channel in the window.
    negative : int
        Of those, notes labelled with a negative emotion.
    by_label : dict of str to int
        Count of each negative emotion (zeros included).
    """

    channel_id: int
    total: int
    negative: int
    by_label: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """``negative / total`` (0..1); 0 for an empty channel."""
        return self.negative / self.total if self.total else 0.0


@dataclass(frozen=True)
class EmotionInsights:
    """Everything ``/insights`` shows for one scope and window.

    Attributes
    ----------
    scope : Scope
        What was looked at.
    window : Window
        The time window.
    since, until : datetime
        Half-open UTC interval ``[since, until)`` of analysis times.
    total : int
        Number of notes analysed.
    distribution : dict of str to int
        Notes per label, ordered by :func:`order_labels`; labels with no
        notes are absent.
    bucket : {"hour", "day"}
        Trend resolution (UTC hours or UTC days).
    bucket_starts : tuple of datetime
        Start (UTC) of every bucket from the one holding ``since`` to the one
        holding ``until``, shape ``(n_buckets,)``; the first and the last
        buckets are partial.
    series : dict of str to tuple of int
        Per label, notes in each bucket, each of shape ``(n_buckets,)``; same
        labels and order as ``distribution``.
    channels : tuple of ChannelShare
        Channels ranked by their share of :data:`NEGATIVE_EMOTIONS`
        (descending), at most the requested number.
    """

    scope: Scope
    window: Window
    since: datetime
    until: datetime
    total: int
    distribution: dict[str, int]
    bucket: Bucket
    bucket_starts: tuple[datetime, ...]
    series: dict[str, tuple[int, ...]]
    channels: tuple[ChannelShare, ...]

    @property
    def shares(self) -> dict[str, float]:
        """Share of each label (0..1) among all notes, same order as ``distribution``."""
        return shares(self.distribution)

    @property
    def bucket_totals(self) -> tuple[int, ...]:
        """Notes per bucket (all labels), shape ``(n_buckets,)``."""
        n = len(self.bucket_starts)
        return tuple(sum(s[i] for s in self.series.values()) for i in range(n))


def order_labels(labels: Iterable[str]) -> list[str]:
    """Order labels as :data:`EMOTION_ORDER`, unknown labels after, alphabetically.

    Parameters
    ----------
    labels : iterable of str
        Labels, duplicates allowed.

    Returns
    -------
    list of str
        The distinct labels, ordered.
    """
    rank = {name: i for i, name in enumerate(EMOTION_ORDER)}
    return sorted(set(labels), key=lambda lab: (rank.get(lab, len(rank)), lab))


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Turn counts into shares that sum to 1 (empty dict for no notes).

    Parameters
    ----------
    counts : mapping of str to int
        Non-negative counts per label.

    Returns
    -------
    dict of str to float
        ``count / sum(counts)`` per label, same order as ``counts``.
    """
    total = sum(counts.values())
    if total <= 0:
        return {}
    return {label: n / total for label, n in counts.items()}


def window_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """Return the UTC interval ``[now - window, now)``.

    Raises
    ------
    ValueError
        When ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    until = now.astimezone(UTC)
    return until - window.duration, until


def floor_to_bucket(t: datetime, bucket: Bucket) -> datetime:
    """Start (UTC) of the hour or day that holds ``t``."""
    t = t.astimezone(UTC)
    if bucket == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_key(t: datetime, bucket: Bucket) -> str:
    """Text key of a bucket, as the store's SQL computes it.

    ``"YYYY-MM-DD"`` for days, ``"YYYY-MM-DD HH"`` for hours (UTC).
    """
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H" if bucket == "hour" else "%Y-%m-%d")


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    """UTC starts of the buckets covering ``[since, until)``.

    Returns
    -------
    list of datetime
        From ``floor(since)`` to ``floor(until)`` inclusive, one step apart.
    """
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first, last = floor_to_bucket(since, bucket), floor_to_bucket(until, bucket)
    out: list[datetime] = []
    t = first
    while t <= last:
        out.append(t)
        t += step
    return out


def build_series(
    rows: Iterable[tuple[str, str, int]],
    starts: Sequence[datetime],
    bucket: Bucket,
    labels: Sequence[str] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Arrange ``(bucket key, label, count)`` rows into one series per label.

    Parameters
    ----------
    rows : iterable of (str, str, int)
        Grouped counts; keys as :func:`bucket_key`. Keys outside ``starts``
        are ignored.
    starts : sequence of datetime
        Bucket starts, shape ``(n_buckets,)``.
    bucket : {"hour", "day"}
        Resolution of the keys.
    labels : sequence of str, optional
        Labels (and order) of the result; default: those in ``rows``, ordered
        by :func:`order_labels`.

    Returns
    -------
    dict of str to tuple of int
        Per label, counts of shape ``(n_buckets,)`` (zeros where no notes).
    """
    index = {bucket_key(t, bucket): i for i, t in enumerate(starts)}
    rows = list(rows)
    names = list(labels) if labels is not None else order_labels(label for _, label, _ in rows)
    table = {name: [0] * len(starts) for name in names}
    for key, label, count in rows:
        i = index.get(key)
        if i is not None and label in table:
            table[label][i] += int(count)
    return {name: tuple(v) for name, v in table.items()}


def rank_channels(
    rows: Iterable[tuple[int, str, int]],
    *,
    negative: Sequence[str] = NEGATIVE_EMOTIONS,
    min_notes: int = 3,
    limit: int = 5,
) -> list[ChannelShare]:
    """Rank channels by their share of negative notes.

    Parameters
    ----------
    rows : iterable of (int, str, int)
        ``(channel_id, label, count)`` grouped counts.
    negative : sequence of str
        Labels counted as negative (default angry, fearful, sad).
    min_notes : int
        Channels with fewer notes are left out (one angry note out of one is
        not a trend).
    limit : int
        Maximum number of channels returned.

    Returns
    -------
    list of ChannelShare
        By share (descending), then negative count (descending), then channel
        id; channels without any negative note are left out.
    """
    totals: dict[int, int] = {}
    neg: dict[int, dict[str, int]] = {}
    for channel_id, label, count in rows:
        totals[channel_id] = totals.get(channel_id, 0) + int(count)
        per = neg.setdefault(channel_id, {name: 0 for name in negative})
        if label in per:
            per[label] += int(count)
    out = [
        ChannelShare(channel_id=c, total=totals[c], negative=sum(neg[c].values()), by_label=dict(neg[c]))
        for c in totals
        if totals[c] >= min_notes and sum(neg[c].values()) > 0
    ]
    out.sort(key=lambda cs: (-cs.share, -cs.negative, cs.channel_id))
    return out[:limit]


def build_insights(
    scope: Scope,
    window: Window,
    now: datetime,
    label_counts: Iterable[tuple[str, int]],
    bucket_rows: Iterable[tuple[str, str, int]],
    channel_rows: Iterable[tuple[int, str, int]],
    *,
    min_channel_notes: int = 3,
    max_channels: int = 5,
) -> EmotionInsights:
    """Assemble :class:`EmotionInsights` from grouped counts.

    Parameters
    ----------
    scope, window, now
        What, over which window, ending when (UTC-aware).
    label_counts : iterable of (str, int)
        Notes per label in the window.
    bucket_rows : iterable of (str, str, int)
        ``(bucket key, label, count)``, see :func:`build_series`.
    channel_rows : iterable of (int, str, int)
        ``(channel_id, label, count)``, see :func:`rank_channels`.
    min_channel_notes, max_channels : int
        Passed to :func:`rank_channels`.

    Returns
    -------
    EmotionInsights
    """
    since, until = window_bounds(window, now)
    counts: dict[str, int] = {}
    for label, n in label_counts:
        counts[label] = counts.get(label, 0) + int(n)
    labels = [lab for lab in order_labels(counts) if counts[lab] > 0]
    distribution = {lab: counts[lab] for lab in labels}
    starts = bucket_starts(since, until, window.bucket)
    series = build_series(bucket_rows, starts, window.bucket, labels)
    channels = rank_channels(channel_rows, min_notes=min_channel_notes, limit=max_channels)
    return EmotionInsights(
        scope=scope,
        window=window,
        since=since,
        until=until,
        total=sum(distribution.values()),
        distribution=distribution,
        bucket=window.bucket,
        bucket_starts=tuple(starts),
        series=series,
        channels=tuple(channels),
    )
