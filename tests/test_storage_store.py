"""The Store against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from bot.insights import EMOTION_ORDER, NEGATIVE_EMOTIONS, render_trend_png
from bot.storage import (
    UNSET,
    GuildSettings,
    Scope,
    Store,
    StoreError,
    Window,
)
from bot.storage.models import Analysis, Base
from tests._storage_db import db_url_fixture, pg_admin_fixture, store_fixture  # noqa: F401 (fixtures)

NOW = datetime(2026, 3, 15, 12, 30, 15, 250_000, tzinfo=UTC)
G1, G2 = 111_111_111_111_111_111, 222_222_222_222_222_222
C = [900_000_000_000_000_001 + i for i in range(6)]  # C[0..3] in G1, C[4..5] in G2
U1, U2, U3 = 700_000_000_000_000_001, 700_000_000_000_000_002, 700_000_000_000_000_003


async def add(store: Store, *, user: int = U1, guild: int | None = G1, channel: int = C[0], label: str = "angry",
              confidence: float = 0.9, at: datetime = NOW, message: int | None = None) -> int | None:  # fmt: skip
    probs = {lab: (confidence if lab == label else (1 - confidence) / 7) for lab in EMOTION_ORDER}
    return await store.record_analysis(
        guild_id=guild,
        channel_id=channel,
        user_id=user,
        message_id=message or random.getrandbits(62) + 1,
        label=label,
        confidence=confidence,
        probabilities=probs,
        model_version="ravdess-8class@test",
        duration_s=3.2,
        created_at=at,
    )


async def rows_about(store: Store, user_id: int) -> dict[str, int]:
    """Count the rows of every table that has a ``user_id`` column."""
    out = {}
    async with store.engine.connect() as conn:
        for name, table in Base.metadata.tables.items():
            if "user_id" in table.c:
                out[name] = await conn.scalar(select(func.count()).select_from(table).where(table.c.user_id == user_id))
    return out


# ------------------------------------------------------------------ analyses


async def test_record_analysis_roundtrip_and_no_audio_column(store):
    rid = await add(store, guild=None, channel=C[1], label="sad", confidence=0.75)
    assert isinstance(rid, int)
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(Analysis.__table__).where(Analysis.id == rid))).mappings().one()
    assert row["guild_id"] is None and row["channel_id"] == C[1] and row["user_id"] == U1
    assert row["label"] == "sad" and row["confidence"] == pytest.approx(0.75)
    assert set(row["probabilities"]) == set(EMOTION_ORDER)
    assert row["probabilities"]["sad"] == pytest.approx(0.75)
    assert row["duration_s"] == pytest.approx(3.2)
    # Snowflakes survive as exact 64-bit integers; times come back as aware UTC.
    assert row["created_at"] == NOW


async def test_record_analysis_validates_input(store):
    with pytest.raises(ValueError):
        await add(store, confidence=1.5)
    with pytest.raises(ValueError):
        await add(store, user=0)
    with pytest.raises(ValueError):
        await add(store, at=datetime(2026, 1, 1))  # naive time
    assert (await rows_about(store, U1))["analyses"] == 0


# ------------------------------------------------------------------ insights


def _dataset(seed: int = 4) -> list[tuple[int | None, int, int, str, datetime]]:
    rng = random.Random(seed)
    weights = [3, 2, 4, 3, 4, 2, 1, 1]
    rows = []
    for _ in range(240):
        guild = rng.choice([G1, G1, G1, G2, None])
        channel = rng.choice(C[:4]) if guild == G1 else rng.choice(C[4:]) if guild == G2 else C[5]
        user = rng.choice([U1, U2, U3])
        label = rng.choices(EMOTION_ORDER, weights)[0]
        at = NOW - timedelta(seconds=rng.uniform(0, 35 * 86400))
        rows.append((guild, channel, user, label, at))
    # Edges: window start is inclusive, window end exclusive.
    rows += [
        (G1, C[0], U1, "angry", NOW - timedelta(days=7)),
        (G1, C[0], U1, "angry", NOW - timedelta(hours=24)),
        (G1, C[0], U1, "angry", NOW - timedelta(days=30)),
        (G1, C[1], U2, "fearful", NOW),
        (G1, C[1], U2, "fearful", NOW + timedelta(minutes=5)),
    ]
    return rows


def _expected(rows, scope: Scope, window: Window):
    since, until = NOW - window.duration, NOW
    sel = [
        r for r in rows
        if r[0] == scope.guild_id and since <= r[4] < until
        and (scope.channel_id is None or r[1] == scope.channel_id)
        and (scope.user_id is None or r[2] == scope.user_id)
    ]  # fmt: skip
    dist = Counter(r[3] for r in sel)
    step = timedelta(hours=1) if window is Window.DAY else timedelta(days=1)
    first = since.replace(minute=0, second=0, microsecond=0)
    if window is not Window.DAY:
        first = first.replace(hour=0)
    per_bucket = Counter(((r[4] - first) // step, r[3]) for r in sel)
    chans: dict[int, list[int]] = {}
    for r in sel:
        t = chans.setdefault(r[1], [0, 0])
        t[0] += 1
        t[1] += r[3] in NEGATIVE_EMOTIONS
    ranked = sorted(
        ((c, tot, neg) for c, (tot, neg) in chans.items() if tot >= 3 and neg > 0),
        key=lambda x: (-x[2] / x[1], -x[2], x[0]),
    )[:5]
    return sel, dist, per_bucket, ranked


async def test_insights_numbers_match_inserted_rows(store):
    rows = _dataset()
    for guild, channel, user, label, at in rows:
        await add(store, guild=guild, channel=channel, user=user, label=label, at=at)
    scopes = (Scope.guild(G1), Scope.channel(G1, C[1]), Scope.user(G1, U2), Scope.guild(G2))
    for window, scope in itertools.product(Window, scopes):
        sel, dist, per_bucket, ranked = _expected(rows, scope, window)
        ins = await store.insights(scope, window, now=NOW)
        assert ins.total == len(sel) > 0
        assert ins.distribution == {lab: dist[lab] for lab in EMOTION_ORDER if dist[lab]}
        assert list(ins.distribution) == [lab for lab in EMOTION_ORDER if dist[lab]]
        assert sum(ins.bucket_totals) == ins.total
        for label, series in ins.series.items():
            assert list(series) == [per_bucket[(i, label)] for i in range(len(series))], (scope, label)
        n_expected = 25 if window is Window.DAY else window.duration.days + 1
        assert len(ins.bucket_starts) == n_expected
        assert [(c.channel_id, c.total, c.negative) for c in ins.channels] == ranked
        # The single-purpose queries agree with the combined one.
        assert await store.count_analysed(scope, window, now=NOW) == ins.total
        assert await store.emotion_distribution(scope, window, now=NOW) == ins.distribution
        starts, series = await store.counts_per_bucket(scope, window, now=NOW)
        assert tuple(starts) == ins.bucket_starts and series == ins.series
        chans = await store.negative_channels(scope, window, now=NOW)
        assert [(c.channel_id, c.total, c.negative) for c in chans] == ranked


async def test_insights_of_empty_scope_and_chart(store):
    ins = await store.insights(Scope.guild(G1), Window.WEEK, now=NOW)
    assert ins.total == 0 and ins.distribution == {} and ins.channels == ()
    await add(store, label="angry", at=NOW - timedelta(days=1))
    await add(store, label="happy", at=NOW - timedelta(days=1))
    ins = await store.insights(Scope.guild(G1), Window.WEEK, now=NOW)
    png = await asyncio.to_thread(render_trend_png, ins)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ------------------------------------------------------------------- alerts


async def _alerting_guild(store: Store, cooldown_s: int = 300) -> GuildSettings:
    return await store.update_guild_settings(
        G1,
        modlog_channel_id=C[3],
        alert_emotions=["angry", "fearful"],
        alert_threshold=0.7,
        alert_cooldown_s=cooldown_s,
    )


async def test_cooldown_gives_one_alert_per_user_and_channel(store):
    await _alerting_guild(store, cooldown_s=300)
    times = [NOW + timedelta(seconds=s) for s in (0, 20, 45, 120, 299)]
    decisions = [await store.should_alert(G1, C[0], U1, "angry", 0.95, now=t) for t in times]
    assert decisions == [True, False, False, False, False]
    # Other users and other channels have their own cool-down.
    assert await store.should_alert(G1, C[0], U2, "angry", 0.95, now=NOW + timedelta(seconds=30))
    assert await store.should_alert(G1, C[1], U1, "fearful", 0.8, now=NOW + timedelta(seconds=30))
    # Once the cool-down has passed, the same user alerts again, once.
    later = NOW + timedelta(seconds=300)
    assert await store.should_alert(G1, C[0], U1, "angry", 0.9, now=later)
    assert not await store.should_alert(G1, C[0], U1, "angry", 0.9, now=later + timedelta(seconds=1))


async def test_alert_requires_emotion_threshold_and_modlog(store):
    assert not await store.should_alert(G1, C[0], U1, "angry", 0.99, now=NOW)  # no mod-log channel yet
    settings = await _alerting_guild(store)
    assert not await store.should_alert(G1, C[0], U1, "happy", 0.99, now=NOW, settings=settings)
    assert not await store.should_alert(G1, C[0], U1, "angry", 0.69, now=NOW, settings=settings)
    # Below-threshold notes did not consume the cool-down.
    assert await store.should_alert(G1, C[0], U1, "angry", 0.70, now=NOW, settings=settings)
    off = await store.update_guild_settings(G1, modlog_channel_id=None)
    assert off.modlog_channel_id is None and not off.alerts_enabled
    assert not await store.should_alert(G1, C[2], U1, "angry", 0.99, now=NOW)


async def test_concurrent_alerts_inside_cooldown_yield_exactly_one(store):
    settings = await _alerting_guild(store, cooldown_s=600)
    calls = [
        store.should_alert(G1, C[0], U1, "angry", 0.9, now=NOW + timedelta(seconds=i % 5), settings=settings)
        for i in range(12)
    ]
    results = await asyncio.gather(*calls)
    assert sum(results) == 1


# ----------------------------------------------------------------- privacy


async def test_delete_user_data_leaves_zero_rows(store):
    await _alerting_guild(store)
    for i in range(5):
        await add(store, user=U1, channel=C[i % 3], at=NOW - timedelta(hours=i))
        await add(store, user=U2, at=NOW - timedelta(hours=i))
    await add(store, user=U1, guild=None, channel=C[5])
    assert await store.should_alert(G1, C[0], U1, "angry", 0.9, now=NOW)
    await store.update_speaker_stats(U1, "fc-1", np.ones((3, 4)), now=NOW)
    await store.set_feedback_consent(U1, True, now=NOW)
    await store.record_feedback(
        user_id=U1, guild_id=G1, message_id=5, label="sad", features=np.arange(4.0),
        feature_config_version="fc-1", consent=True, created_at=NOW,
    )  # fmt: skip
    before = await rows_about(store, U1)
    summary = await store.user_summary(U1)
    assert summary.analyses == before["analyses"] == 6
    assert summary.direct_messages == 1 and summary.guilds == 1
    assert summary.analyses_by_label == {"angry": 6}
    assert summary.feedback == 1 and summary.feedback_consent is True
    assert summary.speaker_stats == 1 and summary.alert_log == 1
    assert summary.last_analysis_at == NOW and summary.first_analysis_at == NOW - timedelta(hours=4)
    assert summary.total_rows == sum(before.values())

    counts = await store.delete_user_data(U1)
    assert counts.analyses == 6 and counts.feedback == 1 and counts.speaker_stats == 1
    assert counts.alert_log == 1 and counts.feedback_consent == 1
    assert counts.total == sum(before.values())
    assert sum((await rows_about(store, U1)).values()) == 0
    assert (await store.user_summary(U1)).total_rows == 0
    assert (await rows_about(store, U2))["analyses"] == 5  # nobody else's data is touched


async def test_opt_out_prevents_storage_everywhere_and_opt_in_reverses(store, db_url):
    assert not await store.is_opted_out(U1)
    assert await add(store, user=U1) is not None
    assert await store.opt_out(U1, now=NOW) is True
    assert await store.opt_out(U1, now=NOW) is False  # idempotent
    assert await store.is_opted_out(U1) and store.known_opted_out(U1)
    assert await add(store, user=U1, guild=G2, channel=C[4]) is None
    assert await add(store, user=U1, guild=None, channel=C[5]) is None
    assert await store.update_speaker_stats(U1, "fc-1", np.ones(3)) is None
    fb = await store.record_feedback(
        user_id=U1, guild_id=G1, message_id=7, label="sad", features=np.ones(3),
        feature_config_version="fc-1", consent=True,
    )  # fmt: skip
    assert fb is None
    rows = await rows_about(store, U1)
    assert rows["analyses"] == 1 and rows["speaker_stats"] == 0 and rows["feedback"] == 0
    summary = await store.user_summary(U1)
    assert summary.opted_out and summary.opted_out_at == NOW
    # Deleting one's data keeps the opt-out.
    await store.delete_user_data(U1)
    assert await store.is_opted_out(U1)
    # A new process knows the opt-out from the database, even before asking.
    other = await Store.open(db_url)
    try:
        assert other.known_opted_out(U1) and not other.known_opted_out(U2)
    finally:
        await other.close()
    assert await store.opt_in(U1) is True
    assert await store.opt_in(U1) is False
    assert not await store.is_opted_out(U1) and not store.known_opted_out(U1)
    assert await add(store, user=U1) is not None


# --------------------------------------------------------------- retention


async def test_purge_respects_each_guilds_retention(store):
    await store.update_guild_settings(G1, retention_days=7)
    ages = [1, 6, 8, 20, 29, 31, 60]
    for d in ages:
        await add(store, guild=G1, channel=C[0], at=NOW - timedelta(days=d))
        await add(store, guild=G2, channel=C[4], at=NOW - timedelta(days=d))  # default 30 days
        await add(store, guild=None, channel=C[5], at=NOW - timedelta(days=d))  # DMs: default
    await store.record_feedback(
        user_id=U2,
        guild_id=G1,
        message_id=1,
        label="sad",
        features=np.ones(2),
        feature_config_version="v",
        consent=False,
        created_at=NOW - timedelta(days=10),
    )
    await store.record_feedback(user_id=U2, guild_id=G1, message_id=2, label="sad", features=np.ones(2),
                                feature_config_version="v", consent=True, created_at=NOW - timedelta(days=10))  # fmt: skip
    await _alerting_guild(store)  # G1: keep retention 7
    assert await store.should_alert(G1, C[0], U3, "angry", 0.9, now=NOW - timedelta(days=2))
    assert await store.should_alert(G1, C[1], U3, "angry", 0.9, now=NOW - timedelta(hours=1))

    counts = await store.purge_expired(now=NOW)
    assert counts.analyses == 5 + 2 + 2 and counts.feedback == 1 and counts.alert_log == 1
    async with store.engine.connect() as conn:
        left = (await conn.execute(select(Analysis.guild_id, Analysis.created_at))).all()
    kept = Counter((g, round((NOW - t) / timedelta(days=1))) for g, t in left)
    assert kept == Counter([(G1, 1), (G1, 6)] + [(g, d) for g in (G2, None) for d in (1, 6, 8, 20, 29)])
    assert [s.label for s in await store.training_feedback("v")] == ["sad"]  # consented feedback stays
    assert (await store.purge_expired(now=NOW)).analyses == 0


# ----------------------------------------------------------------- settings


async def test_guild_settings_defaults_partial_updates_and_validation(store):
    s = await store.get_guild_settings(G1)
    assert s == GuildSettings(G1)
    assert s.retention_days == 30 and s.reply_mode == "reply" and not s.auto_analyse  # consent first: off
    s = await store.update_guild_settings(G1, reply_mode="dm", denied_channels=[C[1]], allowed_channels=[C[0], C[1]])
    assert s.reply_mode == "dm" and s.denied_channels == {C[1]} and s.allowed_channels == {C[0], C[1]}
    s = await store.update_guild_settings(G1, alert_threshold=0.5, modlog_channel_id=UNSET)
    assert s.reply_mode == "dm" and s.alert_threshold == 0.5 and s.denied_channels == {C[1]}
    assert await store.get_guild_settings(G1) == s
    assert await store.get_guild_settings(G2) == GuildSettings(G2)
    assert not any(s.analyses_channel(c) for c in C[:3])  # lists set, but analysis is still off (consent first)
    s = await store.update_guild_settings(G1, auto_analyse=True)
    assert s.analyses_channel(C[0]) and not s.analyses_channel(C[1]) and not s.analyses_channel(C[2])
    assert s.analyses_channel(C[5], parent_id=C[0]) and not s.analyses_channel(C[0], parent_id=C[1])
    for bad in ({"reply_mode": "shout"}, {"alert_threshold": 1.5}, {"retention_days": 0},
                {"alert_cooldown_s": -1}, {"allowed_channels": [-3]}):  # fmt: skip
        with pytest.raises(ValueError):
            await store.update_guild_settings(G1, **bad)
    assert await store.get_guild_settings(G1) == s
    s = await store.update_guild_settings(G1, auto_analyse=False)
    assert not s.analyses_channel(C[0])


async def test_concurrent_updates_of_different_settings_are_not_lost(store):
    await asyncio.gather(
        store.update_guild_settings(G1, reply_mode="dm"),
        store.update_guild_settings(G1, retention_days=9),
        store.update_guild_settings(G1, alert_cooldown_s=42),
        store.update_guild_settings(G1, modlog_channel_id=C[3]),
    )
    s = await store.get_guild_settings(G1)
    assert (s.reply_mode, s.retention_days, s.alert_cooldown_s, s.modlog_channel_id) == ("dm", 9, 42, C[3])


# ------------------------------------------------------ speaker statistics


async def test_speaker_stats_match_numpy_and_survive_concurrency(store):
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[0, 5, -3], scale=[1, 2, 0.5], size=(24, 3))
    await store.update_speaker_stats(U1, "fc-1", x[:10], now=NOW)
    await asyncio.gather(*(store.update_speaker_stats(U1, "fc-1", x[i], now=NOW) for i in range(10, 24)))
    st = await store.get_speaker_stats(U1, "fc-1")
    assert st is not None and st.n == 24  # no update lost
    np.testing.assert_allclose(st.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(st.variance, x.var(axis=0, ddof=1), rtol=1e-10)
    with pytest.raises(ValueError):
        await store.update_speaker_stats(U1, "fc-1", np.ones(4))
    assert (await store.get_speaker_stats(U1, "fc-1")).n == 24
    assert await store.get_speaker_stats(U1, "fc-2") is None
    assert await store.get_speaker_stats(U2, "fc-1") is None


# --------------------------------------------------------------- feedback


async def test_feedback_consent_and_training_selection(store):
    vec = np.linspace(-1, 1, 6).astype(np.float32)
    await store.set_feedback_consent(U1, True, now=NOW)
    assert await store.get_feedback_consent(U1) is True and await store.get_feedback_consent(U2) is None
    a = await store.record_feedback(
        user_id=U1,
        guild_id=G1,
        message_id=1,
        label="angry",
        features=vec,
        feature_config_version="fc-1",
        consent=True,
        created_at=NOW,
    )
    await store.record_feedback(
        user_id=U1,
        guild_id=None,
        message_id=2,
        label="calm",
        features=vec,
        feature_config_version="fc-2",
        consent=True,
        created_at=NOW,
    )
    await store.record_feedback(user_id=U2, guild_id=G1, message_id=3, label="sad", features=vec,
                                feature_config_version="fc-1", consent=False, created_at=NOW)  # fmt: skip
    samples = await store.training_feedback("fc-1")
    assert [(s.id, s.user_id, s.label) for s in samples] == [(a, U1, "angry")]
    np.testing.assert_array_equal(samples[0].features, vec)
    assert samples[0].features.dtype == np.float32 and samples[0].created_at == NOW
    await store.set_feedback_consent(U1, False, now=NOW)  # withdrawing consent covers stored rows
    assert await store.training_feedback("fc-1") == [] and await store.training_feedback("fc-2") == []
    with pytest.raises(ValueError):
        await store.record_feedback(user_id=U1, guild_id=G1, message_id=4, label="sad",
                                    features=np.array([np.nan]), feature_config_version="fc-1", consent=True)  # fmt: skip


async def test_delete_guild_data(store):
    await _alerting_guild(store)
    await add(store, guild=G1)
    await add(store, guild=G2, channel=C[4])
    assert await store.should_alert(G1, C[0], U1, "angry", 0.9, now=NOW)
    assert await store.delete_guild_data(G1) == 3
    assert await store.get_guild_settings(G1) == GuildSettings(G1)
    assert await store.count_analysed(Scope.guild(G2), Window.DAY, now=NOW + timedelta(seconds=1)) == 1


async def test_store_error_for_a_non_connectivity_failure(store):
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: Analysis.__table__.drop(c))
    with pytest.raises(StoreError) as info:
        await add(store)
    assert type(info.value) is StoreError  # not "unavailable": the database answered
