"""Turn a :class:`~ser_engine.predict.Prediction` into a Discord embed or plain text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.predict import Prediction

__all__ = ["EMOJI", "build_alert_embed", "build_embed", "build_text", "probability_bars", "format_duration"]

#: An emoji per RAVDESS emotion (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391).
EMOJI: dict[str, str] = {
    "neutral": "\N{NEUTRAL FACE}",
    "calm": "\N{RELIEVED FACE}",
    "happy": "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}",
    "sad": "\N{CRYING FACE}",
    "angry": "\N{ANGRY FACE}",
    "fearful": "\N{FEARFUL FACE}",
    "disgust": "\N{NAUSEATED FACE}",
    "surprised": "\N{HUSHED FACE}",
}
_FALLBACK_EMOJI = "\N{SPEECH BALLOON}"

_COLOURS: dict[str, int] = {
    "neutral": 0x95A5A6,
    "calm": 0x1ABC9C,
    "happy": 0xF1C40F,
    "sad": 0x3498DB,
    "angry": 0xE74C3C,
    "fearful": 0x9B59B6,
    "disgust": 0x2ECC71,
    "surprised": 0xE67E22,
}

FOOTER = "Estimated from the voice alone by a model trained on acted English speech (RAVDESS). It can be wrong."

_BAR_CELLS = 10


def probability_bars(probabilities: dict[str, float], *, exclude: str | None = None) -> str:
    """Render class probabilities as aligned text bars, most likely first.

    Parameters
    ----------
    probabilities : dict[str, float]
        Probability per label, each in [0, 1].
    exclude : str, optional
        A label to leave out (the headline one).

    Returns
    -------
    str
        One line per label: ``"sad      ███░░░░░░░  31.2%"``.
    """
    items = sorted(((k, v) for k, v in probabilities.items() if k != exclude), key=lambda kv: -kv[1])
    if not items:
        return ""
    width = max(len(label) for label, _ in items)
    lines = []
    for label, prob in items:
        cells = min(_BAR_CELLS, max(0, round(prob * _BAR_CELLS)))
        lines.append(f"{label:<{width}} {'█' * cells}{'░' * (_BAR_CELLS - cells)} {prob:6.1%}")
    return "\n".join(lines)


def build_embed(prediction: Prediction, *, source: str | None = None) -> discord.Embed:
    """The answer embed: emotion with emoji, confidence, the other classes, analysed duration.

    Parameters
    ----------
    prediction : Prediction
        The engine's result (``confidence`` and ``probabilities`` in [0, 1],
        ``duration_s`` in seconds).
    source : str, optional
        What was analysed (a file name), shown as the embed's author line.
    """
    label = prediction.label
    embed = discord.Embed(
        title=f"{EMOJI.get(label, _FALLBACK_EMOJI)} {label.capitalize()}",
        description=f"Detected emotion: **{label}**",
        colour=_COLOURS.get(label, 0x5865F2),
    )
    if source:
        embed.set_author(name=source[:256])
    embed.add_field(name="Confidence", value=f"{prediction.confidence:.1%}", inline=True)
    embed.add_field(name="Analysed", value=f"{prediction.duration_s:.1f} s of audio", inline=True)
    others = probability_bars(prediction.probabilities, exclude=label)
    if others:
        embed.add_field(name="Other emotions", value=f"```\n{others}\n```", inline=False)
    embed.set_footer(text=FOOTER)
    return embed


def build_text(prediction: Prediction) -> str:
    """The same answer as plain text, for channels where the bot may not embed links."""
    label = prediction.label
    others = probability_bars(prediction.probabilities, exclude=label)
    text = (
        f"{EMOJI.get(label, _FALLBACK_EMOJI)} Detected emotion: **{label}** "
        f"({prediction.confidence:.1%} confidence, {prediction.duration_s:.1f} s analysed)"
    )
    return f"{text}\n```\n{others}\n```" if others else text


def format_duration(seconds: float) -> str:
    """``600`` -> ``"10 min"``, ``5400`` -> ``"1 h 30 min"``, ``45`` -> ``"45 s"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def build_alert_embed(message: discord.Message, prediction: Prediction, *, cooldown_s: float) -> discord.Embed:
    """The mod-log alert: emotion, confidence, author, channel and a jump link to the voice note.

    Parameters
    ----------
    message : discord.Message
        The voice note (in a guild).
    prediction : Prediction
        Its analysis (``confidence`` in [0, 1]).
    cooldown_s : float
        The guild's alert cool-down in seconds, stated in the footer.
    """
    label = prediction.label
    author = message.author
    channel = message.channel
    embed = discord.Embed(
        title=f"{EMOJI.get(label, _FALLBACK_EMOJI)} Voice note alert: {label}",
        description=f"{author.mention} sounded **{label}** in {getattr(channel, 'mention', '#?')}.",
        colour=_COLOURS.get(label, 0x5865F2),
        timestamp=message.created_at,
    )
    embed.add_field(name="Emotion", value=label, inline=True)
    embed.add_field(name="Confidence", value=f"{prediction.confidence:.1%}", inline=True)
    name = discord.utils.escape_markdown(str(author))
    embed.add_field(name="Author", value=f"{author.mention} ({name}, id {author.id})", inline=False)
    embed.add_field(name="Channel", value=getattr(channel, "mention", str(channel.id)), inline=True)
    embed.add_field(name="Message", value=f"[Jump to the voice note]({message.jump_url})", inline=True)
    embed.set_footer(
        text=f"At most one alert per member per channel every {format_duration(cooldown_s)}. "
        "Estimated from the voice alone; it can be wrong."
    )
    return embed
