"""Emotion colours: the Okabe–Ito colour-blind-safe palette, one definition for embeds and charts.

Okabe M, Ito K (2008) "Color Universal Design (CUD): how to make figures and
presentations that are friendly to colorblind people", https://jfly.uni-koeln.de/color/
(the eight colours, plus the grey #999999 that R's ``palette.colors("Okabe-Ito")``
adds). The colours stay distinct for the common forms of colour-vision
deficiency (protan, deutan, tritan); in particular angry (vermillion) and calm
(sky blue) are not a red–green pair. Emotions are also always named in text,
so colour is never the only cue.
"""

from __future__ import annotations

__all__ = ["OKABE_ITO", "EMOTION_COLOURS", "FALLBACK_COLOURS", "colour_hex", "colour_int"]

#: The Okabe–Ito palette by name, as ``#rrggbb``.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}

#: Colour of each RAVDESS emotion (Livingstone & Russo 2018), used by the answer embeds, the alert
#: embeds and every chart.
EMOTION_COLOURS: dict[str, str] = {
    "neutral": OKABE_ITO["grey"],
    "calm": OKABE_ITO["sky_blue"],
    "happy": OKABE_ITO["yellow"],
    "sad": OKABE_ITO["blue"],
    "angry": OKABE_ITO["vermillion"],
    "fearful": OKABE_ITO["reddish_purple"],
    "disgust": OKABE_ITO["bluish_green"],
    "surprised": OKABE_ITO["orange"],
}

#: Colours for labels outside :data:`EMOTION_COLOURS` (a model with other labels), in turn.
FALLBACK_COLOURS: tuple[str, ...] = tuple(OKABE_ITO[n] for n in ("black", "orange", "sky_blue", "bluish_green",
                                                                  "yellow", "blue", "vermillion", "reddish_purple"))


def colour_hex(label: str, index: int = 0) -> str:
    """The ``#rrggbb`` colour of ``label``; an unknown label gets ``FALLBACK_COLOURS[index % 8]``."""
    return EMOTION_COLOURS.get(label, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def colour_int(label: str, index: int = 0) -> int:
    """:func:`colour_hex` as the integer a :class:`discord.Embed` takes (``0xRRGGBB``).

    Black would read as "no colour" to Discord, so it is sent as ``0x010101``.
    """
    return int(colour_hex(label, index)[1:], 16) or 0x010101
