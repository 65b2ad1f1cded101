"""The emotion cog: voice notes in chat, ``/emotion`` and the "Detect emotion" message command.

Every analysis goes through the bot's :class:`~ser_engine.service.EmotionService`,
which runs decoding and the model in worker threads, never on the event loop.

Voice notes posted in a server are answered according to the server's
settings (auto-analysis, channel allow/deny lists, public reply or DM), never
for members who opted out, and their analyses (never the audio) are stored
for ``/insights``; a note that crosses the server's alert settings is
reported once per cool-down in the mod-log channel. When the database is
unreachable, notes are still answered from the last known settings and
opt-outs, and nothing is stored.

``/emotion`` answers privately (ephemeral) unless ``public`` is set. "Detect
emotion" always answers privately; on another member's message it honours
that member's opt-out and the server's analysis setting and channel lists,
like automatic analysis does.

Downloads: the analysis queue must have room (the service's pending
analyses plus the downloads in flight below ``SER_MAX_PENDING``) before an
attachment is fetched, and every download goes through the cog's one
:class:`~.media.Downloader` (``SER_MAX_DOWNLOADS`` at once, each streamed
under a byte cap).

Fail closed: when no last-known value exists (the database was down when
the bot started, so the opt-out list was never loaded, or a server's
settings were never read), an automatic analysis could answer a member who
opted out, or in a server that turned analysis off. Such a note is then
neither downloaded, analysed, stored nor answered in the channel: a server
note is skipped silently (outcome reason ``"storage_unavailable"``; a
public "try later" would itself be an answer in public), and a note sent
to the bot by direct message gets a short private refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.storage import GuildSettings, StoreError, StoreUnavailableError
from ser_engine.distributed.client import ANALYSIS_JOB_ID
from ser_engine.errors import ServiceBusyError, ServiceClosedError

from ..common import UserFacingError, store_of, user_message_for
from .media import (
    Downloader,
    NoAudioInMessageError,
    audio_attachments,
    check_attachment,
)
from .limits import CooldownError, ReplyPacer, UserCooldown
from .render import build_alert_embed, build_embed, build_text
from .timeline import timeline_parts

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.predict import Prediction

    from bot.client import SERBot

__all__ = [
    "EmotionCog",
    "VoiceNoteOutcome",
    "OptedOutAuthorError",
    "AnalysisOffHereError",
    "VOICE_NOTE_EVENT",
    "guild_settings",
    "refusal_reason",
    "opted_out",
    "user_message_for",
]

log = logging.getLogger(__name__)

CONTEXT_MENU_NAME = "Detect emotion"
PRIVACY_UNKNOWN = (
    "I can't check privacy settings right now (my database is unavailable), so I didn't analyse this voice "
    "message. Please try again later."
)
#: The answer to a direct message from someone who opted out (direct messages are always answered).
OPTED_OUT_DM = (
    "You opted out of emotion analysis, so I didn't analyse this voice message. `/privacy optin` turns it back on."
)
#: Refusals that wait for a reply slot behind at most one burst of replies, else are dropped.
REFUSALS: tuple[type[Exception], ...] = (CooldownError, ServiceBusyError, ServiceClosedError)
#: Name of the event dispatched after each voice note (listen with ``on_voice_note_processed``).
VOICE_NOTE_EVENT = "voice_note_processed"
#: The answer to a voice note that a stopped bot process left unanswered, when its analysis is gone.
RESTART_TRY_AGAIN = "I restarted while analysing this voice message; please send it again."


class OptedOutAuthorError(UserFacingError):
    """The context menu was used on a message of a member who opted out."""

    def __init__(self) -> None:
        super().__init__("That member opted out of emotion analysis, so I won't analyse their messages.")


class AnalysisOffHereError(UserFacingError):
    """The context menu was used on another member's message where the server does not analyse voices."""

    def __init__(self) -> None:
        super().__init__(
            "This server doesn't analyse voices in that channel, so I won't analyse another member's message there."
        )


