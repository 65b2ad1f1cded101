"""The Discord client: owns the analysis service and loads the cogs."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from .config import Settings
from .discord_api import apply_api_base_url, apply_gateway_url
from .tree import SERCommandTree

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.service import EmotionService

    from .cogs.admin.settings import LifecycleSettings
    from .health import HealthServer
    from .storage import GuildSettings, Store

__all__ = ["SERBot", "ShardedSERBot", "make_bot", "INTENTS", "REQUIRED_PERMISSIONS", "EXTENSIONS", "invite_url"]

log = logging.getLogger(__name__)

#: Cog packages loaded at start-up (Red-DiscordBot style: each has ``async def setup(bot)``).
EXTENSIONS: tuple[str, ...] = (
    "bot.cogs.emotion", "bot.cogs.insights", "bot.cogs.settings", "bot.cogs.privacy", "bot.cogs.admin",
    "bot.cogs.feedback", "bot.cogs.help",
)


def _intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True  # channel and permission cache
    intents.guild_messages = True  # voice notes posted in servers
    intents.dm_messages = True  # voice notes sent to the bot directly
    intents.message_content = True  # privileged: without it guild messages arrive without attachments
    return intents


#: Gateway intents the bot asks for (message content must be enabled in the developer portal).
INTENTS: discord.Intents = _intents()

#: Channel permissions the bot needs: see channels, reply (also in threads) with embeds, and attach the
#: timeline strip of a long voice note (without Attach Files the answer keeps its "Over time" line only).
#: (The ``/insights`` chart travels in an interaction response, which needs no channel permission.)
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
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
    lifecycle : LifecycleSettings, optional
        Settings of the model life cycle (registry, training corpus, quality
        gate) used by the admin cog; default: read from the environment.
    **options : Any
        Passed on to :class:`discord.ext.commands.Bot` (e.g. ``guild_ready_timeout``).

    Attributes
    ----------
    settings : Settings
        The configuration the bot runs with.
    lifecycle_settings : LifecycleSettings
        The model life cycle's settings (may be replaced before :meth:`start`).
    tree : SERCommandTree
        The application commands; its ``on_error`` answers every failure.
    service : EmotionService or None
        The analysis service, created in :meth:`setup_hook`, closed in :meth:`close`.
    store : Store or None
        Storage of analyses, guild settings and opt-outs, created in
        :meth:`setup_hook` (even when the database is unreachable then: it
        reconnects by itself), closed in :meth:`close`.
    known_settings : dict of int to GuildSettings
        Last settings read or written per guild, used while the database is
        unavailable.
    metrics : BotMetrics
        Prometheus metrics (:mod:`bot.health`), counted whether or not they are served.
    health : HealthServer or None
        The ``/healthz``, ``/readyz`` and ``/metrics`` server, started in
        :meth:`setup_hook` when ``SER_HTTP_PORT`` is set.
    setup_done : bool
        Whether :meth:`setup_hook` finished (model, store, cogs, commands); part of ``/readyz``.
    """

    def __init__(self, settings: Settings, *, lifecycle: LifecycleSettings | None = None, **options: Any) -> None:
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(
            command_prefix=commands.when_mentioned,  # no text commands; Bot needs a prefix
            intents=INTENTS,
            help_command=None,
            tree_cls=SERCommandTree,
            **options,
        )
        if lifecycle is None:
            from .cogs.admin.settings import LifecycleSettings

            lifecycle = LifecycleSettings()
        self.settings = settings
        self.lifecycle_settings: LifecycleSettings = lifecycle
        self.service: EmotionService | None = None
        self.store: Store | None = None
        self.known_settings: dict[int, GuildSettings] = {}
        from .health import BotMetrics

        self.metrics = BotMetrics(self)
        self.health: HealthServer | None = None
        self.setup_done = False  # set at the end of setup_hook (for /readyz)
        #: The broker's Redis pool when ``SER_BROKER_URL`` is set (shared cool-downs and pacing), else ``None``.
        self.shared_redis: Any = None

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
        """Load and warm the model, open the store, load the cogs, sync application commands.

        The store runs its migrations now. An unreachable database does not
        stop the bot: voice notes are still answered (nothing is stored) and
        the store retries on later calls.

        Raises
        ------
        ser_engine.errors.ModelError
            The model bundle is missing, altered or incompatible.
        """
        from ser_engine.audio import AudioLimits
        from ser_engine.predict import Predictor
        from ser_engine.service import EmotionService

        s = self.settings
        if s.ser_http_port is not None:  # first: /healthz says 503 while the model loads
            await self.start_health_server()
        limits = AudioLimits(max_bytes=s.ser_max_bytes, max_duration_s=s.ser_max_duration_s)
        log.info("loading model %s", s.ser_model_path)
        predictor = await asyncio.to_thread(Predictor.load, s.ser_model_path, limits=limits)
        if s.ser_broker_url is not None:
            # Scale-out: analyses run on `ser worker` processes; limits are shared through the broker's Redis.
            from ser_engine.distributed.client import BrokerService

            broker = BrokerService(
                predictor, s.ser_broker_url.get_secret_value(), timeout_s=s.ser_broker_timeout_s,
                max_pending=s.ser_max_pending, queue=s.ser_broker_queue,
            )  # fmt: skip
            await broker.start()
            self.shared_redis = broker.redis
            self.service = broker  # type: ignore[assignment]  # the EmotionService interface
        else:
            self.service = EmotionService(
                predictor, workers=s.ser_workers, max_pending=s.ser_max_pending, timeout_s=s.ser_request_timeout_s,
                mode=s.ser_worker_mode,
            )
            await self.service.start()
        await self.open_store()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if s.sync_commands:
            await self.sync_app_commands()
        self.setup_done = True

    async def start_health_server(self) -> None:
        """Serve ``/healthz``, ``/readyz`` and ``/metrics`` on ``SER_HTTP_HOST:SER_HTTP_PORT`` (:mod:`bot.health`).

        Raises
        ------
        bot.health.HealthPortError
            The port cannot be bound (``ser-bot`` then exits with code 2).
        """
        from .health import HealthServer

        s = self.settings
        server = HealthServer(self, s.ser_http_host, s.ser_http_port or 0)
        await server.start()
        self.health = server

    async def on_voice_note_processed(self, outcome: Any) -> None:
        """Count every voice note's outcome in :attr:`metrics`."""
        self.metrics.count_outcome(outcome)

    async def open_store(self) -> None:
        """Create :attr:`store` from ``DATABASE_URL`` (or ``DATA_DIR/ser.db``) and migrate it.

        Never raises for the database itself: when it cannot be reached or
        migrated the failure is logged and the bot runs without storage until
        the store's next successful call.
        """
        from .storage import Store, StoreError, StoreUnavailableError, resolve_database_url

        s = self.settings
        raw = s.database_url.get_secret_value() if s.database_url is not None else None
        url = await asyncio.to_thread(resolve_database_url, raw, s.sqlite_path)
        self.store = Store(url)
        log.info("database: %s", self.store.url)  # password masked
        try:
            await self.store.start()
        except StoreUnavailableError as exc:
            log.warning("the database is unavailable (%s); voice notes are answered but not stored", exc.message)
        except StoreError as exc:
            log.error("the database could not be prepared (%s); voice notes are answered but not stored", exc.message)

    async def sync_app_commands(self) -> None:
        """Overwrite the registered commands: global ones in ``DEV_GUILD_ID`` only if set, else globally.

        The operators' commands that the admin cog put in ``SER_ADMIN_GUILD_ID``
        are synced to that server (when it is not the development server,
        which received them with the global ones).
        """
        s = self.settings
        if s.dev_guild_id is not None:
            guild = discord.Object(id=s.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d application command(s) to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global application command(s)", len(synced))
        if s.ser_admin_guild_id is not None and s.ser_admin_guild_id != s.dev_guild_id:
            admin = discord.Object(id=s.ser_admin_guild_id)
            synced = await self.tree.sync(guild=admin)
            log.info("synced %d operator command(s) to the admin guild %s", len(synced), admin.id)

    async def on_ready(self) -> None:
        """Log who we are and how to invite us."""
        assert self.user is not None
        log.info("logged in as %s (id %s) in %d guild(s)", self.user, self.user.id, len(self.guilds))
        if self.application_id is not None:
            log.info("invite URL: %s", invite_url(self.application_id))

    #: Seconds :meth:`close` lets event handlers finish before cancelling them. With the replies
    #: released at once (nothing waits in the pacer), a handler only finishes an analysis already
    #: running, one store write or one HTTP request; the 10 s asked of a shutdown (issue 13) leaves
    #: room for the service, the websocket and the store.
    SHUTDOWN_DRAIN_S: float = 5.0
    _shutdown_begun: bool = False

    async def _drain_event_handlers(self, timeout_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Wait (bounded) for event handlers still running, e.g. storing an analysis; cancel the late ones.

        discord.py runs every event handler as a task named ``discord.py: on_...``.
        A handler cut off at shutdown would leave a database connection half
        used; letting it finish first keeps the shutdown clean.
        """
        current = asyncio.current_task()
        pending = [
            t for t in asyncio.all_tasks()
            if t is not current and not t.done() and t.get_name().startswith("discord.py: ")
        ]  # fmt: skip
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout_s)
            if late:
                log.warning("shutdown: %d event handler(s) still running after %.0f s; cancelled", len(late), timeout_s)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)

    async def _stop_work(self) -> None:
        """First half of :meth:`close`, while the HTTP session is still open.

        Cogs with a ``begin_shutdown()`` method stop taking work and release
        what waits (the emotion cog drops the replies waiting in its pacer);
        the service refuses new requests and lets running analyses finish;
        event handlers get :attr:`SHUTDOWN_DRAIN_S` to finish. One log line
        says how many replies were dropped. Nothing is sent afterwards.
        """
        stoppable = [cog for cog in self.cogs.values() if callable(getattr(cog, "begin_shutdown", None))]
        for cog in stoppable:
            cog.begin_shutdown()  # type: ignore[attr-defined]
        service, self.service = self.service, None
        try:
            if service is not None:
                await service.close()
        finally:
            await self._drain_event_handlers()
            dropped = sum(int(getattr(cog, "dropped_at_shutdown", 0)) for cog in stoppable)
            log.info("shutdown: dropped %d replies still waiting to be sent", dropped)

    async def close(self) -> None:
        """Stop within 10 s: drop waiting replies, let running analyses finish, disconnect, close the store.

        The work stops while the HTTP session is open (:meth:`_stop_work`),
        so no reply is released after the session closed; only then are the
        cogs unloaded and the connection closed. Safe to call more than once.
        """
        try:
            if not self._shutdown_begun:
                self._shutdown_begun = True
                await self._stop_work()
        finally:
            try:
                await super().close()
            finally:
                service, self.service = self.service, None
                try:
                    if service is not None:  # close() before _stop_work ran to its end
                        await service.close()
                finally:
                    store, self.store = self.store, None
                    try:
                        if store is not None:
                            await store.close()
                    finally:
                        health, self.health = self.health, None
                        if health is not None:
                            await health.close()


class ShardedSERBot(SERBot, commands.AutoShardedBot):
    """:class:`SERBot` on :class:`discord.ext.commands.AutoShardedBot`: one process runs some or all shards.

    ``SHARD_COUNT`` (``auto``: Discord's recommended count from ``GET /gateway/bot``)
    and ``SHARD_IDS`` (this process's shards; default all) choose them.  Discord
    sends each shard the events of the guilds with ``(guild_id >> 22) %
    shard_count == shard_id`` and direct messages to shard 0
    (https://discord.com/developers/docs/topics/gateway#sharding).
    """


def make_bot(settings: Settings, **options: Any) -> SERBot:
    """The bot for ``settings``: :class:`ShardedSERBot` when ``SHARD_COUNT`` is set, else :class:`SERBot`.

    Parameters
    ----------
    settings : Settings
        Validated configuration.
    **options : Any
        Passed on to the bot's constructor.
    """
    if not settings.sharded:
        return SERBot(settings, **options)
    count = settings.shard_count if isinstance(settings.shard_count, int) else None
    return ShardedSERBot(settings, shard_count=count, shard_ids=settings.shard_id_list, **options)
