"""``/settings``: a server's voice-note settings (Manage Server server-wide: :func:`bot.checks.server_manager`).

Auto-analysis on/off, allow/deny lists of text, voice and forum channels (a
category stands for its channels of these types at the time of the command;
threads follow their channel), public replies or DMs to
the speaker, alerts to a mod-log channel (emotions, confidence threshold,
cool-down) and data retention. Every answer is ephemeral and shows the
settings after the change. When the bot leaves a server, that server's
stored analyses and settings are deleted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.insights import EMOTION_ORDER
from bot.storage import MAX_RETENTION_DAYS, GuildSettings, StoreError

from ..common import UserFacingError, correlation_id, store_of
from ..emotion.render import format_duration

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["SettingsCog", "settings_embed", "parse_emotions"]

log = logging.getLogger(__name__)

AnyChannel = app_commands.AppCommandChannel | app_commands.AppCommandThread

#: Channels where voice notes are posted and that ``/settings channel`` lists: text (and announcement),
#: voice (their text chat) and forum channels (their posts are threads, which follow the forum).
VOICE_NOTE_CHANNEL_TYPES: frozenset[discord.ChannelType] = frozenset(
    {discord.ChannelType.text, discord.ChannelType.news, discord.ChannelType.voice, discord.ChannelType.forum}
)
WRONG_CHANNEL_TYPE = (
    "Pick a text, voice or forum channel (or a category, for all of its channels); {kind} can't be listed."
)
_KIND_NAMES = {"public_thread": "a thread", "private_thread": "a thread", "news_thread": "a thread",
               "stage_voice": "a stage channel", "media": "a media channel", "directory": "a directory"}  # fmt: skip


class ChannelOrCategory(app_commands.Transformer):
    """The ``channel`` option of ``/settings channel``: the client offers only listable channels.

    Discord's channel picker shows only :data:`VOICE_NOTE_CHANNEL_TYPES` and
    categories (``channel_types`` of the option); the command still checks the
    type it receives (:func:`listable_channels`), since any client can send any id.
    """

    @property
    def type(self) -> discord.AppCommandOptionType:
        """A channel option."""
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        """The types the channel picker offers."""
        return sorted(VOICE_NOTE_CHANNEL_TYPES | {discord.ChannelType.category}, key=lambda t: t.value)

    async def transform(  # type: ignore[override]
        self, interaction: discord.Interaction, value: AnyChannel
    ) -> AnyChannel:
        """The resolved channel, unchanged."""
        return value


def listable_channels(channel: AnyChannel, guild: discord.Guild | None) -> list[int]:
    """The channel ids that ``/settings channel`` puts on a list for ``channel``.

    Parameters
    ----------
    channel : AppCommandChannel or AppCommandThread
        The option's value.
    guild : discord.Guild or None
        The server (its cached channels resolve a category).

    Returns
    -------
    list of int
        ``[channel.id]`` for a text, announcement, voice or forum channel;
        for a category, its channels of those types, in their order.

    Raises
    ------
    UserFacingError
        Any other type (threads, stage channels ...), or a category without
        such channels.
    """
    if channel.type in VOICE_NOTE_CHANNEL_TYPES:
        return [channel.id]
    if channel.type is discord.ChannelType.category:
        category = guild.get_channel(channel.id) if guild is not None else None
        children = category.channels if isinstance(category, discord.CategoryChannel) else []
        ids = [c.id for c in children if c.type in VOICE_NOTE_CHANNEL_TYPES]
        if not ids:
            raise UserFacingError(f"The category {channel.mention} has no text, voice or forum channel.")
        return ids
    raise UserFacingError(WRONG_CHANNEL_TYPE.format(kind=_KIND_NAMES.get(channel.type.name, "this channel")))


def parse_emotions(text: str, known: tuple[str, ...]) -> list[str]:
    """Parse a comma- or space-separated list of emotions.

    Parameters
    ----------
    text : str
        E.g. ``"angry, fearful"``.
    known : tuple of str
        The labels the model can give.

    Returns
    -------
    list of str
        Lower-case labels in the order given, without repeats.

    Raises
    ------
    UserFacingError
        An empty list or an unknown label (the message lists the known ones).
    """
    wanted = list(dict.fromkeys(w for w in text.replace(",", " ").lower().split() if w))
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        shown = ", ".join(f"`{w[:32]}`" for w in unknown[:5]) or "nothing"
        raise UserFacingError(f"Unknown emotion {shown}. Pick from: {', '.join(known)}.")
    return wanted


def _channels(ids: frozenset[int]) -> str:
    return ", ".join(f"<#{i}>" for i in sorted(ids)) or "none"


def settings_embed(s: GuildSettings, *, changed: str | None = None) -> discord.Embed:
    """An embed describing a server's settings.

    Parameters
    ----------
    s : GuildSettings
        The settings to show.
    changed : str, optional
        A sentence saying what just changed, as the description.
    """
    embed = discord.Embed(title="Voice-note settings", description=changed, colour=0x5865F2)
    if not s.auto_analyse:
        analysis = "Off: voice notes are not analysed automatically (turn it on with `/settings analysis`)."
    elif s.allowed_channels:
        analysis = f"On, only in {_channels(s.allowed_channels)}"
    else:
        analysis = "On, in every channel"
    if s.auto_analyse and s.denied_channels:
        analysis += f", never in {_channels(s.denied_channels)}"
    embed.add_field(name="Auto-analysis", value=analysis[:1024], inline=False)
    replies = "A public reply to the voice note" if s.reply_mode == "reply" else "A direct message to the speaker"
    embed.add_field(name="Answers", value=replies, inline=False)
    if s.alerts_enabled:
        alerts = (
            f"To <#{s.modlog_channel_id}> when a note sounds {', '.join(s.alert_emotions)} "
            f"with at least {s.alert_threshold:.0%} confidence; at most one per member per channel "
            f"every {format_duration(s.alert_cooldown_s)}."
        )
    else:
        alerts = "Off (choose a mod-log channel with `/settings alerts`)."
    embed.add_field(name="Alerts", value=alerts[:1024], inline=False)
    embed.add_field(
        name="Retention",
        value=f"Analyses are deleted after {s.retention_days} day{'s' if s.retention_days != 1 else ''}.",
        inline=False,
    )
    return embed


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class SettingsCog(
    commands.GroupCog, name="Settings", group_name="settings", group_description="Voice-note settings of this server"
):
    """The ``/settings`` command group.

    Parameters
    ----------
    bot : SERBot
        The running bot; settings live in ``bot.store``.
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        super().__init__()

    # ----------------------------------------------------------- helpers
    def _known_emotions(self) -> tuple[str, ...]:
        service = self.bot.service
        return tuple(service.predictor.labels) if service is not None else EMOTION_ORDER

    async def _update(self, interaction: discord.Interaction, changed: str, **changes: Any) -> None:
        """Write ``changes``, remember the result, answer with the new settings (ephemeral)."""
        assert interaction.guild_id is not None
        try:
            new = await store_of(self.bot).update_guild_settings(interaction.guild_id, **changes)
        except ValueError as exc:
            # The store's validation text names internal fields: it goes to the log, the user gets its id.
            cid = correlation_id()
            log.warning("guild %s settings refused [%s]: %s", interaction.guild_id, cid, exc)
            raise UserFacingError(f"That value is not allowed; nothing changed. (error id `{cid}`)") from exc
        self.bot.known_settings[interaction.guild_id] = new
        log.info("guild %s settings changed by %s: %s", interaction.guild_id, interaction.user.id, sorted(changes))
        await interaction.response.send_message(embed=settings_embed(new, changed=changed), ephemeral=True)

    # ---------------------------------------------------------- commands
    @app_commands.command(name="show", description="Show this server's voice-note settings")
    @checks.server_manager()
    async def show(self, interaction: discord.Interaction) -> None:
        """``/settings show``."""
        assert interaction.guild_id is not None
        current = await store_of(self.bot).get_guild_settings(interaction.guild_id)
        self.bot.known_settings[interaction.guild_id] = current
        await interaction.response.send_message(embed=settings_embed(current), ephemeral=True)

    @app_commands.command(name="analysis", description="Turn automatic analysis of voice notes on or off")
    @checks.server_manager()
    @app_commands.describe(enabled="Analyse voice notes posted in this server")
    async def analysis(self, interaction: discord.Interaction, enabled: bool) -> None:
        """``/settings analysis enabled:<true|false>``."""
        state = "on" if enabled else "off"
        await self._update(interaction, f"Automatic analysis is now **{state}**.", auto_analyse=enabled)

    @app_commands.command(name="channel", description="Allow or deny automatic analysis in one channel")
    @checks.server_manager()
    @app_commands.describe(
        channel="A text, voice or forum channel, or a category for its channels (threads follow their channel)",
        mode="allow: analyse here (once any channel is allowed, only allowed ones are); "
        "deny: never here; clear: back to default",
    )
    @app_commands.choices(
        mode=[
            app_commands.Choice(name="allow", value="allow"),
            app_commands.Choice(name="deny", value="deny"),
            app_commands.Choice(name="clear", value="clear"),
        ]
    )
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: app_commands.Transform[AnyChannel, ChannelOrCategory],
        mode: str,
    ) -> None:
        """``/settings channel channel:<#channel or category> mode:<allow|deny|clear>``.

        Raises
        ------
        UserFacingError
            A channel type that cannot be listed (see :func:`listable_channels`).
        """
        assert interaction.guild_id is not None
        ids = listable_channels(channel, interaction.guild)  # before any change
        current = await store_of(self.bot).get_guild_settings(interaction.guild_id)
        allowed = set(current.allowed_channels) - set(ids)
        denied = set(current.denied_channels) - set(ids)
        shown = ", ".join(f"<#{i}>" for i in ids)
        many = len(ids) > 1
        if mode == "allow":
            allowed.update(ids)
            changed = f"{shown} {'are' if many else 'is'} now on the allow list."
        elif mode == "deny":
            denied.update(ids)
            changed = f"Voice notes in {shown} are no longer analysed."
        else:
            changed = f"{shown} {'are' if many else 'is'} on neither list any more."
        await self._update(interaction, changed[:1800], allowed_channels=allowed, denied_channels=denied)

    @app_commands.command(name="replies", description="Answer voice notes publicly or by DM to the speaker")
    @checks.server_manager()
    @app_commands.describe(mode="reply: a public reply in the channel; dm: a direct message to the speaker")
    @app_commands.choices(
        mode=[
            app_commands.Choice(name="public reply", value="reply"),
            app_commands.Choice(name="DM to the speaker", value="dm"),
        ]
    )
    async def replies(self, interaction: discord.Interaction, mode: str) -> None:
        """``/settings replies mode:<reply|dm>``."""
        text = "publicly in the channel" if mode == "reply" else "by direct message to the speaker"
        await self._update(interaction, f"Voice notes are now answered {text}.", reply_mode=mode)

    @app_commands.command(name="alerts", description="Post alerts about heated voice notes in a mod-log channel")
    @checks.server_manager()
    @app_commands.describe(
        channel="The mod-log channel the alerts go to",
        emotions="Emotions that alert, comma-separated (default: unchanged; initially angry)",
        threshold="Minimum confidence in percent, 0-100 (default: unchanged; initially 80)",
        cooldown="Minutes between two alerts about one member in one channel (default: unchanged; initially 10)",
    )
    async def alerts(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        emotions: app_commands.Range[str, 1, 200] | None = None,
        threshold: app_commands.Range[float, 0.0, 100.0] | None = None,
        cooldown: app_commands.Range[int, 0, 1440] | None = None,
    ) -> None:
        """``/settings alerts channel:<#mod-log> [emotions] [threshold] [cooldown]``."""
        me = channel.guild.me
        perms = channel.permissions_for(me)
        if not (perms.view_channel and perms.send_messages and perms.embed_links):
            raise UserFacingError(
                f"I can't post in {channel.mention}: give me View Channel, Send Messages and Embed Links there first."
            )
        changes: dict[str, Any] = {"modlog_channel_id": channel.id}
        if emotions is not None:
            changes["alert_emotions"] = parse_emotions(emotions, self._known_emotions())
        if threshold is not None:
            changes["alert_threshold"] = float(threshold) / 100.0
        if cooldown is not None:
            changes["alert_cooldown_s"] = int(cooldown) * 60
        await self._update(interaction, f"Alerts now go to {channel.mention}.", **changes)

    @app_commands.command(name="alerts-off", description="Stop posting alerts")
    @checks.server_manager()
    async def alerts_off(self, interaction: discord.Interaction) -> None:
        """``/settings alerts-off``."""
        await self._update(interaction, "Alerts are now **off**.", modlog_channel_id=None)

    @app_commands.command(name="retention", description="How many days stored analyses are kept")
    @checks.server_manager()
    @app_commands.describe(days=f"Days, 1-{MAX_RETENTION_DAYS} (default 30)")
    async def retention(
        self, interaction: discord.Interaction, days: app_commands.Range[int, 1, MAX_RETENTION_DAYS]
    ) -> None:
        """``/settings retention days:<n>``."""
        await self._update(interaction, f"Analyses are now kept for {days} days.", retention_days=days)

    # ---------------------------------------------------------- listeners
    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot left (or was removed from) a server: delete its analyses, alerts and settings."""
        self.bot.known_settings.pop(guild.id, None)
        store = self.bot.store
        if store is None:
            return
        try:
            deleted = await store.delete_guild_data(guild.id)
        except StoreError as exc:
            log.warning("left guild %s but could not delete its data: %s", guild.id, exc.message)
            return
        log.info("left guild %s: deleted %d stored rows", guild.id, deleted)
