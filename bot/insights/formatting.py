"""Text for the ``/insights`` embed: counts, percentages, bars, channel lines.

Pure, synchronous and cheap. Discord mentions (``<#id>``, ``<@id>``) render
as channel and user names inside embeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .compute import NEGATIVE_EMOTIONS, ChannelShare, EmotionInsights, Scope, ScopeKind

__all__ = [
    "FIELD_LIMIT",
    "format_channel_shares",
    "format_count",
    "format_distribution",
    "format_percent",
    "format_scope",
    "format_trend_summary",
    "insights_fields",
    "text_bar",
]

#: Discord's limit on an embed field's value (characters).
FIELD_LIMIT = 1024
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def format_count(n: int) -> str:
    """``1234`` -> ``"1,234"``."""
    return f"{int(n):,}"


def format_percent(share: float, *, decimals: int = 0) -> str:
    """A share (0..1) as a percentage: ``0.457`` -> ``"46%"`` (``decimals=1``: ``"45.7%"``).

    Shares above 0 that would round to 0 show as ``"<1%"`` (or ``"<0.1%"``).
    """
    pct = 100.0 * float(share)
    smallest = 10.0**-decimals
    if 0 < pct < smallest / 2:
        return f"<{smallest:.{decimals}f}%"
    return f"{pct:.{decimals}f}%"


def text_bar(share: float, width: int = 10) -> str:
    """A bar of block characters, ``width`` cells for 100 %, in eighths of a cell.

    Parameters
    ----------
    share : float
        0..1 (clipped).
    width : int
        Cells of a full bar.

    Returns
    -------
    str
        Exactly ``width`` characters (padded with spaces).
    """
    eighths = round(max(0.0, min(1.0, float(share))) * width * 8)
    full, rest = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[rest] if rest else "")
    return bar.ljust(width)


def format_distribution(distribution: Mapping[str, int], *, width: int = 10) -> list[str]:
    """One line per label: name, bar, percentage and count.

    Parameters
    ----------
    distribution : mapping of str to int
        Notes per label (in display order).
    width : int
        Bar width in characters.

    Returns
    -------
    list of str
        E.g. ``"`angry     ██████▍   ` 64% (9)"``; empty for no notes.
    """
    total = sum(distribution.values())
    if total <= 0:
        return []
    pad = max(len(lab) for lab in distribution)
    return [
        f"`{lab:<{pad}} {text_bar(n / total, width)}` {format_percent(n / total)} ({format_count(n)})"
        for lab, n in distribution.items()
    ]


def format_channel_shares(channels: Sequence[ChannelShare]) -> list[str]:
    """One line per channel: mention, negative share, counts per negative emotion.

    Returns
    -------
    list of str
        E.g. ``"<#123> — 60% angry/fearful/sad (3 of 5: angry 2, sad 1)"``.
    """
    lines = []
    for c in channels:
        parts = ", ".join(f"{lab} {n}" for lab, n in c.by_label.items() if n)
        lines.append(
            f"<#{c.channel_id}> — {format_percent(c.share)} {'/'.join(NEGATIVE_EMOTIONS)} "
            f"({format_count(c.negative)} of {format_count(c.total)}: {parts})"
        )
    return lines


def format_scope(scope: Scope) -> str:
    """``"this server"``, ``"<#channel>"`` or ``"<@user>"``."""
    if scope.kind is ScopeKind.CHANNEL:
        return f"<#{scope.channel_id}>"
    if scope.kind is ScopeKind.USER:
        return f"<@{scope.user_id}>"
    return "this server"


def format_trend_summary(insights: EmotionInsights) -> str:
    """One sentence on the trend: the busiest bucket and the most frequent emotion.

    Returns
    -------
    str
        E.g. ``"Busiest day: Tue 12 Nov (14 notes). Most frequent: angry (35%)."``;
        ``"No voice notes analysed."`` when there are none.
    """
    if insights.total == 0:
        return "No voice notes analysed."
    totals = insights.bucket_totals
    i = max(range(len(totals)), key=lambda k: (totals[k], k))
    start = insights.bucket_starts[i]
    when = start.strftime("%a %d %b %H:00 UTC") if insights.bucket == "hour" else start.strftime("%a %d %b")
    top, n_top = max(insights.distribution.items(), key=lambda kv: kv[1])
    unit = "hour" if insights.bucket == "hour" else "day"
    noun = "note" if totals[i] == 1 else "notes"
    return (
        f"Busiest {unit}: {when} ({format_count(totals[i])} {noun}). "
        f"Most frequent: {top} ({format_percent(n_top / insights.total)})."
    )


def _clip(text: str, limit: int = FIELD_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def insights_fields(insights: EmotionInsights, *, min_channel_notes: int = 3) -> list[tuple[str, str, bool]]:
    """Embed fields for ``/insights``, each value within Discord's 1024 characters.

    Parameters
    ----------
    insights : EmotionInsights
        From :meth:`bot.storage.Store.insights`.
    min_channel_notes : int
        The value used for the channel ranking (for the "none" text).

    Returns
    -------
    list of (str, str, bool)
        ``(name, value, inline)`` for ``discord.Embed.add_field``: notes
        analysed, window, scope, emotions, channels (guild scope and user
        scope only) and trend.
    """
    fields: list[tuple[str, str, bool]] = [
        ("Notes analysed", format_count(insights.total), True),
        ("Window", insights.window.description, True),
        ("Scope", format_scope(insights.scope), True),
    ]
    dist = format_distribution(insights.distribution)
    fields.append(("Emotions", _clip("\n".join(dist) or "No voice notes analysed."), False))
    if insights.scope.kind is not ScopeKind.CHANNEL:
        lines = format_channel_shares(insights.channels)
        none = f"No channel with at least {min_channel_notes} notes has angry, fearful or sad notes."
        fields.append(("Channels with the most angry/fearful/sad notes", _clip("\n".join(lines) or none), False))
    fields.append(("Trend", _clip(format_trend_summary(insights)), False))
    return fields
