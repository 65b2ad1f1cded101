"""The feedback cog: the speaker confirms or corrects an emotion answer; speaker statistics.

Under every emotion answer (voice-note reply, ``/emotion`` and "Detect
emotion" answers) two buttons let the speaker -- and only the speaker --
confirm the label ("✓ <label>") or pick the right one ("Not quite…", then
one button per emotion, ephemerally). The first time, the speaker is asked
whether the clip's feature vector (never the audio) and their label may be
kept to improve the model at the next ``/retrain``; the answer is
remembered. With consent the vector is stored with
:meth:`bot.storage.Store.record_feedback` under the
:func:`ser_engine.cache.config_key` of the model's feature configuration;
without it nothing is stored.

The vector comes from the analysis (kept in a bounded in-memory LRU,
:class:`~bot.cogs.feedback.memory.FeatureMemory`) or, after a restart,
is recomputed from the voice note's attachment in the analysis service's
worker threads. ``/emotion`` uploads cannot be fetched again, so their
feedback is only accepted while the vector is remembered.

The cog also offers :meth:`FeedbackCog.analyse`, which the emotion cog uses
for every analysis: speaker normalisation from the speaker's running
statistics (see :mod:`bot.cogs.feedback.speakers`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.storage import StoreUnavailableError

from ..common import UserFacingError, user_message_for
from .items import LABEL_RE, Action, FeedbackButton, FeedbackRef
from .memory import FeatureMemory, RememberedFeatures
from .speakers import analyse_for_speaker, feature_key

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.predict import Prediction

    from bot.client import SERBot

__all__ = ["FeedbackCog", "NOT_THE_SPEAKER", "CONSENT_QUESTION"]

log = logging.getLogger(__name__)

NOT_THE_SPEAKER = "Only the speaker can correct this."
CONSENT_QUESTION = (
    "Thanks! May I keep this clip's acoustic measurements (a list of numbers, **never the audio**) together with "
    "your label **{label}**, to improve the model at the next `/retrain`? I'll remember your answer; "
    "`/privacy delete` removes everything I keep about you."
)
SAVED = "Thanks, saved: **{label}**. It will help the next `/retrain`."
NOT_KEPT = "Thanks! Nothing was stored: you chose not to share feedback."
DECLINED = "OK, I won't keep anything, and I won't ask again."
ALREADY = "You already labelled this clip as **{label}**."
GONE = "I no longer have this recording's analysis (the bot restarted); please send it again to give feedback."
PICK = "Which emotion was it?"
UNKNOWN_LABEL = "The model no longer knows the emotion **{label}**; please pick again on a newer answer."
#: Most answers whose feedback is remembered as given (so a second click does not store a second row).
SAVED_CAPACITY = 4096


class ClipUnavailableError(UserFacingError):
    """The clip's features are neither remembered nor recomputable."""

    def __init__(self) -> None:
        super().__init__(GONE)


