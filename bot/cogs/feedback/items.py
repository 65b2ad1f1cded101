"""Persistent feedback buttons: everything a click needs is in the ``custom_id``.

A ``custom_id`` reads ``fb:<action>:<kind>:<speaker>:<channel>:<key>:<label>``:

* ``action``: ``c`` confirm the label, ``x`` pick another one, ``l`` this
  label (from the picker), ``y`` / ``n`` the answer to the consent question;
* ``kind``: ``n`` for a voice note or message (``channel`` and ``key`` are its
  channel and message ids, so its audio can be fetched again after a
  restart), ``i`` for an ``/emotion`` upload (``key`` is the interaction id);
* ``speaker``: the only user whose clicks count;
* ``label``: the emotion the click is about.

The buttons are :class:`discord.ui.DynamicItem` s matched by a regular
expression, so they keep working after the bot restarts (no view needs to be
kept in memory). Discord allows 100 characters; three snowflakes (at most 20
digits each) and a label of up to 32 characters fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import discord

if TYPE_CHECKING:  # pragma: no cover
    from .cog import FeedbackCog

__all__ = ["Action", "FeedbackButton", "FeedbackRef", "LABEL_RE", "custom_id"]

#: What a button does (see the module docstring).
Action = Literal["c", "x", "l", "y", "n"]
#: Labels that fit in a ``custom_id``.
LABEL_RE = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_TEMPLATE = (
    r"fb:(?P<action>[cxlyn]):(?P<kind>[ni]):(?P<speaker>\d{1,20}):(?P<channel>\d{1,20}):(?P<key>\d{1,20}):"
    r"(?P<label>[A-Za-z0-9_\-]{1,32})"
)


@dataclass(frozen=True)
class FeedbackRef:
    """Which clip a feedback button is about, and whose it is.

    Attributes
    ----------
    speaker_id : int
        The user whose voice it is (author of the voice note, or who uploaded
        the file to ``/emotion``); only their clicks are accepted.
    kind : {"n", "i"}
        ``"n"``: a message in ``channel_id`` with id ``key`` holds the audio;
        ``"i"``: an ``/emotion`` upload, ``key`` is the interaction id.
    channel_id : int
        The channel (or DM channel) of the answer.
    key : int
        Message id (``"n"``) or interaction id (``"i"``).
    """

    speaker_id: int
    kind: Literal["n", "i"]
    channel_id: int
    key: int

    @property
    def memory_key(self) -> tuple[str, int]:
        """Key of the clip in :class:`~bot.cogs.feedback.memory.FeatureMemory`."""
        return (self.kind, self.key)


def custom_id(action: Action, ref: FeedbackRef, label: str) -> str:
    """The ``custom_id`` of a feedback button.

    Raises
    ------
    ValueError
        If ``label`` cannot be carried (more than 32 characters, or others
        than letters, digits, ``_`` and ``-``).
    """
    if not LABEL_RE.fullmatch(label):
        raise ValueError(f"label {label!r} cannot be carried in a custom_id")
    return f"fb:{action}:{ref.kind}:{ref.speaker_id}:{ref.channel_id}:{ref.key}:{label}"


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button], template=_TEMPLATE):  # type: ignore[misc,type-arg]
    """One feedback button; its click is handled by the loaded :class:`~bot.cogs.feedback.cog.FeedbackCog`.

    Parameters
    ----------
    action : {"c", "x", "l", "y", "n"}
        What the button does.
    ref : FeedbackRef
        The clip and its speaker.
    label : str
        The emotion the click is about.
    text : str, optional
        The button's caption (default: ``label``).
    style : discord.ButtonStyle, optional
        Default secondary (grey).
    """

    def __init__(
        self,
        action: Action,
        ref: FeedbackRef,
        label: str,
        *,
        text: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        super().__init__(discord.ui.Button(label=text or label, style=style, custom_id=custom_id(action, ref, label)))
        self.action: Action = action
        self.ref = ref
        self.emotion = label

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Button,  # type: ignore[type-arg]
        match: re.Match[str],
        /,
    ) -> FeedbackButton:
        """Rebuild the button from a clicked ``custom_id`` (discord.py calls this)."""
        kind: Literal["n", "i"] = "n" if match["kind"] == "n" else "i"
        ref = FeedbackRef(int(match["speaker"]), kind, int(match["channel"]), int(match["key"]))
        return cls(match["action"], ref, match["label"], text=item.label, style=item.style)  # type: ignore[arg-type]

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """Hand the click to the feedback cog (or say feedback is unavailable)."""
        cog: FeedbackCog | None = interaction.client.get_cog("Feedback")  # type: ignore[attr-defined,assignment]
        if cog is None:
            await interaction.response.send_message("Feedback is not available right now.", ephemeral=True)
            return
        await cog.on_click(interaction, self.action, self.ref, self.emotion)
