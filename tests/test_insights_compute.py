"""Pure insights computations and the embed text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.insights import (
    EMOTION_ORDER,
    Scope,
    ScopeKind,
    Window,
    build_insights,
    format_channel_shares,
    format_distribution,
    format_percent,
    format_scope,
    format_trend_summary,
    insights_fields,
    order_labels,
    rank_channels,
    shares,
    text_bar,
)
from bot.insights.compute import bucket_key, bucket_starts, build_series, window_bounds

NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)


def test_window_parse_and_properties():
    assert Window.parse("7d") is Window.WEEK and Window.parse(" 24H ") is Window.DAY
    assert Window.parse("month") is Window.MONTH
    with pytest.raises(ValueError):
        Window.parse("1y")
    assert Window.DAY.bucket == "hour" and Window.MONTH.bucket == "day"
    assert Window.WEEK.duration == timedelta(days=7)
    since, until = window_bounds(Window.WEEK, NOW)
    assert until - since == timedelta(days=7) and until == NOW
    with pytest.raises(ValueError):
        window_bounds(Window.DAY, datetime(2026, 1, 1))


def test_scope_kinds():
    assert Scope.guild(1).kind is ScopeKind.GUILD
    assert Scope.channel(1, 2).kind is ScopeKind.CHANNEL
    assert Scope.user(1, 3).kind is ScopeKind.USER
    with pytest.raises(ValueError):
        Scope(1, channel_id=2, user_id=3)
    assert format_scope(Scope.channel(1, 2)) == "<#2>" and format_scope(Scope.user(1, 3)) == "<@3>"


def test_buckets_cover_the_window():
    since, until = window_bounds(Window.DAY, NOW)
    hours = bucket_starts(since, until, "hour")
    assert len(hours) == 25 and hours[0] == datetime(2026, 3, 14, 12, tzinfo=UTC) and hours[-1] == NOW.replace(minute=0)
    days = bucket_starts(*window_bounds(Window.MONTH, NOW), "day")
    assert len(days) == 31 and all(b - a == timedelta(days=1) for a, b in zip(days, days[1:], strict=False))
    assert bucket_key(days[0], "day") == "2026-02-13" and bucket_key(hours[0], "hour") == "2026-03-14 12"


def test_build_series_places_counts_and_ignores_outside_keys():
    starts = bucket_starts(*window_bounds(Window.WEEK, NOW), "day")
    rows = [("2026-03-15", "angry", 2), ("2026-03-08", "sad", 1), ("2026-03-10", "angry", 3), ("2026-01-01", "sad", 9)]
    series = build_series(rows, starts, "day")
    assert list(series) == ["sad", "angry"]  # emotion order, not input order
    assert series["angry"] == (0, 0, 3, 0, 0, 0, 0, 2)
    assert series["sad"] == (1, 0, 0, 0, 0, 0, 0, 0)


def test_rank_channels_by_negative_share():
    rows = [
        (1, "angry", 3), (1, "happy", 1),  # 75 %
        (2, "sad", 1), (2, "fearful", 1), (2, "calm", 2),  # 50 %
        (3, "angry", 2),  # 100 % but only 2 notes
        (4, "happy", 10),  # no negative notes
        (5, "sad", 6), (5, "neutral", 2),  # 75 %, more negative notes than channel 1
    ]  # fmt: skip
    ranked = rank_channels(rows)
    assert [c.channel_id for c in ranked] == [5, 1, 2]
    assert ranked[0].share == pytest.approx(0.75) and ranked[0].by_label == {"angry": 0, "fearful": 0, "sad": 6}
    assert [c.channel_id for c in rank_channels(rows, min_notes=1, limit=2)] == [3, 5]


def test_build_insights_totals_and_shares():
    ins = build_insights(
        Scope.guild(9), Window.WEEK, NOW,
        [("happy", 2), ("angry", 6), ("neutral", 0)],
        [("2026-03-14", "angry", 6), ("2026-03-15", "happy", 2)],
        [(7, "angry", 6), (7, "happy", 2)],
    )  # fmt: skip
    assert ins.total == 8 and ins.distribution == {"happy": 2, "angry": 6}
    assert ins.shares == {"happy": 0.25, "angry": 0.75}
    assert ins.bucket_totals[-2:] == (6, 2) and sum(ins.bucket_totals) == 8
    assert [c.channel_id for c in ins.channels] == [7]
    assert format_trend_summary(ins) == "Busiest day: Sat 14 Mar (6 notes). Most frequent: angry (75%)."


def test_shares_and_order():
    assert shares({}) == {} and shares({"a": 0}) == {}
    s = shares({"angry": 1, "sad": 3})
    assert s == {"angry": 0.25, "sad": 0.75} and sum(s.values()) == pytest.approx(1.0)
    assert order_labels(["zzz", "angry", "neutral", "aaa", "angry"]) == ["neutral", "angry", "aaa", "zzz"]
    assert order_labels(EMOTION_ORDER[::-1]) == list(EMOTION_ORDER)


def test_text_formatting():
    assert format_percent(0.457) == "46%" and format_percent(0.457, decimals=1) == "45.7%"
    assert format_percent(0.001) == "<1%" and format_percent(0.0) == "0%"
    assert text_bar(1.0, 10) == "█" * 10 and text_bar(0.0, 10) == " " * 10
    assert text_bar(0.5625, 4) == "██▎ " and len(text_bar(0.33, 7)) == 7
    lines = format_distribution({"sad": 1, "angry": 3})
    assert lines == ["`sad   ██▌       ` 25% (1)", "`angry ███████▌  ` 75% (3)"]
    assert format_distribution({}) == []


def test_embed_fields_stay_within_discord_limits():
    channel_rows = [(10_000_000_000 + c, lab, 5) for c in range(200) for lab in ("angry", "happy")]
    ins = build_insights(Scope.guild(1), Window.MONTH, NOW, [("angry", 1000), ("happy", 1000)], [], channel_rows,
                         max_channels=200)  # fmt: skip
    fields = insights_fields(ins)
    assert all(len(name) <= 256 and 0 < len(value) <= 1024 for name, value, _ in fields)
    names = [f[0] for f in fields]
    assert names[:3] == ["Notes analysed", "Window", "Scope"] and fields[0][1] == "2,000"
    assert len(format_channel_shares(ins.channels)) == 200
    channel_fields = insights_fields(build_insights(Scope.channel(1, 2), Window.DAY, NOW, [], [], []))
    assert "Channels with the most angry/fearful/sad notes" not in [f[0] for f in channel_fields]
    assert dict((n, v) for n, v, _ in channel_fields)["Emotions"] == "No voice notes analysed."
