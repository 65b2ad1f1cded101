"""Turn a :class:`~ser_engine.predict.Prediction` into a Discord embed or plain text."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.palette import colour_int

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

# ---- user-facing strings of the answers (one place, so they can be translated as a whole) ----
#: Footer of every answer: what the estimate is, and how to opt out.
FOOTER = (
    "Estimated from the voice alone by a model trained on acted English speech (RAVDESS). It can be wrong. "
    "Don't want your voice analysed? /privacy optout"
)
TITLE_SURE = "{emoji} {Label}"
DESCRIPTION_SURE = "Detected emotion: **{label}**"
TITLE_UNSURE = "{emoji} Unsure: {First} or {Second}?"
DESCRIPTION_UNSURE = (
    "I'm not sure. It sounds most like **{first}** ({p_first}) or **{second}** ({p_second}), "
    "but I'm below my confidence threshold of {threshold}."
)
TEXT_SURE = "{emoji} Detected emotion: **{label}** ({confidence} confidence, {seconds} analysed)"
TEXT_UNSURE = "{emoji} Unsure: **{first}** ({p_first}) or **{second}** ({p_second})? ({seconds} analysed)"
FIELD_CONFIDENCE = "Confidence"
FIELD_ANALYSED = "Analysed"
ANALYSED_VALUE = "{seconds} of audio"
FIELD_OTHERS = "Other emotions"
TEXT_FOOTER = "-# Don't want your voice analysed? /privacy optout"
#: Emoji of an unsure answer.
UNSURE_EMOJI = "\N{THINKING FACE}"

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


def _top_two(prediction: Prediction) -> tuple[tuple[str, float], tuple[str, float]]:
    """The two most probable labels with their probabilities, most probable first."""
    ranked = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])
    first = ranked[0] if ranked else (prediction.label, prediction.confidence)
    second = ranked[1] if len(ranked) > 1 else (first[0], 0.0)
    return first, second


def _unsure_fields(prediction: Prediction, unsure_below: float | None) -> dict[str, str]:
    (first, p1), (second, p2) = _top_two(prediction)
    threshold = f"{unsure_below:.0%}" if unsure_below is not None else "its threshold"
    return {"first": first, "second": second, "First": first.capitalize(), "Second": second.capitalize(),
            "p_first": f"{p1:.1%}", "p_second": f"{p2:.1%}", "threshold": threshold}  # fmt: skip


def build_embed(
    prediction: Prediction, *, source: str | None = None, unsure_below: float | None = None
) -> discord.Embed:
    """The answer embed: emotion with emoji, confidence, the other classes, analysed duration.

    When the prediction is unsure (``prediction.unsure``: its confidence is
    below the bundle's ``unsure_below``), the title and description say so and
    name the two most probable emotions with their probabilities; it never
    reads "Detected emotion" then. The colour is the top emotion's
    (:mod:`bot.palette`, Okabe–Ito); the footer names ``/privacy optout``.

    Parameters
    ----------
    prediction : Prediction
        The engine's result (``confidence`` and ``probabilities`` in [0, 1],
        ``duration_s`` in seconds).
    source : str, optional
        What was analysed (a file name), shown as the embed's author line.
    unsure_below : float, optional
        The model's threshold in [0, 1], quoted in an unsure answer.
    """
    label = prediction.label
    if prediction.unsure:
        fields = _unsure_fields(prediction, unsure_below)
        title = TITLE_UNSURE.format(emoji=UNSURE_EMOJI, **fields)
        description = DESCRIPTION_UNSURE.format(**fields)
    else:
        title = TITLE_SURE.format(emoji=EMOJI.get(label, _FALLBACK_EMOJI), Label=label.capitalize())
        description = DESCRIPTION_SURE.format(label=label)
    embed = discord.Embed(title=title, description=description, colour=colour_int(label))
    if source:
        embed.set_author(name=source[:256])
    embed.add_field(name=FIELD_CONFIDENCE, value=f"{prediction.confidence:.1%}", inline=True)
    embed.add_field(name=FIELD_ANALYSED, value=ANALYSED_VALUE.format(seconds=f"{prediction.duration_s:.1f} s"),
                    inline=True)  # fmt: skip
    others = probability_bars(prediction.probabilities, exclude=label)
    if others:
        embed.add_field(name=FIELD_OTHERS, value=f"```\n{others}\n```", inline=False)
    embed.set_footer(text=FOOTER)
    return embed


def build_text(prediction: Prediction, *, unsure_below: float | None = None) -> str:
    """The same answer as plain text, for channels where the bot may not embed links (unsure as in :func:`build_embed`)."""
    label = prediction.label
    others = probability_bars(prediction.probabilities, exclude=label)
    seconds = f"{prediction.duration_s:.1f} s"
    if prediction.unsure:
        text = TEXT_UNSURE.format(emoji=UNSURE_EMOJI, seconds=seconds, **_unsure_fields(prediction, unsure_below))
    else:
        text = TEXT_SURE.format(emoji=EMOJI.get(label, _FALLBACK_EMOJI), label=label,
                                confidence=f"{prediction.confidence:.1%}", seconds=seconds)  # fmt: skip
    body = f"{text}\n```\n{others}\n```" if others else text
    return f"{body}\n{TEXT_FOOTER}"


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
        colour=colour_int(label),
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