class FeedbackCog(commands.Cog, name="Feedback"):
    """Feedback buttons under emotion answers, and speaker-normalised analyses.

    Parameters
    ----------
    bot : SERBot
        The running bot (its ``service`` and ``store``).
    memory_capacity : int, default 512
        Clips whose feature vectors are kept in memory for later clicks.
    """

    def __init__(self, bot: SERBot, *, memory_capacity: int = 512) -> None:
        self.bot = bot
        self.memory = FeatureMemory(memory_capacity)
        self._saved: OrderedDict[tuple[int, str, int], str] = OrderedDict()

    # ----------------------------------------------------------- analysis
    async def analyse(
        self, data: bytes, *, speaker_id: int | None, learn: bool, ref: FeedbackRef | None = None
    ) -> Prediction:
        """Analyse a clip for its speaker (see :func:`~bot.cogs.feedback.speakers.analyse_for_speaker`).

        Parameters
        ----------
        data : bytes
            The encoded clip.
        speaker_id : int or None
            Whose running statistics normalise the features (``None``: global ones).
        learn : bool
            Add the clip to the speaker's statistics.
        ref : FeedbackRef, optional
            Remember the clip's feature vector under this reference for the
            feedback buttons.

        Returns
        -------
        Prediction

        Raises
        ------
        ser_engine.errors.AudioError, ser_engine.errors.ServiceError
            As :meth:`ser_engine.service.EmotionService.analyse`.
        """
        service = self.bot.service
        if service is None:
            from ser_engine.errors import ServiceClosedError

            raise ServiceClosedError()
        prediction, key = await analyse_for_speaker(service, self.bot.store, data, speaker_id=speaker_id, learn=learn)
        if ref is not None and prediction.features is not None:
            self.memory.put(ref.memory_key, key, prediction.features)
        return prediction

    def view_for(self, ref: FeedbackRef, prediction: Prediction) -> discord.ui.View | None:
        """The buttons under an answer: "✓ <label>" and "Not quite…" (``None`` if the label cannot be carried)."""
        if not LABEL_RE.fullmatch(prediction.label):
            return None
        view = discord.ui.View(timeout=None)
        view.add_item(
            FeedbackButton("c", ref, prediction.label, text=f"✓ {prediction.label}", style=discord.ButtonStyle.success)
        )
        view.add_item(FeedbackButton("x", ref, prediction.label, text="Not quite…"))
        return view

    # ------------------------------------------------------------- clicks
    async def on_click(self, interaction: discord.Interaction, action: Action, ref: FeedbackRef, label: str) -> None:
        """Handle a click on a :class:`~bot.cogs.feedback.items.FeedbackButton`.

        Never raises: failures become a short ephemeral message.
        """
        try:
            if interaction.user.id != ref.speaker_id:
                await interaction.response.send_message(NOT_THE_SPEAKER, ephemeral=True)
                return
            in_place = action in ("l", "y", "n")  # clicks on our own ephemeral messages update them
            if action == "x":
                await interaction.response.send_message(PICK, view=self._picker(ref, label), ephemeral=True)
            elif action in ("c", "l"):
                await self._submit(interaction, ref, label, in_place=in_place)
            elif action == "y":
                await self._store_of().set_feedback_consent(ref.speaker_id, True)
                await self._save(interaction, ref, label, in_place=True)
            else:  # "n"
                await self._store_of().set_feedback_consent(ref.speaker_id, False)
                await self._respond(interaction, DECLINED, in_place=True)
        except Exception as exc:  # every failure becomes a short answer
            text = user_message_for(exc, where=f"feedback button {action}")
            try:
                await self._respond(interaction, text, in_place=False)
            except discord.HTTPException:
                log.warning("could not answer a feedback click", exc_info=True)

    def _store_of(self):  # type: ignore[no-untyped-def]
        if self.bot.store is None:
            raise StoreUnavailableError("the bot has no store")
        return self.bot.store

    def _picker(self, ref: FeedbackRef, predicted: str) -> discord.ui.View:
        """One button per emotion the model knows (at most 25), the predicted one last."""
        service = self.bot.service
        labels = list(service.predictor.labels) if service is not None else [predicted]
        labels = [lab for lab in labels if lab != predicted and LABEL_RE.fullmatch(lab)][:24] + [predicted]
        view = discord.ui.View(timeout=None)
        for i, lab in enumerate(labels):
            view.add_item(FeedbackButton("l", ref, lab, text=lab.capitalize()))
            view.children[-1].row = i // 5  # type: ignore[attr-defined]
        return view

    async def _submit(self, interaction: discord.Interaction, ref: FeedbackRef, label: str, *, in_place: bool) -> None:
        """A label from the speaker: ask for consent the first time, else save (or not) as they chose."""
        service = self.bot.service
        if service is not None and label not in service.predictor.labels:
            await self._respond(interaction, UNKNOWN_LABEL.format(label=label), in_place=in_place)
            return
        done = self._saved.get((ref.speaker_id, ref.kind, ref.key))
        if done is not None:
            await self._respond(interaction, ALREADY.format(label=done), in_place=in_place)
            return
        consent = await self._store_of().get_feedback_consent(ref.speaker_id)
        if consent is None:
            view = discord.ui.View(timeout=None)
            view.add_item(FeedbackButton("y", ref, label, text="Yes, keep it", style=discord.ButtonStyle.success))
            view.add_item(FeedbackButton("n", ref, label, text="No thanks", style=discord.ButtonStyle.secondary))
            await self._respond(interaction, CONSENT_QUESTION.format(label=label), view=view, in_place=in_place)
        elif consent:
            await self._save(interaction, ref, label, in_place=in_place)
        else:
            await self._respond(interaction, NOT_KEPT, in_place=in_place)

    async def _save(self, interaction: discord.Interaction, ref: FeedbackRef, label: str, *, in_place: bool) -> None:
        """Store the speaker's label with the clip's feature vector (consent given)."""
        remembered = self.memory.get(ref.memory_key)
        if remembered is None:
            if ref.kind != "n":
                raise ClipUnavailableError()
            # Decoding takes longer than Discord's 3 s to acknowledge: defer first.
            if in_place:
                await interaction.response.defer()
            else:
                await interaction.response.defer(ephemeral=True, thinking=True)
            remembered = await self._recompute(ref)
        row = await self._store_of().record_feedback(
            user_id=ref.speaker_id,
            guild_id=interaction.guild_id,
            message_id=ref.key,
            label=label,
            features=remembered.features,
            feature_config_version=remembered.config_key,
            consent=True,
        )
        if row is None:
            text = "You opted out of emotion analysis, so nothing was stored."
            await self._respond(interaction, text, in_place=in_place)
            return
        self._saved[(ref.speaker_id, ref.kind, ref.key)] = label
        while len(self._saved) > SAVED_CAPACITY:
            self._saved.popitem(last=False)
        log.info("feedback stored (row %s)", row)
        await self._respond(interaction, SAVED.format(label=label), in_place=in_place)

    async def _recompute(self, ref: FeedbackRef) -> RememberedFeatures:
        """Fetch the voice note again and extract its features in the service's worker threads."""
        from ..emotion.media import audio_attachments, check_attachment, download

        service = self.bot.service
        if service is None:
            from ser_engine.errors import ServiceClosedError

            raise ServiceClosedError()
        try:
            message = await self.bot.get_partial_messageable(ref.channel_id).fetch_message(ref.key)
        except discord.HTTPException:
            raise ClipUnavailableError() from None
        attachments = audio_attachments(message)
        if not attachments:
            raise ClipUnavailableError()
        s = self.bot.settings
        check_attachment(attachments[0], max_bytes=s.ser_max_bytes, max_duration_s=s.ser_max_duration_s)
        emotion: Any = self.bot.get_cog("Emotion")
        if emotion is not None:  # its one Downloader bounds the bot's downloads, after checking the queue's room
            data = await emotion.fetch_audio(attachments[0])
        else:
            data = await download(attachments[0], max_bytes=s.ser_max_bytes, timeout_s=s.ser_download_timeout_s)
        predictor = service.predictor
        prediction = await service.analyse(data)
        if prediction.features is None:
            raise ClipUnavailableError()
        key = feature_key(predictor if service.predictor is predictor else service.predictor)
        self.memory.put(ref.memory_key, key, prediction.features)
        return RememberedFeatures(key, prediction.features)

    @staticmethod
    async def _respond(
        interaction: discord.Interaction, text: str, *, view: discord.ui.View | None = None, in_place: bool
    ) -> None:
        """Answer a click: update our ephemeral message in place, or send a new ephemeral one."""
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text, view=view)
        elif in_place:
            await interaction.response.edit_message(content=text, view=view)
        else:
            await interaction.response.send_message(text, view=view or discord.utils.MISSING, ephemeral=True)