@dataclass(frozen=True)
class VoiceNoteOutcome:
    """What the bot did with one voice note (the payload of ``on_voice_note_processed``).

    Attributes
    ----------
    message_id : int
        The voice note's message.
    status : {"answered", "refused", "skipped"}
        Answered with an emotion; refused with a short error (too large,
        undecodable, busy ...); or skipped without any answer.
    reason : str or None
        Why it was skipped: ``"opted_out"`` (the author opted out),
        ``"channel_off"`` (the server does not analyse this channel),
        ``"no_permission"`` (the bot may not answer there) or
        ``"storage_unavailable"`` (the author's opt-out or the server's
        settings are unknown: fail closed). A refusal carries why it was
        refused (:func:`refusal_reason`: ``"cooldown"``, ``"service_busy"``,
        ``"audio_too_large"`` ...; ``"storage_unavailable"`` or ``"opted_out"``
        for a direct message refused privately), or ``"error"`` for an
        unexpected failure (answered with an error id).
    prediction : Prediction or None
        The engine's result when answered.
    stored_id : int or None
        Id of the stored analysis row (``None``: not stored -- direct message,
        opted out, or the database unavailable).
    alerted : bool
        Whether an alert was posted in the mod-log channel.
    dropped : bool
        The answer or refusal was not sent: the channel's reply backlog was
        too long (a refusal waits behind one burst of replies at most, an
        answer at most ``SER_REQUEST_TIMEOUT_S``), the bot was stopping, or
        Discord refused it.
    """

    message_id: int
    status: Literal["answered", "refused", "skipped"]
    reason: str | None = None
    prediction: Prediction | None = None
    stored_id: int | None = None
    alerted: bool = False
    dropped: bool = False


def refusal_reason(error: BaseException) -> str:
    """Why a voice note was refused, for its outcome and the metrics: a short snake_case name.

    Expected refusals (the engine's and the bot's user-facing errors, busy,
    cool-down, storage outages) are named after their class without the
    ``Error`` suffix (``AudioTooLargeError`` -> ``"audio_too_large"``);
    anything else is ``"error"`` (an unexpected failure, answered with an
    error id).
    """
    import re

    from ser_engine.errors import AudioError, ServiceError

    if not isinstance(error, (UserFacingError, AudioError, ServiceError, StoreUnavailableError)):
        return "error"
    name = type(error).__name__.removesuffix("Error") or "refused"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def guild_settings(bot: SERBot, guild_id: int) -> GuildSettings:
    """A guild's settings from the store, else the last known ones; never a guess.

    When the database fails, the last settings seen by this process (kept in
    ``bot.known_settings``) are used, so a server that turned auto-analysis
    off does not get answers during an outage. Without them the defaults
    (analysis on, public replies) would be a guess that may contradict the
    server's choice, so the call fails closed instead.

    Parameters
    ----------
    bot : SERBot
        The bot (its ``store`` and ``known_settings``).
    guild_id : int
        The guild.

    Returns
    -------
    GuildSettings
        Current or last known settings.

    Raises
    ------
    bot.storage.StoreUnavailableError
        The settings cannot be read and were never read by this process
        (e.g. the database was down at start-up), or the bot has no store.
    """
    try:
        settings = await store_of(bot).get_guild_settings(guild_id)
    except StoreError as exc:
        if not isinstance(exc, StoreUnavailableError):
            log.error("reading settings of guild %s failed", guild_id, exc_info=exc)
        known = bot.known_settings.get(guild_id)
        if known is None:
            raise StoreUnavailableError(f"settings of guild {guild_id} unknown: {exc.message}") from exc
        return known
    bot.known_settings[guild_id] = settings
    return settings


