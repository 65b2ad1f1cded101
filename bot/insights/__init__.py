"""Moderation insights: pure computations, text formatting and the trend chart.

* :mod:`bot.insights.compute` -- windows, scopes, shares, per-bucket series,
  channel ranking (pure, no I/O).
* :mod:`bot.insights.formatting` -- numbers and lines for the ``/insights`` embed.
* :mod:`bot.insights.chart` -- the stacked emotion-share chart as PNG bytes.

Every function here is synchronous. :func:`render_trend_png` is CPU-bound
(about 0.1-0.3 s): the bot must run it off the event loop, e.g.
``png = await asyncio.to_thread(render_trend_png, insights)``.
"""

from __future__ import annotations

from .chart import EMOTION_COLOURS, render_share_chart_png, render_trend_png
from .compute import (
    EMOTION_ORDER,
    NEGATIVE_EMOTIONS,
    ChannelShare,
    EmotionInsights,
    Scope,
    ScopeKind,
    Window,
    build_insights,
    order_labels,
    rank_channels,
    shares,
)
from .formatting import (
    format_channel_shares,
    format_count,
    format_distribution,
    format_percent,
    format_scope,
    format_trend_summary,
    insights_fields,
    text_bar,
)

__all__ = [
    "EMOTION_COLOURS",
    "EMOTION_ORDER",
    "NEGATIVE_EMOTIONS",
    "ChannelShare",
    "EmotionInsights",
    "Scope",
    "ScopeKind",
    "Window",
    "build_insights",
    "format_channel_shares",
    "format_count",
    "format_distribution",
    "format_percent",
    "format_scope",
    "format_trend_summary",
    "insights_fields",
    "order_labels",
    "rank_channels",
    "render_share_chart_png",
    "render_trend_png",
    "shares",
    "text_bar",
]
