"""The stacked emotion-share chart: a decodable PNG that shows the data."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from bot.insights import EMOTION_COLOURS, Scope, Window, build_insights, render_share_chart_png, render_trend_png

NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def _pixels_of(img: np.ndarray, hex_colour: str, tol: int = 6) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(img.astype(int) - rgb) <= tol, axis=-1).sum())


def _insights(label_counts: dict[str, list[int]], window: Window = Window.WEEK):
    ins0 = build_insights(Scope.guild(1), window, NOW, [], [], [])
    keys = [t.strftime("%Y-%m-%d") for t in ins0.bucket_starts]
    rows = [(keys[i], lab, n) for lab, counts in label_counts.items() for i, n in enumerate(counts) if n]
    totals = [(lab, sum(c)) for lab, c in label_counts.items()]
    return build_insights(Scope.guild(1), window, NOW, totals, rows, [])


def test_png_decodes_at_requested_size():
    ins = _insights({"angry": [0, 1, 2, 3, 0, 1, 0, 4], "calm": [1, 1, 0, 3, 0, 0, 2, 1]})
    img = _decode(render_trend_png(ins, width_px=900, height_px=450, dpi=100))
    assert img.shape == (450, 900, 3)


def test_chart_shows_each_emotion_in_proportion():
    # Every bar all angry, then every bar half angry / half sad: the red area halves.
    all_angry = _decode(render_trend_png(_insights({"angry": [2] * 8})))
    half = _decode(render_trend_png(_insights({"angry": [2] * 8, "sad": [2] * 8})))
    red_all = _pixels_of(all_angry, EMOTION_COLOURS["angry"])
    red_half = _pixels_of(half, EMOTION_COLOURS["angry"])
    blue_half = _pixels_of(half, EMOTION_COLOURS["sad"])
    assert _pixels_of(all_angry, EMOTION_COLOURS["sad"]) == 0
    assert red_all > 50_000
    assert red_half == pytest.approx(red_all / 2, rel=0.1)
    assert blue_half == pytest.approx(red_half, rel=0.1)


def test_empty_window_renders_a_message_not_an_error():
    img = _decode(render_trend_png(build_insights(Scope.guild(1), Window.DAY, NOW, [], [], [])))
    assert img.shape == (500, 1000, 3)
    # Neutral's grey may occur in anti-aliased text; the coloured emotions must not appear.
    assert all(_pixels_of(img, c) == 0 for c in EMOTION_COLOURS.values() if c != EMOTION_COLOURS["neutral"])


def test_rendering_is_deterministic_thread_safe_and_leaves_no_pyplot_figures():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    ins = [_insights({"angry": [i % 3] * 8, "happy": [1] * 8}) for i in range(4)]
    sequential = [render_trend_png(x) for x in ins]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(render_trend_png, ins))
    assert parallel == sequential
    assert plt.get_fignums() == before


def test_invalid_series_are_refused():
    starts = [NOW - timedelta(days=1), NOW]
    with pytest.raises(ValueError):
        render_share_chart_png(starts, {"angry": [1, 2, 3]})
    with pytest.raises(ValueError):
        render_share_chart_png(starts, {"angry": [1, -1]})
