"""The ``/insights`` chart: share of each emotion per day (or hour), stacked, as PNG.

Uses matplotlib's object API (:class:`matplotlib.figure.Figure` with the Agg
canvas) and never :mod:`matplotlib.pyplot`, so no global figure state is
created or leaked and it is safe to call from worker threads.

The functions are synchronous and CPU-bound (~0.1-0.3 s): from the bot, call
them with ``await asyncio.to_thread(render_trend_png, insights)``.

matplotlib is imported on the first chart, not with this module: charts are
drawn only for ``/insights``, and matplotlib adds ~29 MB to the bot's
resident memory (measured: ``matplotlib.figure`` + ``backend_agg`` +
``ticker`` on top of the bot's other imports, Python 3.11, matplotlib 3.x).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from bot.palette import EMOTION_COLOURS as PALETTE_COLOURS
from bot.palette import colour_hex

from .compute import Bucket, EmotionInsights, order_labels

__all__ = ["EMOTION_COLOURS", "render_share_chart_png", "render_trend_png"]

#: Colour of each emotion: the Okabe–Ito palette of :mod:`bot.palette` (the same as the embeds).
EMOTION_COLOURS: dict[str, str] = PALETTE_COLOURS
_EMPTY = "#eeeeee"


def _colour(label: str, i: int) -> str:
    return colour_hex(label, i)


def _tick_labels(starts: Sequence[datetime], bucket: Bucket) -> list[str]:
    if bucket == "hour":
        return [t.strftime("%H:00") if t.hour or i == 0 else t.strftime("%d %b") for i, t in enumerate(starts)]
    if len(starts) <= 10:
        return [t.strftime("%a\n%d %b") for t in starts]
    return [t.strftime("%d %b") for t in starts]


def render_share_chart_png(
    bucket_starts: Sequence[datetime],
    series: Mapping[str, Sequence[int]],
    *,
    bucket: Bucket = "day",
    title: str = "",
    width_px: int = 1000,
    height_px: int = 500,
    dpi: int = 100,
) -> bytes:
    """Render stacked emotion shares per bucket as a PNG image.

    Each bar is one UTC day (or hour) and is split into the share (percent)
    of each emotion among that bucket's notes; the number of notes is
    printed above each bar. Buckets without notes are drawn as pale grey
    bars.

    Parameters
    ----------
    bucket_starts : sequence of datetime
        Bucket starts (UTC), shape ``(n_buckets,)``.
    series : mapping of str to sequence of int
        Per label, notes per bucket, each of shape ``(n_buckets,)``.
    bucket : {"day", "hour"}
        Resolution, for the axis labels.
    title : str
        Figure title.
    width_px, height_px : int
        Image size in pixels.
    dpi : int
        Dots per inch (scales the fonts relative to the size).

    Returns
    -------
    bytes
        PNG file contents (``width_px`` x ``height_px``).

    Raises
    ------
    ValueError
        When a series' length differs from ``len(bucket_starts)``, or a count is negative.
    """
    n = len(bucket_starts)
    labels = order_labels(series)
    counts = np.zeros((len(labels), n), dtype=float)
    for i, lab in enumerate(labels):
        row = np.asarray(series[lab], dtype=float)
        if row.shape != (n,):
            raise ValueError(f"series {lab!r} has shape {row.shape}, expected ({n},)")
        counts[i] = row
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    totals = counts.sum(axis=0)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) * 100.0

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: see the module docstring
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(n)
    empty = totals == 0
    if n and empty.any() and not empty.all():
        ax.bar(x[empty], 100.0, width=0.8, color=_EMPTY, label="no notes")
    bottom = np.zeros(n)
    for i, lab in enumerate(labels):
        if not counts[i].any():
            continue
        ax.bar(
            x, share[i], width=0.8, bottom=bottom, color=_colour(lab, i), label=lab, edgecolor="white", linewidth=0.4
        )
        bottom += share[i]
    if n <= 40:
        size = 9 if n <= 14 else 7
        for xi, tot in zip(x, totals, strict=True):
            if tot > 0:
                ax.text(xi, 101.5, f"{int(tot)}", ha="center", va="bottom", fontsize=size, color="#333333")
    ax.set_ylim(0, 108)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
    ax.set_ylabel("share of notes")
    ax.set_xlim(-0.6, max(n, 1) - 0.4)
    ticks = _tick_labels(bucket_starts, bucket)
    step = max(1, int(np.ceil(n / 16)))
    ax.set_xticks(x[::step], [ticks[i] for i in range(0, n, step)], fontsize=9)
    unit = "hour" if bucket == "hour" else "day"
    ax.set_xlabel(f"UTC {unit} (number above a bar: voice notes analysed)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if totals.sum() == 0:
        ax.text(
            0.5,
            0.5,
            "No voice notes analysed in this window",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            color="#555555",
        )
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, reverse=True, fontsize=10)
    if title:
        ax.set_title(title, fontsize=13, loc="left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def render_trend_png(
    insights: EmotionInsights,
    *,
    title: str | None = None,
    width_px: int = 1000,
    height_px: int = 500,
    dpi: int = 100,
) -> bytes:
    """Render the trend chart of an :class:`~bot.insights.compute.EmotionInsights`.

    Parameters
    ----------
    insights : EmotionInsights
        From :meth:`bot.storage.Store.insights`.
    title : str, optional
        Default: ``"Emotion share per day, last 7 days (N notes)"``.
    width_px, height_px, dpi : int
        See :func:`render_share_chart_png`.

    Returns
    -------
    bytes
        PNG file contents.
    """
    if title is None:
        unit = "hour" if insights.bucket == "hour" else "day"
        noun = "note" if insights.total == 1 else "notes"
        title = f"Emotion share per {unit}, {insights.window.description} ({insights.total} {noun})"
    return render_share_chart_png(
        insights.bucket_starts,
        insights.series,
        bucket=insights.bucket,
        title=title,
        width_px=width_px,
        height_px=height_px,
        dpi=dpi,
    )
