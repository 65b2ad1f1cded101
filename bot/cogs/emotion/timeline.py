"""The timeline of a long voice note in the answer: one line and a compact strip image (issue 16).

For notes of 8 s or more the engine cuts the note into windows on speech and
merges them into segments (:mod:`ser_engine.timeline`); the service's
workers compute it with the overall emotion, from one STFT.  Here it becomes:

* one line, e.g. "Over time: mostly calm; angry from 0:12 to 0:18", added to
  the embed (field "Over time") or to the plain-text answer;
* a strip of 640 x 40 pixels, one colour per emotion along the note's time
  axis (light grey for pauses), with a tick every 5 s, sent as
  ``timeline.png`` with a text alternative (``discord.File(description=...)``)
  that lists every segment, shown as the embed's image.

The PNG is written with numpy and :mod:`zlib` (a few rectangles need no
plotting library; matplotlib would add about 29 MB to the bot's memory, see
:mod:`bot.insights.chart`), off the event loop (:func:`asyncio.to_thread`).
Colours are the insights chart's (:data:`bot.insights.EMOTION_COLOURS`), so an
emotion has one colour wherever the bot draws it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from typing import TYPE_CHECKING, Any, Final

import discord
import numpy as np

from ...insights import EMOTION_COLOURS

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.timeline import Timeline

__all__ = ["FILENAME", "TimelineParts", "alt_text", "render_strip_png", "timeline_of", "timeline_parts"]

FILENAME: Final[str] = "timeline.png"
_PAUSE: Final[str] = "#e6e6e6"
_TICK: Final[str] = "#4d4d4d"
_FALLBACK: Final[str] = "#8c8c8c"
_MAX_ALT: Final[int] = 1024  # Discord's limit for an attachment description


def timeline_of(prediction: Any) -> Timeline | None:
    """The prediction's timeline when the note was long enough to be cut into windows, else None."""
    timeline = getattr(prediction, "timeline", None)
    if timeline is None or not getattr(timeline, "is_cut", False) or not timeline.segments:
        return None
    return timeline  # type: ignore[no-any-return]


def _rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def _png(pixels: np.ndarray) -> bytes:
    """Encode an RGB image, shape (height, width, 3), uint8, as PNG (filter 0 per row, zlib level 6)."""
    height, width, _ = pixels.shape
    raw = np.zeros((height, 1 + 3 * width), np.uint8)
    raw[:, 1:] = pixels.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(
        b"IEND", b""
    )


def render_strip_png(timeline: Timeline, *, width: int = 640, height: int = 40) -> bytes:
    """Draw the timeline as a strip: time left to right, one colour per segment's emotion.

    Parameters
    ----------
    timeline : Timeline
        Segments with ``start_s``/``end_s`` in seconds within ``duration_s``.
    width, height : int
        Pixels; the lowest 6 rows carry a tick every 5 s of the note.

    Returns
    -------
    bytes
        A PNG image (8-bit RGB).

    Raises
    ------
    ValueError
        If ``width`` or ``height`` is below 8 pixels.
    """
    if width < 8 or height < 8:
        raise ValueError(f"render_strip_png: at least 8 x 8 pixels, got {width} x {height}")
    duration = max(timeline.duration_s, 1e-3)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = _rgb(_PAUSE)
    band = height - 6
    for seg in timeline.segments:
        a = int(round(seg.start_s / duration * width))
        b = max(a + 1, int(round(seg.end_s / duration * width)))
        img[:band, a:b] = _rgb(EMOTION_COLOURS.get(seg.label, _FALLBACK))
    img[band:] = 255
    for t in np.arange(0.0, duration + 1e-9, 5.0):
        x = min(width - 1, int(round(t / duration * width)))
        img[band:, x] = _rgb(_TICK)
    return _png(img)


def alt_text(timeline: Timeline) -> str:
    """The strip in words, for screen readers: every segment with its time and confidence (at most 1024 characters).

    Returns
    -------
    str
        e.g. ``"Emotion over time in a 20 s voice note: 0:00-0:08 angry (92%); 0:09-0:17 calm (80%)."``
    """
    from ser_engine.timeline import format_clock

    head = f"Emotion over time in a {timeline.duration_s:.0f} s voice note: "
    parts = [f"{format_clock(s.start_s)}-{format_clock(s.end_s)} {s.label} ({s.confidence:.0%})"
             for s in timeline.segments]  # fmt: skip
    text = head + "; ".join(parts) + ". Grey: pauses."
    if len(text) > _MAX_ALT:
        text = text[: _MAX_ALT - 1] + "…"
    return text


class TimelineParts:
    """What the answer gains from a timeline: the summary line and the strip image.

    Parameters
    ----------
    line : str
        "Over time: ..." (one line).
    png : bytes or None
        The strip, or None when files cannot be attached here.
    alt : str
        Its text alternative.
    """

    def __init__(self, line: str, png: bytes | None, alt: str) -> None:
        self.line = line
        self.png = png
        self.alt = alt

    def file(self) -> discord.File | None:
        """A fresh ``discord.File`` of the strip with its description (a File can be sent once), or None."""
        if self.png is None:
            return None
        return discord.File(io.BytesIO(self.png), filename=FILENAME, description=self.alt)

    def apply(self, embed: discord.Embed) -> discord.Embed:
        """Add the line as the field "Over time" and, with an image, show the strip in the embed."""
        embed.add_field(name="Over time", value=self.line.removeprefix("Over time: "), inline=False)
        if self.png is not None:
            embed.set_image(url=f"attachment://{FILENAME}")
        return embed


async def timeline_parts(prediction: Any, *, attach: bool = True) -> TimelineParts | None:
    """The line and strip of a long note's timeline (None for short notes or without a timeline).

    Parameters
    ----------
    prediction : Prediction
        From the service; its ``timeline`` (:class:`ser_engine.timeline.Timeline`) when it was asked for.
    attach : bool, default True
        Whether a file may be sent where the answer goes (the Attach Files permission);
        False gives the line alone.

    Returns
    -------
    TimelineParts or None
    """
    timeline = timeline_of(prediction)
    if timeline is None:
        return None
    png = await asyncio.to_thread(render_strip_png, timeline) if attach else None  # CPU work: off the event loop
    return TimelineParts(f"Over time: {timeline.summary()}", png, alt_text(timeline))
