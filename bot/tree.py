"""The bot's application-command tree: one error handler for every cog's commands.

Passed to :class:`bot.client.SERBot` as ``tree_cls`` (as in discord.py's
``examples/advanced_startup.py``), so no cog has to install a global handler.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from .cogs.common import user_message_for

__all__ = ["SERCommandTree", "OUTDATED_COMMAND", "BAD_OPTION", "REFUSED"]

log = logging.getLogger(__name__)

OUTDATED_COMMAND = "This command changed since your Discord client loaded it; please try again in a minute."
BAD_OPTION = "I couldn't use one of the options you picked; please pick it again from the list."
#: Shown for a failed check that carries no message of its own.
REFUSED = "You can't use this command here."


class SERCommandTree(app_commands.CommandTree[discord.Client]):
    """A :class:`discord.app_commands.CommandTree` whose :meth:`on_error` answers the user.

    Every failure of an application command ends as one short ephemeral
    message: refusals by checks (:class:`bot.checks.Refused` carries its
    ``user_message``), outdated commands, bad options, and everything else
    through :func:`bot.cogs.common.user_message_for` (refusals keep their
    text; unexpected errors are logged with a correlation id that the user
    sees instead of the exception's text).
    """

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        """Answer the interaction's user with a short ephemeral message; never a traceback.

        A deferred ("thinking") response is public: it is deleted and the
        message sent as an ephemeral followup instead.
        """
        cause: BaseException = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        command = interaction.command.qualified_name if interaction.command is not None else "unknown command"
        if isinstance(cause, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
            log.warning("%s: %s", command, cause)
            text = OUTDATED_COMMAND
        elif isinstance(cause, app_commands.CheckFailure):
            log.info("%s refused for user %s: %s", command, interaction.user.id, cause)
            text = getattr(cause, "user_message", None) or str(cause) or REFUSED
        elif isinstance(cause, app_commands.TransformerError):
            log.info("%s: %s", command, cause)
            text = BAD_OPTION
        else:
            text = user_message_for(cause, where=command)
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
                return
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report an error for %s", command, exc_info=True)
