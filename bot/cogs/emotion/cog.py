"""The emotion cog: voice notes in chat, ``/emotion`` and the "Detect emotion" message command.

Every analysis goes through the bot's :class:`~ser_engine.service.EmotionService`,
which runs decoding and the model in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from ser_engine.errors import AudioError, ModelError, SERError, ServiceError

from .media import (
    NoAudioInMessageError,
    UserFacingError,
    audio_attachments,
    check_attachment,
    download,
)
from .render import build_embed, build_text

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.predict import Prediction

    from bot.client import SERBot

__all__ = ["EmotionCog", "user_message_for"]

log = logging.getLogger(__name__)

CONTEXT_MENU_NAME = "Detect emotion"
OUTDATED_COMMAND = "This command changed since your Discord client loaded it; please try again in a minute."


def _correlation_id() -> str:
    return secrets.token_hex(4)


def user_message_for(error: BaseException, *, where: str) -> str:
    """The short message to show a user for ``error``, logging it as it deserves.

    Refusals (engine errors, bot refusals) show their own ``user_message``.
    Anything else is logged with its traceback under a fresh correlation id,
    and the user gets an apology quoting that id, never the exception text.

    Parameters
    ----------
    error : BaseException
        What went wrong.
    where : str
        Context for the log line (e.g. ``"/emotion"``).
    """
    if isinstance(error, (UserFacingError, AudioError)):
        log.info("%s refused: %s: %s", where, type(error).__name__, error)
        return error.user_message
    if isinstance(error, ServiceError):
        log.warning("%s: %s", where, error)
        return error.user_message
    if isinstance(error, (ModelError, SERError)):
        log.error("%s: engine error", where, exc_info=error)
        return error.user_message
    cid = _correlation_id()
    log.error("%s: unexpected error [%s]", where, cid, exc_info=error)
    return f"Sorry, something went wrong on my side. (error id `{cid}`)"


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
        self._previous_tree_error: Any = None

    async def cog_load(self) -> None:
        """Register the context menu and become the tree's global error handler."""
        self.bot.tree.add_command(self.context_menu)
        self._previous_tree_error = self.bot.tree.on_error
        self.bot.tree.error(self.on_app_command_error)

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.tree.remove_command(self.context_menu.name, type=self.context_menu.type)
        if self._previous_tree_error is not None:
            self.bot.tree.on_error = self._previous_tree_error

    # ------------------------------------------------------------ analysis
    async def _analyse(self, attachment: discord.Attachment) -> Prediction:
        """Download ``attachment`` and run it through the service (checks must have passed)."""
        service = self.bot.service
        if service is None:
            from ser_engine.errors import ServiceClosedError

            raise ServiceClosedError()
        s = self.bot.settings
        data = await download(attachment, max_bytes=s.ser_max_bytes, timeout_s=s.ser_download_timeout_s)
        return await service.analyse(data)

    def _check(self, attachment: discord.Attachment) -> None:
        s = self.bot.settings
        check_attachment(attachment, max_bytes=s.ser_max_bytes, max_duration_s=s.ser_max_duration_s)

    # ----------------------------------------------------------- listeners
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Reply to a voice message (guild channel, thread or DM) with its emotion."""
        if message.author.bot or message.webhook_id is not None or not message.flags.voice:
            return
        attachments = audio_attachments(message)
        if not attachments:
            return
        can_embed = True
        if message.guild is not None:
            perms = message.channel.permissions_for(message.guild.me)  # type: ignore[union-attr,arg-type]
            in_thread = isinstance(message.channel, discord.Thread)
            can_send = perms.send_messages_in_threads if in_thread else perms.send_messages
            if not (perms.view_channel and can_send):
                log.debug("no permission to answer in channel %s", message.channel.id)
                return
            can_embed = perms.embed_links
        attachment = attachments[0]
        try:
            self._check(attachment)
            async with message.channel.typing():
                prediction = await self._analyse(attachment)
            if can_embed:
                await message.reply(embed=build_embed(prediction), mention_author=False)
            else:
                await message.reply(build_text(prediction), mention_author=False)
        except Exception as exc:  # every failure becomes a short reply
            text = user_message_for(exc, where=f"voice message {message.id}")
            try:
                await message.reply(text, mention_author=False)
            except discord.HTTPException:
                log.warning("could not reply to message %s", message.id, exc_info=True)

    # ---------------------------------------------------------- app commands
    @app_commands.command(name="emotion", description="Detect the emotion in a voice recording")
    @app_commands.describe(audio="A voice message or audio file (ogg, mp3, wav, flac, m4a ...)")
    async def emotion(self, interaction: discord.Interaction, audio: discord.Attachment) -> None:
        """``/emotion audio:<file>``: answer with the emotion in the attached recording."""
        await self._answer(interaction, audio)

    async def detect_emotion_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Message context menu "Detect emotion": analyse the message's first audio attachment."""
        attachments = audio_attachments(message)
        if not attachments:
            raise NoAudioInMessageError()
        await self._answer(interaction, attachments[0])

    async def _answer(self, interaction: discord.Interaction, attachment: discord.Attachment) -> None:
        """Check (answering refusals at once, ephemerally), defer, analyse, edit the original response."""
        self._check(attachment)
        await interaction.response.defer(thinking=True)
        prediction = await self._analyse(attachment)
        await interaction.edit_original_response(embed=build_embed(prediction, source=attachment.filename))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Global application-command error handler: a short ephemeral message, never a traceback."""
        cause: BaseException = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        command = interaction.command.name if interaction.command is not None else "unknown command"
        if isinstance(cause, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
            log.warning("%s: %s", command, cause)
            text = OUTDATED_COMMAND
        elif isinstance(cause, app_commands.CheckFailure):
            text = str(cause) or "You can't use this command here."
        else:
            text = user_message_for(cause, where=command)
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
                return
            # A deferred ("thinking") response is public; replace it by an ephemeral followup.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report an error for %s", command, exc_info=True)