async def opted_out(bot: SERBot, user_id: int) -> bool:
    """Whether ``user_id`` opted out; the last known answer when the database is unavailable.

    The store loads the whole opt-out list when it first reaches the
    database (``store.ready``) and keeps it current, so during a later outage
    its answer is the last known one. Before that there is no last-known
    answer, and guessing "not opted out" could analyse someone who opted
    out: the call fails closed instead.

    Raises
    ------
    bot.storage.StoreUnavailableError
        The database is unavailable and the opt-out list was never loaded
        (down at start-up), or the bot has no store (starting or stopping).
    """
    store = store_of(bot)
    try:
        return await store.is_opted_out(user_id)
    except StoreError as exc:
        if not isinstance(exc, StoreUnavailableError):
            log.error("reading the opt-out of a user failed", exc_info=exc)
        if not store.ready:  # the list was never loaded: no last-known answer
            raise StoreUnavailableError(f"opt-out list unknown: {exc.message}") from exc
        return store.known_opted_out(user_id)


class EmotionCog(commands.Cog, name="Emotion"):
    """Detects the emotion in voice notes and audio attachments.

    Parameters
    ----------
    bot : SERBot
        The running bot; its ``service`` must be started.
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        self.context_menu = app_commands.ContextMenu(name=CONTEXT_MENU_NAME, callback=self.detect_emotion_menu)
        s = bot.settings  # flood control (see .limits): per-user cool-down, per-channel reply pacing
        self.cooldown: Any = UserCooldown(s.ser_user_max_notes, s.ser_user_cooldown_s)
        self.pacer = ReplyPacer(s.ser_channel_reply_burst, s.ser_channel_replies_per_s)
        redis = getattr(bot, "shared_redis", None)
        if redis is not None:  # several bot processes (shards): one quota per user, one bucket per channel
            from bot.shared_limits import SharedReplyPacer, SharedUserCooldown

            self.cooldown = SharedUserCooldown(redis, s.ser_user_max_notes, s.ser_user_cooldown_s)
            self.pacer = SharedReplyPacer(redis, s.ser_channel_reply_burst, s.ser_channel_replies_per_s)
        http: Any = bot.http  # discord.py's own proxy settings apply to the CDN too
        self.downloader = Downloader(
            max_concurrent=s.ser_max_downloads, max_bytes=s.ser_max_bytes, timeout_s=s.ser_download_timeout_s,
            max_wait_s=s.ser_request_timeout_s, proxy=getattr(http, "proxy", None),
            proxy_auth=getattr(http, "proxy_auth", None),
        )  # fmt: skip
        #: Longest wait of an answer for its channel's token (s): as long as an analysis may take.
        self.reply_max_wait_s = s.ser_request_timeout_s
        #: Longest wait of a refusal (s): one burst of replies ahead of it (see .limits).
        self.refusal_max_wait_s = s.ser_channel_reply_burst / s.ser_channel_replies_per_s
        self.stopping = False  # set by begin_shutdown()
        self.dropped_for_backlog = 0  # replies not sent: their channel's backlog was too long
        self.dropped_at_shutdown = 0  # replies not sent: the bot was stopping
        self._admitted = 0  # voice notes being downloaded or analysed (see _admit)
        self.inflight: Any = None  # notes in flight, in the broker's Redis (bot/inflight.py)
        self._recovered = False
        if redis is not None:
            from bot.inflight import InflightNotes

            self.inflight = InflightNotes(redis, s.shard_id_list)

    async def cog_load(self) -> None:
        """Register the context menu (errors are answered by the tree, :class:`bot.tree.SERCommandTree`).

        Also asks the service for timelines: notes of 8 s or more are answered with their emotions over time.
        """
        self.bot.tree.add_command(self.context_menu)
        if self.bot.service is not None:
            self.bot.service.timelines = True

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.tree.remove_command(self.context_menu.name, type=self.context_menu.type)
        await self.downloader.close()

    # ------------------------------------------------------------ analysis
    async def fetch_audio(self, attachment: discord.Attachment) -> bytes:
        """Download ``attachment`` if the analysis queue has room for it (checks must have passed).

        The room is checked before a byte is fetched: the service's accepted
        analyses plus the downloads in flight (each will become one) must be
        below ``max_pending``. The download then waits for one of the
        bot-wide ``SER_MAX_DOWNLOADS`` slots and is streamed under the byte cap.

        Raises
        ------
        ser_engine.errors.ServiceBusyError
            The queue is full, or no download slot freed in time.
        ser_engine.errors.ServiceClosedError
            The service is closed (shutting down).
        DownloadError, ser_engine.errors.AudioTooLargeError
            As :func:`.media.download`.
        """
        from ser_engine.errors import ServiceBusyError, ServiceClosedError

        service = self.bot.service
        if service is None or service.closed:
            raise ServiceClosedError()
        if service.pending + self.downloader.in_flight >= service.max_pending:
            raise ServiceBusyError()
        return await self.downloader.fetch(attachment)

    async def _analyse(
        self, attachment: discord.Attachment, *, speaker_id: int | None = None, learn: bool = False, ref: Any = None
    ) -> Prediction:
        """Download ``attachment`` and run it through the service (checks must have passed).

        With the feedback cog loaded, the speaker's running statistics
        normalise the features (``learn``: the clip is added to them) and the
        clip's features are remembered under ``ref`` for the feedback buttons.
        """
        data = await self.fetch_audio(attachment)
        service = self.bot.service
        if service is None:
            from ser_engine.errors import ServiceClosedError

            raise ServiceClosedError()
        feedback: Any = self.bot.get_cog("Feedback")
        started = time.perf_counter()
        if feedback is not None:
            prediction = await feedback.analyse(data, speaker_id=speaker_id, learn=learn, ref=ref)
        else:
            prediction = await service.analyse(data)
        self.bot.metrics.observe_analysis(time.perf_counter() - started)
        return prediction

    def _feedback_hooks(self, speaker_id: int, kind: str, channel_id: int, key: int) -> tuple[Any, Any]:
        """``(feedback cog, its reference for this clip)``, or ``(None, None)`` without the feedback cog."""
        feedback: Any = self.bot.get_cog("Feedback")
        if feedback is None:
            return None, None
        from ..feedback import FeedbackRef

        return feedback, FeedbackRef(speaker_id, kind, channel_id, key)  # type: ignore[arg-type]

    def _unsure_below(self) -> float | None:
        """The serving model's ``unsure_below`` (quoted in unsure answers), if known."""
        service = self.bot.service
        return getattr(service.predictor, "unsure_below", None) if service is not None else None

    def _check(self, attachment: discord.Attachment) -> None:
        s = self.bot.settings
        check_attachment(attachment, max_bytes=s.ser_max_bytes, max_duration_s=s.ser_max_duration_s)

    # ----------------------------------------------------------- listeners
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer a voice message (guild channel, thread or DM), store its analysis, alert if needed.

        Dispatches ``on_voice_note_processed`` with a :class:`VoiceNoteOutcome`
        for every voice note with an audio attachment, answered or not.
        """
        if message.author.bot or message.webhook_id is not None or not message.flags.voice or self.stopping:
            return
        attachments = audio_attachments(message)
        if not attachments:
            return
        inflight = self.inflight
        if inflight is not None:  # answered after a restart if this process stops first (bot/inflight.py)
            await inflight.add(message.id, message.channel.id)
        try:
            outcome = await self._handle_voice_note(message, attachments[0])
        except Exception:  # never let one note take the listener down
            log.exception("voice message %s: unexpected failure", message.id)
            outcome = VoiceNoteOutcome(message.id, "refused", "error")
        if inflight is not None and not outcome.dropped:
            await inflight.remove(message.id)
        self.bot.dispatch(VOICE_NOTE_EVENT, outcome)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Once connected: answer the notes a previous process of these shards left in flight."""
        if self.inflight is None or self._recovered:
            return
        self._recovered = True
        leftovers = await self.inflight.take_leftovers()
        await asyncio.gather(*(self._answer_leftover(mid, cid) for mid, cid in leftovers))

    async def _answer_leftover(self, message_id: int, channel_id: int) -> None:
        """The finished analysis of a note left in flight (job ``note:<id>``), or a short "try again"."""
        from ser_engine.errors import SERError

        channel: Any = self.bot.get_channel(channel_id)
        try:
            if channel is None:
                channel = await self.bot.fetch_channel(channel_id)
            target = channel.get_partial_message(message_id)
            service: Any = self.bot.service
            prediction = None
            text = RESTART_TRY_AGAIN
            try:  # the job still queued or running is waited for; a finished one is read
                if callable(getattr(service, "result_of", None)):
                    prediction = await service.result_of(f"note:{message_id}")
            except SERError as exc:
                text = exc.user_message
            if prediction is not None:
                await target.reply(embed=build_embed(prediction), mention_author=False)
            else:
                await target.reply(text, mention_author=False)
            result = prediction
            log.info("voice message %s: answered after a restart (%s)", message_id,
                     "analysis" if result is not None else "try again")  # fmt: skip
        except Exception as exc:  # one leftover must not stop the others
            log.warning("voice message %s left by a previous run not answered: %s", message_id, exc)

    async def _handle_voice_note(self, message: discord.Message, attachment: discord.Attachment) -> VoiceNoteOutcome:
        settings: GuildSettings | None = None
        try:
            if await opted_out(self.bot, message.author.id):
                log.debug("voice message %s: the author opted out", message.id)
                if message.guild is None:  # a direct message is always answered, without analysing it
                    sent = await self._send(message, by_dm=False, text=OPTED_OUT_DM, refusal=True)
                    return VoiceNoteOutcome(message.id, "refused", "opted_out", dropped=not sent)
                return VoiceNoteOutcome(message.id, "skipped", "opted_out")
            if message.guild is not None:
                settings = await guild_settings(self.bot, message.guild.id)
        except StoreUnavailableError as exc:  # fail closed (see the module docstring)
            log.info("voice message %s not analysed: %s", message.id, exc.message)
            if message.guild is not None:
                return VoiceNoteOutcome(message.id, "skipped", "storage_unavailable")
            sent = await self._send(message, by_dm=False, text=PRIVACY_UNKNOWN, refusal=True)
            return VoiceNoteOutcome(message.id, "refused", "storage_unavailable", dropped=not sent)
        by_dm = False  # a guild that chose private answers: DM the speaker instead of replying
        can_embed = can_attach = True
        if message.guild is not None and settings is not None:
            parent_id = getattr(message.channel, "parent_id", None)
            if not settings.analyses_channel(message.channel.id, parent_id):
                return VoiceNoteOutcome(message.id, "skipped", "channel_off")
            by_dm = settings.reply_mode == "dm"
            if not by_dm:
                perms = message.channel.permissions_for(message.guild.me)  # type: ignore[union-attr,arg-type]
                in_thread = isinstance(message.channel, discord.Thread)
                can_send = perms.send_messages_in_threads if in_thread else perms.send_messages
                if not (perms.view_channel and can_send):
                    log.debug("no permission to answer in channel %s", message.channel.id)
                    return VoiceNoteOutcome(message.id, "skipped", "no_permission")
                can_embed, can_attach = perms.embed_links, perms.attach_files
        feedback, ref = self._feedback_hooks(message.author.id, "n", message.channel.id, message.id)
        # Guild notes (stored as analyses) also feed the speaker's running statistics; DMs are never stored.
        how = {"speaker_id": message.author.id, "learn": message.guild is not None, "ref": ref}
        try:
            self._check(attachment)
            await self._admit_user(message.author.id)
            # Through a broker, the message id is the job id: the note is analysed once (ser_engine.distributed).
            ANALYSIS_JOB_ID.set(f"note:{message.id}")
            self._admit()  # before the download: a note that would be refused busy is never fetched
            try:
                if by_dm:
                    prediction = await self._analyse(attachment, **how)
                else:
                    async with message.channel.typing():
                        prediction = await self._analyse(attachment, **how)
            finally:
                self._admitted -= 1
        except Exception as exc:  # every failure becomes a short answer
            text = user_message_for(exc, where=f"voice message {message.id}")
            sent = await self._send(message, by_dm=by_dm, text=text, refusal=isinstance(exc, REFUSALS))
            return VoiceNoteOutcome(message.id, "refused", refusal_reason(exc), dropped=not sent)
        view = feedback.view_for(ref, prediction) if feedback is not None else None
        unsure_below = self._unsure_below()
        over_time = await timeline_parts(prediction, attach=can_attach)  # long notes: a line and a strip image
        file = over_time.file() if over_time is not None else None
        if can_embed:
            embed = build_embed(prediction, unsure_below=unsure_below)
            sent = await self._send(message, by_dm=by_dm, embed=over_time.apply(embed) if over_time else embed,
                                    view=view, file=file)  # fmt: skip
        else:
            text = build_text(prediction, unsure_below=unsure_below) + (f"\n{over_time.line}" if over_time else "")
            sent = await self._send(message, by_dm=by_dm, text=text, view=view, file=file)
        stored_id: int | None = None
        alerted = False
        if settings is not None:  # notes sent to the bot by direct message are answered, never stored
            stored_id = await self._store(message, prediction)
            if stored_id is not None:  # None: opted out meanwhile, or no database -- then no alert either
                alerted = await self._alert(message, prediction, settings)
        return VoiceNoteOutcome(message.id, "answered", None, prediction, stored_id, alerted, dropped=not sent)

    async def _admit_user(self, user_id: int) -> None:
        """The per-user cool-down (this process's, or shared by every shard through Redis).

        Raises
        ------
        CooldownError
            Over the user's quota.
        """
        admitted = self.cooldown.admit(user_id)
        if admitted is not None:  # SharedUserCooldown.admit is a coroutine
            await admitted

    def _admit(self) -> None:
        """Count one voice note in for download and analysis, or refuse it as busy (decided before any await).

        At most the service's ``max_pending`` voice notes are downloaded or
        analysed at once: a note beyond that would only be refused by the
        service after its bytes were fetched and held. Issue 13 saw the bot
        process peak at 676 MB in a burst of 200 notes when every note was
        downloaded first; the burst test in ``tests/test_bot_load.py`` (200
        notes of about 650 kB, default settings) measured a peak RSS of 323 MB
        and 200 downloads without this bound, 213 MB and 16 downloads with it.
        The caller decrements :attr:`_admitted` when the analysis is over.

        Raises
        ------
        ServiceClosedError
            The bot is stopping (or has no service).
        ServiceBusyError
            ``max_pending`` notes are already admitted, or the service's
            queue is full (e.g. with ``/emotion`` requests).
        """
        service = self.bot.service
        if service is None or self.stopping:
            raise ServiceClosedError()
        if self._admitted >= service.max_pending or service.pending >= service.max_pending:
            raise ServiceBusyError()
        self._admitted += 1

    async def _send(
        self,
        message: discord.Message,
        *,
        by_dm: bool,
        text: str | None = None,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        refusal: bool = False,
        file: discord.File | None = None,
    ) -> bool:
        """Answer ``message``: a reply in its channel, or a DM to its author (``by_dm``, guild messages).

        The reply waits for its channel's token (:class:`~.limits.ReplyPacer`)
        at most :attr:`reply_max_wait_s` seconds, a ``refusal`` at most
        :attr:`refusal_max_wait_s` (one burst of replies ahead of it).
        A reply that would wait longer, or that is still waiting when the bot
        stops, is dropped: nothing is sent once shutdown began.

        Returns
        -------
        bool
            Whether the answer was sent (``False``: dropped, or Discord refused it).
        """
        extra: dict[str, Any] = {} if view is None else {"view": view}
        if file is not None:
            extra["file"] = file
        key = message.author.id if by_dm else message.channel.id
        max_wait_s = self.refusal_max_wait_s if refusal else self.reply_max_wait_s
        if not await self.pacer.wait(key, max_wait_s=max_wait_s) or self.stopping or self.bot.is_closed():
            if self.stopping or self.bot.is_closed():
                self.dropped_at_shutdown += 1
            else:
                self.dropped_for_backlog += 1
                log.info("voice message %s: %s dropped (reply backlog in %s)", message.id,
                         "refusal" if refusal else "answer", "DMs" if by_dm else f"channel {key}")  # fmt: skip
            return False
        try:
            if by_dm and message.guild is not None:
                channel = message.channel.mention  # type: ignore[union-attr]
                where = f"Your voice message in {channel}: {message.jump_url}"
                content = f"{where}\n{text}" if text else where
                await message.author.send(content, embed=embed, **extra)  # type: ignore[arg-type]
            elif embed is not None:
                await message.reply(text, embed=embed, mention_author=False, **extra)
            else:
                await message.reply(text, mention_author=False, **extra)
        except discord.HTTPException as exc:
            # E.g. the member does not accept DMs from server members: the server chose private
            # answers, so nothing is posted in the channel instead. Expected: no traceback.
            log.warning("could not answer voice message %s: %s", message.id, exc)
            return False
        return True

    def begin_shutdown(self) -> None:
        """Stop taking voice notes and release every reply still waiting (they are dropped, not sent).

        Called by :meth:`bot.client.SERBot.close` before the HTTP session
        closes; :attr:`dropped_at_shutdown` then counts every reply that was
        not sent because of the shutdown.
        """
        self.stopping = True
        self.pacer.close()

    async def _store(self, message: discord.Message, prediction: Prediction) -> int | None:
        """Store the analysis of a guild voice note; ``None`` if opted out or the database failed."""
        store = self.bot.store
        if store is None or message.guild is None:
            return None
        try:
            return await store.record_analysis(
                guild_id=message.guild.id,
                channel_id=message.channel.id,
                user_id=message.author.id,
                message_id=message.id,
                label=prediction.label,
                confidence=min(1.0, max(0.0, float(prediction.confidence))),
                probabilities=prediction.probabilities,
                model_version=prediction.model_version,  # the producing model, even if swapped since
                duration_s=max(0.0, float(prediction.duration_s)),
                created_at=message.created_at,
            )
        except StoreUnavailableError as exc:
            log.warning("voice message %s answered but not stored: %s", message.id, exc.message)
        except (StoreError, ValueError):
            log.exception("voice message %s answered but not stored", message.id)
        return None

    async def _alert(self, message: discord.Message, prediction: Prediction, settings: GuildSettings) -> bool:
        """Post an alert in the mod-log channel when the note crosses the settings, once per cool-down."""
        guild = message.guild
        store = self.bot.store
        if guild is None or store is None or not settings.crosses_alert(prediction.label, prediction.confidence):
            return False
        if self.stopping:  # nothing is posted once shutdown began
            return False
        try:
            claimed = await store.should_alert(
                guild.id,
                message.channel.id,
                message.author.id,
                prediction.label,
                prediction.confidence,
                now=message.created_at,
                settings=settings,
            )
        except StoreError as exc:
            log.warning("alert for voice message %s not checked: %s", message.id, exc.message)
            return False
        if not claimed:
            return False
        modlog = guild.get_channel_or_thread(settings.modlog_channel_id or 0)
        if not isinstance(modlog, discord.abc.Messageable):
            log.warning("guild %s: the mod-log channel %s no longer exists", guild.id, settings.modlog_channel_id)
            return False
        perms = modlog.permissions_for(guild.me)
        if not (perms.view_channel and perms.send_messages and perms.embed_links):
            log.warning("guild %s: no permission to post alerts in channel %s", guild.id, modlog.id)
            return False
        try:
            await modlog.send(embed=build_alert_embed(message, prediction, cooldown_s=settings.alert_cooldown_s))
        except discord.HTTPException:
            log.warning("guild %s: posting an alert failed", guild.id, exc_info=True)
            return False
        return True

    # ---------------------------------------------------------- app commands
    @app_commands.command(name="emotion", description="Detect the emotion in a voice recording")
    @app_commands.describe(
        audio="A voice message or audio file (ogg, mp3, wav, flac, m4a ...)",
        public="Show the answer to everyone in the channel (default: only you see it)",
    )
    async def emotion(self, interaction: discord.Interaction, audio: discord.Attachment, public: bool = False) -> None:
        """``/emotion audio:<file> [public]``: answer with the emotion in the attached recording.

        The answer is ephemeral (only the caller sees it) unless ``public`` is true.
        """
        # The uploader is "the speaker" for feedback; the file may hold anyone's voice, so no speaker statistics.
        channel_id = interaction.channel_id or 0
        hooks = self._feedback_hooks(interaction.user.id, "i", channel_id, interaction.id)
        await self._answer(interaction, audio, hooks=hooks, ephemeral=not public)

    async def detect_emotion_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Message context menu "Detect emotion": analyse the message's first audio attachment, privately.

        On another member's message it is refused (privately) when that
        member opted out, or when the server does not analyse voices in that
        channel (auto-analysis off, or the channel allow/deny lists); on
        one's own message it always answers. The answer is always ephemeral.

        Raises
        ------
        NoAudioInMessageError, OptedOutAuthorError, AnalysisOffHereError
            Shown to the caller ephemerally by the error handler.
        """
        attachments = audio_attachments(message)
        if not attachments:
            raise NoAudioInMessageError()
        if message.author.id != interaction.user.id:
            await self._check_may_analyse_other(interaction, message)
        # The author's statistics are used, not updated (their voice note was already counted when posted).
        hooks = self._feedback_hooks(message.author.id, "n", message.channel.id, message.id)
        await self._answer(interaction, attachments[0], hooks=hooks, speaker_id=message.author.id, ephemeral=True)

    async def _check_may_analyse_other(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Refuse analysing another member's ``message`` where they or the server forbid it.

        The same rules as automatic analysis: the author's opt-out, then the
        server's ``auto_analyse`` switch and channel allow/deny lists (a
        thread follows its parent channel's lists).

        Raises
        ------
        OptedOutAuthorError
            The author opted out.
        AnalysisOffHereError
            The server does not analyse voices in the message's channel.
        """
        if await opted_out(self.bot, message.author.id):
            raise OptedOutAuthorError()
        guild_id = interaction.guild_id
        if guild_id is None:
            return
        settings = await guild_settings(self.bot, guild_id)
        channel = message.channel
        parent_id = getattr(channel, "parent_id", None)  # a thread not in the cache: its payload in the interaction
        here = interaction.channel
        if parent_id is None and isinstance(here, discord.Thread) and here.id == channel.id:
            parent_id = here.parent_id
        if not settings.analyses_channel(channel.id, parent_id):
            raise AnalysisOffHereError()

    async def _answer(
        self,
        interaction: discord.Interaction,
        attachment: discord.Attachment,
        *,
        hooks: tuple[Any, Any] = (None, None),
        speaker_id: int | None = None,
        ephemeral: bool = True,
    ) -> None:
        """Check (answering refusals at once, ephemerally), defer, analyse, edit the original response.

        ``ephemeral``: only the caller sees the answer.
        """
        self._check(attachment)
        await self._admit_user(interaction.user.id)
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        feedback, ref = hooks
        prediction = await self._analyse(attachment, speaker_id=speaker_id, ref=ref)
        view = feedback.view_for(ref, prediction) if feedback is not None else None
        embed = build_embed(prediction, source=attachment.filename, unsure_below=self._unsure_below())
        over_time = await timeline_parts(prediction)  # long notes: a line and a strip image
        file = over_time.file() if over_time is not None else None
        await interaction.edit_original_response(
            embed=over_time.apply(embed) if over_time else embed, **({} if view is None else {"view": view}),
            **({} if file is None else {"attachments": [file]}),
        )
