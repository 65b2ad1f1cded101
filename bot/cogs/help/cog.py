"""``/help`` and the greeting posted once when the bot joins a server.

``/help`` lists only the commands the caller may use where they ask
(:func:`bot.checks.may_use`: the same rules the commands apply) and links the
privacy text. On joining a server the bot posts exactly one short message in
the server's system channel -- what it does, that automatic analysis is off
until enabled, ``/settings`` and ``/privacy`` -- and nothing when the server
has no system channel or the bot may not post there.

The strings are in :mod:`.text`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import may_use

from . import text as T

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["HelpCog", "usable_commands", "help_embed"]

log = logging.getLogger(__name__)

#: Embed colour of the help answer (Discord's blurple; not an emotion).
HELP_COLOUR = 0x5865F2


def _leaves(command: Any) -> list[Any]:
    """The runnable commands under ``command`` (itself, or a group's subcommands at any depth)."""
    if isinstance(command, app_commands.Group):
        return [c for c in command.walk_commands() if not isinstance(c, app_commands.Group)]
    return [command]


async def usable_commands(bot: SERBot, interaction: discord.Interaction) -> list[tuple[str, str]]:
    """``(usage, description)`` of every command the caller may use here, in a stable order.

    Global commands, plus those registered in the interaction's server; slash
    commands as ``/group sub``, message commands as "Apps → name".

    Parameters
    ----------
    bot : SERBot
        The bot whose command tree is listed.
    interaction : discord.Interaction
        The ``/help`` interaction (its user, server and permissions).
    """
    scopes: list[discord.abc.Snowflake | None] = [None]
    if interaction.guild_id is not None:
        scopes.append(discord.Object(id=interaction.guild_id))
    seen: set[tuple[str, int]] = set()
    slash: list[tuple[str, str]] = []
    menus: list[tuple[str, str]] = []
    for scope in scopes:
        for root in bot.tree.get_commands(guild=scope):
            for command in _leaves(root):
                kind = getattr(command, "type", discord.AppCommandType.chat_input)
                key = (command.qualified_name, int(kind.value))
                if key in seen or not await may_use(command, interaction):
                    continue
                seen.add(key)
                if isinstance(command, app_commands.ContextMenu):
                    menus.append((T.HELP_CONTEXT_MENU.format(name=command.name), ""))
                else:
                    slash.append((f"/{command.qualified_name}", command.description))
    return sorted(slash) + sorted(menus)


def help_embed(commands_here: list[tuple[str, str]], *, privacy_url: str = "") -> discord.Embed:
    """The ``/help`` answer.

    Parameters
    ----------
    commands_here : list of (str, str)
        From :func:`usable_commands`.
    privacy_url : str
        ``SER_PRIVACY_URL``: the full privacy text, linked when set.
    """
    lines = [f"`{usage}` — {desc}" if desc and usage.startswith("/") else usage for usage, desc in commands_here]
    listing = "\n".join(lines) or T.HELP_NO_COMMANDS
    description = f"{T.HELP_INTRO}\n\n**{T.HELP_COMMANDS}**\n{listing}"
    embed = discord.Embed(title=T.HELP_TITLE, description=description[:4096], colour=HELP_COLOUR)
    privacy = T.HELP_PRIVACY_TEXT
    if privacy_url:
        privacy += "\n" + T.HELP_PRIVACY_LINK.format(url=privacy_url)
    embed.add_field(name=T.HELP_PRIVACY, value=privacy[:1024], inline=False)
    embed.set_footer(text=T.HELP_FOOTER)
    return embed


class HelpCog(commands.Cog, name="Help"):
    """``/help`` and the join greeting.

    Parameters
    ----------
    bot : SERBot
        The running bot.
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description=T.HELP_DESCRIPTION)
    async def help(self, interaction: discord.Interaction) -> None:
        """``/help``: the commands the caller may use here and the privacy text (ephemeral)."""
        listed = await usable_commands(self.bot, interaction)
        embed = help_embed(listed, privacy_url=self.bot.settings.ser_privacy_url)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        """Post :data:`.text.JOIN_MESSAGE` once in the system channel, if there is one the bot may post in."""
        channel = guild.system_channel
        if channel is None:
            log.info("joined guild %s: it has no system channel, so no greeting", guild.id)
            return
        perms = channel.permissions_for(guild.me)
        if not (perms.view_channel and perms.send_messages):
            log.info("joined guild %s: no permission to greet in its system channel", guild.id)
            return
        try:
            await channel.send(T.JOIN_MESSAGE)
        except discord.HTTPException as exc:
            log.warning("joined guild %s: the greeting failed: %s", guild.id, exc)
            return
        log.info("joined guild %s: greeted in channel %s", guild.id, channel.id)
