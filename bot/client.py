"""The Discord client: owns the analysis service and loads the cogs."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from .config import Settings
from .discord_api import apply_api_base_url, apply_gateway_url

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.service import EmotionService

__all__ = ["SERBot", "INTENTS", "REQUIRED_PERMISSIONS", "EXTENSIONS", "invite_url"]

log = logging.getLogger(__name__)

#: Cog packages loaded at start-up (Red-DiscordBot style: each has ``async def setup(bot)``).
EXTENSIONS: tuple[str, ...] = ("bot.cogs.emotion", "bot.cogs.admin")


def _intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True  # channel and permission cache
    intents.guild_messages = True  # voice notes posted in servers
    intents.dm_messages = True  # voice notes sent to the bot directly
    intents.message_content = True  # privileged: without it guild messages arrive without attachments
    return intents


#: Gateway intents the bot asks for (message content must be enabled in the developer portal).
INTENTS: discord.Intents = _intents()

#: Channel permissions the bot needs: see channels, reply (also in threads) with embeds.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    read_message_history=True,
)


def invite_url(application_id: int) -> str:
    """OAuth2 URL that adds the bot with its slash commands and :data:`REQUIRED_PERMISSIONS`."""
    return discord.utils.oauth_url(
        application_id, permissions=REQUIRED_PERMISSIONS, scopes=("bot", "applications.commands")
    )


class SERBot(commands.Bot):
    """The speech-emotion bot.

    Parameters
    ----------
    settings : Settings
        Validated configuration (token, API base URL, model and service limits).
    **options : Any
        Passed on to :class:`discord.ext.commands.Bot` (e.g. ``guild_ready_timeout``).

    Attributes
    ----------
    settings : Settings
        The configuration the bot runs with.
    service : EmotionService or None
        The analysis service, created in :meth:`setup_hook`, closed in :meth:`close`.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(
            command_prefix=commands.when_mentioned,  # no text commands; Bot needs a prefix
            intents=INTENTS,
            help_command=None,
            **options,
        )
        self.settings = settings
        self.service: EmotionService | None = None

    # ------------------------------------------------------------ lifecycle
    async def login(self, token: str) -> None:
        """Point discord.py at the configured REST API, then log in (runs :meth:`setup_hook`)."""
        apply_api_base_url(self.settings.discord_api_base_url)
        await super().login(token)

    async def connect(self, *, reconnect: bool = True) -> None:
        """Ask ``GET /gateway/bot`` for the gateway URL, then run the websocket loop."""
        _shards, url, _limits = await self.http.get_bot_gateway()
        apply_gateway_url(url)
        await super().connect(reconnect=reconnect)

    async def setup_hook(self) -> None:
        """Load and warm the model, load the cogs, sync application commands.

        Raises
        ------
        ser_engine.errors.ModelError
            The model bundle is missing, altered or incompatible.
        """
        from ser_engine.audio import AudioLimits
        from ser_engine.predict import Predictor
        from ser_engine.service import EmotionService

        s = self.settings
        limits = AudioLimits(max_bytes=s.ser_max_bytes, max_duration_s=s.ser_max_duration_s)
        log.info("loading model %s", s.ser_model_path)
        predictor = await asyncio.to_thread(Predictor.load, s.ser_model_path, limits=limits)
        self.service = EmotionService(
            predictor, workers=s.ser_workers, max_pending=s.ser_max_pending, timeout_s=s.ser_request_timeout_s
        )
        await self.service.start()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if s.sync_commands:
            await self.sync_app_commands()

    async def sync_app_commands(self) -> None:
        """Overwrite the registered commands: in ``DEV_GUILD_ID`` only if set, else globally."""
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d application command(s) to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global application command(s)", len(synced))

    async def on_ready(self) -> None:
        """Log who we are and how to invite us."""
        assert self.user is not None
        log.info("logged in as %s (id %s) in %d guild(s)", self.user, self.user.id, len(self.guilds))
        if self.application_id is not None:
            log.info("invite URL: %s", invite_url(self.application_id))

    async def close(self) -> None:
        """Disconnect from Discord, then let running analyses finish and stop the service."""
        try:
            await super().close()
        finally:
            service, self.service = self.service, None
            if service is not None:
                await service.close()
