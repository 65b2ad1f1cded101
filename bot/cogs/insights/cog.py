"""``/insights``: how a server, a channel or a member sounded over the last 24 h, 7 d or 30 d.

For moderators only: Manage Messages or Manage Server in the server's roles
(:func:`bot.checks.moderator`; a channel overwrite does not make anyone a
moderator of the whole server, nor remove it). A moderator sees only the
analyses of channels they can view (View Channel resolved per channel, threads
following their parent channel); analyses of channels and threads the bot
does not have in its cache (deleted channels, archived threads) are shown to
Administrators only. The answer is
ephemeral unless asked otherwise: an embed with the number of notes analysed,
the emotion distribution, the channels with the highest share of
angry/fearful/sad notes and a trend sentence, plus a PNG chart of the emotion
shares per day (per hour for 24 h), rendered in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.insights import EmotionInsights, Scope, Window, insights_fields, render_trend_png

from ..common import UserFacingError, store_of

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["InsightsCog", "MODERATOR_PERMISSIONS", "CHART_FILENAME", "resolve_scope", "visible_channel_ids",
           "chart_description"]  # fmt: skip

#: Text alternative of the chart (what it shows, for screen readers): ``{title}``, ``{shares}``, ``{buckets}``.
CHART_DESCRIPTION = (
    "Stacked bar chart, one bar per {unit} ({buckets} bars): {title}. Each bar is split by the share of each "
    "emotion that {unit}; the number of notes is printed above it. Over the whole period: {shares}."
)
#: Longest text alternative Discord accepts for an attachment (characters).
MAX_DESCRIPTION = 1024


def chart_description(title: str, result: EmotionInsights) -> str:
    """The chart's text alternative (``discord.File(description=...)``): what it shows, in words.

    Parameters
    ----------
    title : str
        The chart's title (scope, window and number of notes).
    result : EmotionInsights
        The numbers drawn (``distribution``: notes per emotion).

    Returns
    -------
    str
        At most :data:`MAX_DESCRIPTION` characters, naming every emotion with
        its share of the notes, most frequent first.
    """
    total = max(1, result.total)
    ranked = sorted(((n, label) for label, n in result.distribution.items() if n), key=lambda t: -t[0])
    shares = ", ".join(f"{label} {n / total:.0%} ({n})" for n, label in ranked) or "no notes"
    unit = "hour" if result.bucket == "hour" else "day"
    text = CHART_DESCRIPTION.format(unit=unit, buckets=len(result.bucket_starts), title=title, shares=shares)
    return text[:MAX_DESCRIPTION]

log = logging.getLogger(__name__)

#: Holding any one of these server-wide (or Administrator) allows ``/insights``.
MODERATOR_PERMISSIONS: tuple[str, ...] = checks.MODERATOR_PERMISSIONS
CANNOT_VIEW = "You can't view that channel, so its insights are not shown to you."
#: File name of the chart attachment (the embed shows it as ``attachment://insights.png``).
CHART_FILENAME = "insights.png"
FOOTER = (
    "Emotions estimated from the voice alone by a model trained on acted English speech (RAVDESS): "
    "a rough signal about the mood of a conversation, not a verdict on anyone."
)
AnyChannel = app_commands.AppCommandChannel | app_commands.AppCommandThread


def resolve_scope(
    guild_id: int,
    current_channel_id: int | None,
    scope: str | None,
    channel: AnyChannel | None,
    user: discord.abc.User | None,
) -> Scope:
    """Turn the command's options into a :class:`~bot.insights.Scope`.

    Parameters
    ----------
    guild_id : int
        The server the command was used in.
    current_channel_id : int or None
        The channel it was used in (the default for ``scope="channel"``).
    scope : {"server", "channel", "user"} or None
        What to look at; ``None`` infers it from ``channel``/``user``.
    channel : AppCommandChannel or AppCommandThread or None
        The ``channel`` option.
    user : discord.User or discord.Member or None
        The ``user`` option.

    Raises
    ------
    UserFacingError
        Contradicting options (both a channel and a user, a user scope
        without a user).
    """
    if channel is not None and user is not None:
        raise UserFacingError("Pick a channel or a member, not both.")
    if scope is None:
        scope = "channel" if channel is not None else "user" if user is not None else "server"
    if scope == "channel":
        channel_id = channel.id if channel is not None else current_channel_id
        if channel_id is None:
            raise UserFacingError("Pick the channel to look at.")
        return Scope.channel(guild_id, channel_id)
    if scope == "user":
        if user is None:
            raise UserFacingError("Pick the member to look at with the `user` option.")
        return Scope.user(guild_id, user.id)
    if channel is not None or user is not None:
        raise UserFacingError("The server scope covers every channel and member; leave `channel` and `user` empty.")
    return Scope.guild(guild_id)


def visible_channel_ids(interaction: discord.Interaction) -> frozenset[int] | None:
    """Channels and threads of the server whose analyses the member may see.

    Parameters
    ----------
    interaction : discord.Interaction
        A guild interaction by a member.

    Returns
    -------
    frozenset of int or None
        ``None`` for the server's owner and Administrators (every analysis,
        also of channels deleted since); else the ids of the cached channels
        and threads for which ``permissions_for(member).view_channel`` holds
        (Discord's resolution of roles and overwrites; a thread follows its
        parent channel). Empty when the server is not cached.
    """
    member, guild = interaction.user, interaction.guild
    if not isinstance(member, discord.Member) or guild is None or guild.default_role is None:
        return frozenset()
    if checks.server_permissions(interaction).administrator:
        return None
    places: list[discord.abc.GuildChannel | discord.Thread] = [*guild.channels, *guild.threads]
    return frozenset(c.id for c in places if c.permissions_for(member).view_channel)


def _scope_title(scope: Scope, guild: discord.Guild | None, channel: AnyChannel | None, user: object) -> str:
    """Plain-text name of the scope for the chart title (mentions do not render in images)."""
    if scope.channel_id is not None:
        name = channel.name if channel is not None else None
        if name is None and guild is not None:
            found = guild.get_channel_or_thread(scope.channel_id)
            name = found.name if found is not None else None
        return f"#{name}" if name else "Channel"
    if scope.user_id is not None:
        return getattr(user, "display_name", None) or "Member"
    return guild.name if guild is not None else "Server"


def build_insights_embed(insights: EmotionInsights, *, with_chart: bool) -> discord.Embed:
    """The ``/insights`` embed: the fields of :func:`bot.insights.insights_fields` and the chart.

    Parameters
    ----------
    insights : EmotionInsights
        From :meth:`bot.storage.Store.insights`.
    with_chart : bool
        Show the attached ``insights.png`` as the embed's image.
    """
    embed = discord.Embed(title="Voice-note insights", colour=0x5865F2, timestamp=insights.until)
    for name, value, inline in insights_fields(insights):
        embed.add_field(name=name, value=value, inline=inline)
    if with_chart:
        embed.set_image(url=f"attachment://{CHART_FILENAME}")
    embed.set_footer(text=FOOTER)
    return embed


class InsightsCog(commands.Cog, name="Insights"):
    """The ``/insights`` command.

    Parameters
    ----------
    bot : SERBot
        The running bot; ``bot.store`` holds the analyses.
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot

    @app_commands.command(name="insights", description="How this server's voice notes sounded lately (moderators)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_messages=True)
    @checks.moderator()
    @app_commands.describe(
        scope="What to look at (default: the server, or the channel/member you pick)",
        window="Time window (default: last 7 days)",
        channel="The channel to look at (scope: channel; default: this channel)",
        user="The member to look at (scope: user)",
        public="Post the answer in the channel for everyone (default: only you see it)",
    )
    @app_commands.choices(
        scope=[
            app_commands.Choice(name="Server", value="server"),
            app_commands.Choice(name="Channel", value="channel"),
            app_commands.Choice(name="Member", value="user"),
        ],
        window=[
            app_commands.Choice(name="Last 24 hours", value="24h"),
            app_commands.Choice(name="Last 7 days", value="7d"),
            app_commands.Choice(name="Last 30 days", value="30d"),
        ],
    )
    async def insights(
        self,
        interaction: discord.Interaction,
        scope: str | None = None,
        window: str = "7d",
        channel: AnyChannel | None = None,
        user: discord.User | None = None,
        public: bool = False,
    ) -> None:
        """``/insights [scope] [window] [channel] [user] [public]``."""
        assert interaction.guild_id is not None  # guild_only, and checked by checks.moderator
        chosen = resolve_scope(interaction.guild_id, interaction.channel_id, scope, channel, user)
        visible = visible_channel_ids(interaction)
        if visible is not None:
            if chosen.channel_id is not None and chosen.channel_id not in visible:
                raise UserFacingError(CANNOT_VIEW)
            chosen = dataclasses.replace(chosen, channel_ids=visible)
        period = Window.parse(window)
        await interaction.response.defer(ephemeral=not public, thinking=True)
        result = await store_of(self.bot).insights(chosen, period)
        files: list[discord.File] = []
        if result.total > 0:
            noun = "note" if result.total == 1 else "notes"
            unit = "hour" if result.bucket == "hour" else "day"
            title = (
                f"{_scope_title(chosen, interaction.guild, channel, user)}: emotion share per {unit}, "
                f"{period.description} ({result.total} {noun})"
            )
            png = await asyncio.to_thread(render_trend_png, result, title=title)  # CPU-bound: off the event loop
            files.append(discord.File(io.BytesIO(png), filename=CHART_FILENAME,
                                      description=chart_description(title, result)))  # fmt: skip
        embed = build_insights_embed(result, with_chart=bool(files))
        await interaction.edit_original_response(embed=embed, attachments=files)
        log.info("insights for guild %s: %s, %s, %d notes", interaction.guild_id, chosen.kind, window, result.total)
