"""A small fake of Discord's REST API and gateway for driving a real discord.py client.

One :class:`FakeDiscord` serves, on ``127.0.0.1`` and a random port:

* REST under ``/api/v10``: gateway discovery, ``/users/@me``, application info,
  bulk application-command overwrite, channel messages (JSON or multipart with
  files, kept as :class:`Upload`) and typing, DM channels, interaction callbacks
  (including UPDATE_MESSAGE for component clicks), and the interaction webhook
  (edit/delete ``@original``, followups);
* the gateway websocket at ``/gateway``: HELLO -> IDENTIFY -> READY + one
  GUILD_CREATE, heartbeats and ACKs, RESUME, with plain JSON text frames.
  discord.py asks for ``compress=zlib-stream`` but only decompresses *binary*
  frames (``DiscordWebSocket.received_message``), so text frames are fine;
* ``/attachments/{id}/{filename}``: bytes that tests register, standing in for
  Discord's CDN. :meth:`FakeDiscord.craft_download` makes one attachment's
  download misbehave (chunked without ``Content-Length``, more bytes than
  declared) and :meth:`FakeDiscord.hold_downloads` stalls downloads, counting
  how many run at once.

Tests inject gateway events (:meth:`FakeDiscord.send_message`,
:meth:`FakeDiscord.invoke_slash`, :meth:`FakeDiscord.invoke_message_command`,
:meth:`FakeDiscord.invoke_component`, :meth:`FakeDiscord.add_text_channel`)
and await what the bot sends (:meth:`FakeDiscord.wait_for_request`).
Payload shapes follow https://discord.com/developers/docs and discord.py's
``discord/types``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

from . import payloads as p

__all__ = ["FakeDiscord", "RecordedRequest", "FakeDiscordTimeout", "Upload"]

API_PREFIX = "/api/v10"
# Where the middleware leaves the RecordedRequest for the handler (typed key on aiohttp >= 3.12).
_RECORD: Any = web.RequestKey("record", object) if hasattr(web, "RequestKey") else "record"

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 9, 10, 11

# Gateway intents (https://discord.com/developers/docs/topics/gateway#list-of-intents).
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15


class FakeDiscordTimeout(AssertionError):
    """Nothing matching arrived in time (an assertion failure for the test)."""


@dataclass
class Upload:
    """One file of a multipart request (what discord.py sends as ``files[n]``).

    Attributes
    ----------
    field : str
        Form field name, e.g. ``"files[0]"``.
    filename : str
        The file name given in the part.
    content_type : str
        The part's content type.
    data : bytes
        The file's bytes.
    """

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request that reached the fake.

    Attributes
    ----------
    method : str
        Upper-case HTTP method.
    path : str
        Path relative to ``/api/v10`` for API calls (``/channels/1/messages``),
        the raw path otherwise (``/attachments/1/a.ogg``).
    query : dict[str, str]
        Query parameters.
    json : Any
        The JSON body (``payload_json`` of a multipart body), ``None`` if empty.
    authorized : bool
        Whether ``Authorization: Bot <token>`` carried the right token.
    index : int
        Position in :attr:`FakeDiscord.requests`.
    files : list[str]
        File names of a multipart body's file parts.
    uploads : list[Upload]
        The same parts with their bytes.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    authorized: bool
    index: int
    files: list[str] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)


@dataclass
class _Interaction:
    payload: dict[str, Any]
    callback_type: int | None = None
    original: dict[str, Any] | None = None


class _GatewaySession:
    """One IDENTIFY-ed gateway session (it survives reconnects through RESUME)."""

    def __init__(self, session_id: str, intents: int, shard: tuple[int, int] | None = None) -> None:
        self.session_id = session_id
        self.intents = intents
        self.shard = shard  # (shard_id, shard_count) from IDENTIFY, None when the client does not shard
        self.seq = 0
        self.ws: web.WebSocketResponse | None = None
        self.lock = asyncio.Lock()

    def receives(self, guild_id: str | None) -> bool:
        """Whether this session gets events of ``guild_id`` (``None``: direct messages, which go to shard 0).

        Discord's rule (https://discord.com/developers/docs/topics/gateway#sharding):
        ``shard_id = (guild_id >> 22) % num_shards``.
        """
        if self.shard is None:
            return True
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (int(guild_id) >> 22) % count == shard_id

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        frame: dict[str, Any] = {"op": op, "d": d, "s": None, "t": t}
        async with self.lock:
            if op == OP_DISPATCH:
                self.seq += 1
                frame["s"] = self.seq
            if self.ws is not None and not self.ws.closed:
                await self.ws.send_str(json.dumps(frame))


class FakeDiscord:
    """A fake Discord with one bot application, one guild, one text channel and one human.

    Tests may add text channels (:meth:`add_text_channel`) and members with
    chosen permissions (:meth:`add_member`); interactions then carry those
    permissions as Discord computes them (``member.permissions``).

    Parameters
    ----------
    token : str
        The bot token the fake accepts.
    heartbeat_interval_ms : int
        Heartbeat interval announced in HELLO, in milliseconds.

    Attributes
    ----------
    requests : list[RecordedRequest]
        Every HTTP request received, in order.
    commands : dict[str | None, list[dict]]
        Registered application commands by guild id (``None``: global).
    identifies : list[dict]
        IDENTIFY payloads received (with the token removed).
    """

    def __init__(self, *, token: str = "fake-bot-token", heartbeat_interval_ms: int = 41250) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.application_id = p.snowflake()
        self.bot_user = p.user(self.application_id, "SER Bot", bot=True)
        self.human = p.user(p.snowflake(), "alice")
        self.guild_id = p.snowflake()
        self.channel = p.text_channel(p.snowflake(), self.guild_id, "general")
        self.dm_channel = p.dm_channel(self.human)
        everyone = p.role(self.guild_id, "@everyone", p.MEMBER_PERMISSIONS)
        self.bot_member = p.member(self.bot_user, [])
        self.human_member = p.member(self.human, [], permissions=p.MEMBER_PERMISSIONS)
        self.guild = p.guild(
            self.guild_id,
            "Fake Guild",
            owner_id=self.human["id"],
            roles=[everyone],
            channels=[self.channel],
            members=[self.bot_member, self.human_member],
        )

        self.channels: dict[str, dict[str, Any]] = {self.channel["id"]: self.channel}
        self.dm_channels: dict[str, dict[str, Any]] = {self.human["id"]: self.dm_channel}
        self.requests: list[RecordedRequest] = []
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.identifies: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, tuple[bytes, str]] = {}
        self._init_cdn_crafting()
        self._interactions: dict[str, _Interaction] = {}
        self._sessions: dict[str, _GatewaySession] = {}
        self._failures: list[tuple[str, re.Pattern[str], web.Response]] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port: int = 0
        #: Guilds besides :attr:`guild` (see :meth:`add_guild`), by id.
        self.other_guilds: dict[str, dict[str, Any]] = {}
        #: The ``shards`` count ``GET /gateway/bot`` recommends.
        self.recommended_shards: int = 1

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeDiscord:
        """Start serving on 127.0.0.1 with a random free port."""
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        r = app.router
        r.add_get("/gateway", self._gateway)
        r.add_get("/attachments/{attachment_id}/{filename}", self._attachment)
        api = API_PREFIX
        r.add_get(api + "/gateway", self._get_gateway)
        r.add_get(api + "/gateway/bot", self._get_gateway_bot)
        r.add_get(api + "/users/@me", self._get_me)
        r.add_get(api + "/oauth2/applications/@me", self._get_application)
        r.add_get(api + "/applications/@me", self._get_application)
        r.add_put(api + "/applications/{app_id}/commands", self._put_commands)
        r.add_put(api + "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r.add_post(api + "/channels/{channel_id}/messages", self._post_message)
        r.add_post(api + "/channels/{channel_id}/typing", self._post_typing)
        r.add_post(api + "/users/@me/channels", self._post_dm_channel)
        r.add_post(api + "/interactions/{interaction_id}/{token}/callback", self._interaction_callback)
        r.add_route("*", api + "/webhooks/{app_id}/{token}/messages/@original", self._original)
        r.add_post(api + "/webhooks/{app_id}/{token}", self._followup)
        r.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        """Close every gateway connection and stop the server."""
        for session in list(self._sessions.values()):
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """REST base URL, the value for ``DISCORD_API_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Websocket URL that ``GET /gateway/bot`` hands out."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------ test helpers
    def mark(self) -> int:
        """Index of the next request; pass as ``since`` to look only at later requests."""
        return len(self.requests)

    def find_requests(
        self,
        method: str,
        path_regex: str,
        *,
        since: int = 0,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests with this method whose path matches ``path_regex`` (``re.search``)."""
        pattern = re.compile(path_regex)
        return [
            req
            for req in self.requests[since:]
            if req.method == method.upper() and pattern.search(req.path) and (where is None or where(req))
        ]

    async def wait_for_request(
        self,
        method: str,
        path_regex: str,
        timeout: float = 10.0,
        *,
        since: int = 0,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> RecordedRequest:
        """Wait for the first matching request at or after index ``since``.

        Raises
        ------
        FakeDiscordTimeout
            If none arrives within ``timeout`` seconds; the message lists what did arrive.
        """

        def first() -> RecordedRequest | None:
            found = self.find_requests(method, path_regex, since=since, where=where)
            return found[0] if found else None

        try:
            async with self._changed:
                return await asyncio.wait_for(self._changed.wait_for(first), timeout)  # type: ignore[return-value]
        except asyncio.TimeoutError:
            seen = [f"{r.method} {r.path}" for r in self.requests[since:]]
            raise FakeDiscordTimeout(f"no {method} {path_regex} within {timeout} s; got {seen}") from None

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait until a client has IDENTIFY-ed and been sent READY."""

        def ready() -> bool:
            return any(s.ws is not None and not s.ws.closed for s in self._sessions.values())

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        except asyncio.TimeoutError:
            raise FakeDiscordTimeout(f"no gateway client identified within {timeout} s") from None

    def command(self, name: str, *, type: int = 1) -> dict[str, Any]:
        """The registered application command ``name`` (guild commands first).

        Raises
        ------
        KeyError
            If the bot did not register such a command.
        """
        for scope in sorted(self.commands, key=lambda g: g is None):
            for cmd in self.commands[scope]:
                if cmd["name"] == name and cmd.get("type", 1) == type:
                    return cmd
        raise KeyError(f"command {name!r} (type {type}) was not registered; have {self.commands}")

    def add_attachment(
        self,
        body: bytes,
        filename: str,
        content_type: str | None,
        *,
        voice_message: bool = False,
        duration_s: float | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Serve ``body`` at ``/attachments/<id>/<filename>`` and return its attachment object.

        ``size`` overrides the size that Discord reports (default ``len(body)``).
        """
        attachment_id = p.snowflake()
        self._attachments[attachment_id] = (body, content_type or "application/octet-stream")
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{filename}"
        return p.attachment(
            attachment_id,
            filename,
            len(body) if size is None else size,
            url,
            content_type=content_type,
            duration_s=duration_s,
            voice_message=voice_message,
        )

    def downloads_of(self, attachment: dict[str, Any]) -> list[RecordedRequest]:
        """Requests that fetched ``attachment``'s bytes."""
        return self.find_requests("GET", rf"^/attachments/{attachment['id']}/")

    async def add_text_channel(self, name: str) -> dict[str, Any]:
        """Add a text channel to the guild (CHANNEL_CREATE to connected clients); return its payload."""
        channel = p.text_channel(p.snowflake(), self.guild_id, name, position=len(self.channels))
        self.channels[channel["id"]] = channel
        self.guild["channels"].append(channel)
        await self.dispatch("CHANNEL_CREATE", channel)
        return channel

    def add_member(self, username: str, *, permissions: int = p.MEMBER_PERMISSIONS) -> dict[str, Any]:
        """Add a human member holding ``permissions`` (through a role of their own); return the member payload.

        The payload's ``permissions`` (a string, as in interactions) is what
        Discord would compute in any channel of the guild: @everyone's
        permissions plus the role's (channels have no overwrites here).
        Members added before the bot connects are part of GUILD_CREATE.
        """
        user_payload = p.user(p.snowflake(), username)
        role = p.role(p.snowflake(), f"{username}-role", permissions, position=len(self.guild["roles"]))
        self.guild["roles"].append(role)
        everyone = int(self.guild["roles"][0]["permissions"])
        member_payload = p.member(user_payload, [role["id"]], permissions=everyone | permissions)
        self.guild["members"].append(member_payload)
        self.guild["member_count"] = len(self.guild["members"])
        return member_payload

    def add_unannounced_thread(self, parent: dict[str, Any], name: str) -> dict[str, Any]:
        """A thread of ``parent`` that clients never heard of (no THREAD_CREATE; e.g. archived before they started).

        Messages can be posted in it (:meth:`send_message` with ``channel=``);
        a client learns its parent only from an interaction's ``channel``.
        """
        thread = p.thread_channel(p.snowflake(), self.guild_id, parent["id"], name, owner_id=self.human["id"])
        self.channels[thread["id"]] = thread
        return thread

    def dm_channel_of(self, user_id: str) -> dict[str, Any] | None:
        """The DM channel the bot opened with ``user_id``, if any."""
        return self.dm_channels.get(user_id)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH event to every connected session (MESSAGE_CREATE honours intents).

        A sharded session (IDENTIFY with ``shard``) only gets the events of its
        guilds, and direct messages only on shard 0.
        """
        guild_id = data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else data.get("guild_id")
        for session in list(self._sessions.values()):
            if not session.receives(guild_id):
                continue
            body = data
            if event == "MESSAGE_CREATE":
                body = self._apply_message_intents(session.intents, data)
                if body is None:
                    continue
            await session.send(OP_DISPATCH, body, event)

    async def send_message(
        self,
        *,
        attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
        flags: int = 0,
        content: str = "",
        dm: bool = False,
        author: dict[str, Any] | None = None,
        channel: dict[str, Any] | None = None,
        member: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Post a message from a human (default) into a guild channel, or a DM, and dispatch it.

        ``flags=8192`` marks a voice message; ``channel`` defaults to the
        "general" channel; ``member`` (a member payload from :meth:`add_member`)
        is the author instead of the default human.  Returns the message payload.
        """
        if member is not None:
            author = member["user"]
        author = author or self.human
        member = member or self.human_member
        msg = p.message(
            p.snowflake(),
            self.dm_channel["id"] if dm else (channel or self.channel)["id"],
            author,
            guild_id=None if dm else (channel or self.channel).get("guild_id", self.guild_id),
            member_payload=None if dm else member,
            content=content,
            attachments=list(attachments),
            flags=flags,
        )
        self.messages[msg["id"]] = msg
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def invoke_slash(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        resolved: dict[str, Any] | None = None,
        *,
        invoker: dict[str, Any] | None = None,
        channel: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for the registered slash command ``name``; return the interaction.

        ``options`` as built by :func:`payloads.option` / :func:`payloads.subcommand`;
        ``invoker`` is a member payload (default: the human, with ordinary
        member permissions); ``channel`` defaults to "general".
        """
        interaction = p.slash_interaction(
            application_id=self.application_id,
            command=self.command(name, type=1),
            guild_id=self.guild_id,
            channel=channel or self.channel,
            invoker=invoker or self.human_member,
            options=options or [],
            resolved=resolved or {},
        )
        return await self._dispatch_interaction(interaction)

    async def invoke_component(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        invoker: dict[str, Any] | None = None,
        component_type: int = 2,
    ) -> dict[str, Any]:
        """Dispatch a click on component ``custom_id`` of ``message`` (a message the bot sent); return it.

        Raises
        ------
        KeyError
            If ``message`` has no component with that ``custom_id``.
        """
        current = self.messages.get(message["id"], message)
        ids = [c.get("custom_id") for row in current.get("components", []) for c in row.get("components", [])]
        if custom_id not in ids:
            raise KeyError(f"message {message['id']} has no component {custom_id!r}; it has {ids}")
        channel = self.channels.get(current["channel_id"]) or self.dm_channel
        interaction = p.component_interaction(
            application_id=self.application_id,
            guild_id=self.guild_id if current["channel_id"] in self.channels else None,
            channel=channel,
            invoker=invoker or self.human_member,
            message=current,
            custom_id=custom_id,
            component_type=component_type,
        )
        return await self._dispatch_interaction(interaction)

    def original_message(self, interaction: dict[str, Any]) -> dict[str, Any] | None:
        """The message that answers ``interaction`` (its ``@original``), as it is now."""
        state = self._interactions.get(interaction["token"])
        return state.original if state is not None else None

    async def invoke_slash_with_attachment(self, name: str, option: str, attachment: dict[str, Any]) -> dict[str, Any]:
        """Dispatch ``/name option:<attachment>``; return the interaction."""
        return await self.invoke_slash(
            name,
            [{"name": option, "type": 11, "value": attachment["id"]}],
            {"attachments": {attachment["id"]: attachment}},
        )

    async def invoke_message_command(self, name: str, target: dict[str, Any]) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for the message context-menu command ``name`` on ``target``."""
        interaction = p.message_command_interaction(
            application_id=self.application_id,
            command=self.command(name, type=3),
            guild_id=self.guild_id,
            channel=self.channel,
            invoker=self.human_member,
            target=target,
        )
        return await self._dispatch_interaction(interaction)

    async def invoke_message_command_by(
        self, name: str, target: dict[str, Any], *, invoker: dict[str, Any], channel: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Like :meth:`invoke_message_command`, used by ``invoker`` (a member payload) in ``channel``.

        ``channel`` defaults to the target message's channel.
        """
        interaction = p.message_command_interaction(
            application_id=self.application_id,
            command=self.command(name, type=3),
            guild_id=self.guild_id,
            channel=channel or self.channels.get(target["channel_id"], self.channel),
            invoker=invoker,
            target=target,
        )
        return await self._dispatch_interaction(interaction)

    async def add_guild(
        self, name: str, *, system_channel: bool = False, overwrites: list[dict[str, Any]] | None = None,
        guild_id: str | None = None,
    ) -> dict[str, Any]:
        """Add another guild with the bot, an @everyone role and one text channel (GUILD_CREATE when connected).

        Its channel is ``guild["channels"][0]``; add members with :meth:`add_guild_member`.
        ``system_channel``: that channel is the server's system channel (where a joining bot
        may greet); ``overwrites`` (:func:`payloads.overwrite`) apply to that channel.
        ``guild_id`` chooses its id (e.g. to place it on a shard); default a fresh snowflake.
        """
        guild_id = guild_id or p.snowflake()
        everyone = p.role(guild_id, "@everyone", p.MEMBER_PERMISSIONS)
        channel = p.guild_channel(p.snowflake(), guild_id, "general", overwrites=overwrites)
        data = p.guild(guild_id, name, owner_id=self.human["id"], roles=[everyone], channels=[channel],
                       members=[self.bot_member],
                       system_channel_id=channel["id"] if system_channel else None)  # fmt: skip
        self.other_guilds[guild_id] = data
        self.channels[channel["id"]] = channel
        # A server the bot just joined: Discord's GUILD_CREATE then has no ``unavailable`` field
        # (``false`` marks a known server coming back after an outage: discord.py's on_guild_available).
        await self.dispatch("GUILD_CREATE", {k: v for k, v in data.items() if k != "unavailable"})
        return data

    async def add_guild_member(
        self, guild: dict[str, Any], username: str, *, permissions: int = p.MEMBER_PERMISSIONS
    ) -> dict[str, Any]:
        """Add a member with a role of their own holding ``permissions`` to ``guild`` (any guild's payload).

        Unlike :meth:`add_member`, connected clients learn the role at once
        (GUILD_ROLE_CREATE), so members may be added after the bot connected.
        The payload's ``permissions`` are @everyone's plus the role's.
        """
        user_payload = p.user(p.snowflake(), username)
        role = p.role(p.snowflake(), f"{username}-role", permissions, position=len(guild["roles"]))
        guild["roles"].append(role)
        everyone = int(guild["roles"][0]["permissions"])
        member_payload = p.member(user_payload, [role["id"]], permissions=everyone | permissions)
        guild["members"].append(member_payload)
        await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": guild["id"], "role": role})
        return member_payload

    async def add_channel(
        self,
        name: str,
        *,
        type: int = 0,
        overwrites: list[dict[str, Any]] | None = None,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a channel of any type (with permission overwrites) to :attr:`guild`; return its payload."""
        channel = p.guild_channel(p.snowflake(), self.guild_id, name, type=type, position=len(self.channels),
                                  overwrites=overwrites, parent_id=parent_id)  # fmt: skip
        self.channels[channel["id"]] = channel
        self.guild["channels"].append(channel)
        await self.dispatch("CHANNEL_CREATE", channel)
        return channel

    def command_in(self, name: str, guild_id: str | None, *, type: int = 1) -> dict[str, Any]:
        """The command ``name`` registered in ``guild_id`` (``None``: globally).

        Raises
        ------
        KeyError
            If it is not registered in that scope.
        """
        for cmd in self.commands.get(guild_id, []):
            if cmd["name"] == name and cmd.get("type", 1) == type:
                return cmd
        raise KeyError(f"command {name!r} is not registered in scope {guild_id}")

    async def invoke_command_in(
        self,
        command: dict[str, Any],
        *,
        guild_id: str,
        channel: dict[str, Any],
        invoker: dict[str, Any],
        options: list[dict[str, Any]] | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for the registered slash ``command``, used in any guild and channel."""
        interaction = p.slash_interaction(application_id=self.application_id, command=command, guild_id=guild_id,
                                          channel=channel, invoker=invoker, options=options or [],
                                          resolved=resolved or {})  # fmt: skip
        return await self._dispatch_interaction(interaction)

    def fail_next(
        self, method: str, path_regex: str, *, status: int = 400, code: int = 50035, message: str = ""
    ) -> None:
        """Answer the next matching request with a Discord error (e.g. 400, code 50035 Invalid Form Body).

        Prefer 4xx: discord.py retries 5xx answers with back-off (seconds).
        """
        error = _error(status, code, message or f"{status}: injected failure")
        self._failures.append((method.upper(), re.compile(path_regex), error))

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket with a resumable close code (the client should RESUME)."""
        for session in self._sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=code)

    # ------------------------------------------------------------- internals
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _dispatch_interaction(self, interaction: dict[str, Any]) -> dict[str, Any]:
        self._interactions[interaction["token"]] = _Interaction(interaction)
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def _apply_message_intents(self, intents: int, msg: dict[str, Any]) -> dict[str, Any] | None:
        in_guild = "guild_id" in msg
        if not intents & (INTENT_GUILD_MESSAGES if in_guild else INTENT_DIRECT_MESSAGES):
            return None
        mentioned = any(u["id"] == self.bot_user["id"] for u in msg.get("mentions", []))
        if in_guild and not intents & INTENT_MESSAGE_CONTENT and not mentioned:
            # Without the privileged intent Discord blanks these fields.
            return {**msg, "content": "", "attachments": [], "embeds": [], "components": []}
        return msg

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        path = request.path
        is_api = path.startswith(API_PREFIX + "/")
        rel = path[len(API_PREFIX) :] if is_api else path
        body: Any = None
        files: list[str] = []
        uploads: list[Upload] = []
        if request.content_type == "application/json" and request.can_read_body:
            body = await request.json()
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    name = part.filename or part.name or ""  # type: ignore[union-attr]
                    data = await part.read()  # type: ignore[union-attr]
                    headers = part.headers  # type: ignore[union-attr]
                    content_type = headers.get("Content-Type", "application/octet-stream")
                    files.append(name)
                    uploads.append(Upload(part.name or "", name, content_type, bytes(data)))  # type: ignore[union-attr]
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        record = RecordedRequest(
            request.method, rel, dict(request.query), body, authorized, len(self.requests), files, uploads
        )
        self.requests.append(record)
        request[_RECORD] = record
        needs_auth = is_api and not rel.startswith(("/webhooks/", "/interactions/"))
        failure = next((f for f in self._failures if f[0] == record.method and f[1].search(rel)), None)
        if needs_auth and not authorized:
            response: web.StreamResponse = _error(401, 0, "401: Unauthorized")
        elif failure is not None:
            self._failures.remove(failure)
            response = failure[2]
        else:
            response = await handler(request)
        await self._notify()
        return response

    # ---------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        hello = {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        await ws.send_str(json.dumps(hello))
        session: _GatewaySession | None = None
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            op, d = msg.get("op"), msg.get("d")
            if op == OP_HEARTBEAT:
                await ws.send_str(json.dumps({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None}))
            elif op == OP_IDENTIFY:
                if d.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self.identifies.append({k: v for k, v in d.items() if k != "token"})
                shard = d.get("shard")
                session = _GatewaySession(secrets.token_hex(16), int(d.get("intents", 0)),
                                          (int(shard[0]), int(shard[1])) if shard else None)  # fmt: skip
                session.ws = ws
                self._sessions[session.session_id] = session
                await session.send(OP_DISPATCH, self._ready_payload(session), "READY")
                for guild in (self.guild, *self.other_guilds.values()):
                    if session.receives(guild["id"]):
                        await session.send(OP_DISPATCH, guild, "GUILD_CREATE")
                await self._notify()
            elif op == OP_RESUME:
                session = self._sessions.get(d.get("session_id", "")) if d.get("token") == self.token else None
                if session is None:
                    await ws.send_str(json.dumps({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None}))
                    continue
                session.ws = ws
                await session.send(OP_DISPATCH, {}, "RESUMED")
                await self._notify()
            # Other opcodes (presence, request members, voice state) are accepted and ignored.
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    def _ready_payload(self, session: _GatewaySession) -> dict[str, Any]:
        shard = {} if session.shard is None else {"shard": list(session.shard)}
        return {
            **shard,
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False},
            "guilds": [{"id": g, "unavailable": True} for g in (self.guild_id, *self.other_guilds) if session.receives(g)],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.application_id, "flags": 1 << 19},  # MESSAGE_CONTENT_LIMITED
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
        }

    # ------------------------------------------------------------------- REST
    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limit})

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json({**self.bot_user, "verified": True, "mfa_enabled": False})

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": self.bot_user["username"],
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.human,
                "verify_key": "0" * 64,
                "flags": 1 << 19,
                "bot": self.bot_user,
                "summary": "",
                "team": None,
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        if request.match_info["app_id"] != self.application_id:
            return _error(404, 10002, "Unknown Application")
        guild_id = request.match_info.get("guild_id")
        body = request[_RECORD].json
        problems = [problem for cmd in body or [] for problem in _command_problems(cmd)]
        if not isinstance(body, list) or problems:
            return _error(400, 50035, "Invalid Form Body: " + "; ".join(problems))
        registered = []
        for cmd in body:
            full = {
                "id": p.snowflake(),
                "application_id": self.application_id,
                "version": p.snowflake(),
                "type": 1,
                "description": "",
                "dm_permission": True,
                "default_member_permissions": None,
                "nsfw": False,
                **cmd,
            }
            if guild_id is not None:
                full["guild_id"] = guild_id
            registered.append(full)
        self.commands[guild_id] = registered
        return _json(registered)

    def _store_message(
        self, channel_id: str, body: dict[str, Any], *, webhook: bool, uploads: list[Upload] | None = None
    ) -> dict[str, Any]:
        msg = p.message(
            p.snowflake(),
            channel_id,
            self.bot_user,
            guild_id=self.channels[channel_id].get("guild_id", self.guild_id) if channel_id in self.channels else None,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            flags=int(body.get("flags") or 0),
            message_reference=body.get("message_reference"),
        )
        msg["components"] = body.get("components") or []
        if uploads:
            msg["attachments"] = self._uploaded_attachments(uploads)
        if webhook:
            msg["webhook_id"] = self.application_id
            msg["application_id"] = self.application_id
        self.messages[msg["id"]] = msg
        return msg

    async def _post_message(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        dm_ids = {c["id"] for c in self.dm_channels.values()}
        if channel_id not in self.channels and channel_id not in dm_ids:
            return _error(404, 10003, "Unknown Channel")
        body = request[_RECORD].json or {}
        if not (body.get("content") or body.get("embeds") or request[_RECORD].files):
            return _error(400, 50006, "Cannot send an empty message")
        ref = body.get("message_reference")
        if ref is not None and str(ref.get("message_id")) not in self.messages and ref.get("fail_if_not_exists", True):
            return _error(400, 50035, "Invalid Form Body: Unknown message")
        return _json(self._store_message(channel_id, body, webhook=False, uploads=request[_RECORD].uploads))

    async def _post_typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _post_dm_channel(self, request: web.Request) -> web.Response:
        recipient_id = str((request[_RECORD].json or {}).get("recipient_id") or self.human["id"])
        channel = self.dm_channels.get(recipient_id)
        if channel is None:
            members = {m["user"]["id"]: m["user"] for m in self.guild["members"]}
            if recipient_id not in members:
                return _error(400, 50033, "Invalid Recipient(s)")
            channel = self.dm_channels[recipient_id] = p.dm_channel(members[recipient_id])
        return _json(channel)

    def _uploaded_attachments(self, uploads: list[Upload]) -> list[dict[str, Any]]:
        """Attachment objects for uploaded files (served back at ``/attachments/...``)."""
        out = []
        for upload in uploads:
            attachment_id = p.snowflake()
            self._attachments[attachment_id] = (upload.data, upload.content_type)
            url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{upload.filename}"
            out.append(
                p.attachment(attachment_id, upload.filename, len(upload.data), url, content_type=upload.content_type)
            )
        return out

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        state = self._interactions.get(token)
        if state is None or state.payload["id"] != request.match_info["interaction_id"]:
            return _error(404, 10062, "Unknown interaction")
        if state.callback_type is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = request[_RECORD].json or {}
        state.callback_type = int(body.get("type", 0))
        data = body.get("data") or {}
        result: dict[str, Any] = {
            "interaction": {
                "id": state.payload["id"],
                "type": state.payload["type"],
                "response_message_loading": state.callback_type == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & 64),
            }
        }
        uploads = request[_RECORD].uploads
        if state.callback_type in (4, 5):
            state.original = self._store_message(state.payload["channel_id"], data, webhook=True, uploads=uploads)
            result["interaction"]["response_message_id"] = state.original["id"]
            result["resource"] = {"type": state.callback_type, "message": state.original}
        elif state.callback_type in (6, 7):  # (deferred) update of the message a component belongs to
            if state.payload["type"] != 3:
                return _error(400, 40004, "Interaction callback type only valid for component interactions")
            target = self.messages.get(state.payload["message"]["id"], state.payload["message"])
            if state.callback_type == 7:
                self._edit(target, data, uploads)
            state.original = target
            result["interaction"]["response_message_id"] = target["id"]
            if state.callback_type == 7:
                result["resource"] = {"type": 7, "message": target}
        return _json(result)

    def _edit(self, msg: dict[str, Any], body: dict[str, Any], uploads: list[Upload]) -> None:
        """Apply a message edit (PATCH or UPDATE_MESSAGE body) to a stored message, in place."""
        for key in ("content", "embeds", "flags", "components"):
            if key in body:
                empty: Any = [] if key in ("embeds", "components") else ("" if key == "content" else 0)
                msg[key] = body[key] if body[key] is not None else empty
        if "attachments" in body or uploads:
            kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in msg.get("attachments", []) if str(a["id"]) in kept_ids]
            msg["attachments"] = kept + self._uploaded_attachments(uploads)
        msg["edited_timestamp"] = msg["timestamp"]

    async def _original(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if request.match_info["app_id"] != self.application_id or state is None:
            return _error(404, 10015, "Unknown Webhook")
        if state.original is None:
            return _error(404, 10008, "Unknown Message")
        if request.method == "DELETE":
            self.messages.pop(state.original["id"], None)
            state.original = None
            return web.Response(status=204)
        if request.method == "PATCH":
            self._edit(state.original, request[_RECORD].json or {}, request[_RECORD].uploads)
        return _json(state.original)

    async def _followup(self, request: web.Request) -> web.Response:
        state = self._interactions.get(request.match_info["token"])
        if request.match_info["app_id"] != self.application_id or state is None:
            return _error(404, 10015, "Unknown Webhook")
        if state.callback_type is None:
            return _error(404, 10015, "Unknown Webhook")  # Discord: respond before following up
        msg = self._store_message(
            state.payload["channel_id"], request[_RECORD].json or {}, webhook=True, uploads=request[_RECORD].uploads
        )
        if request.query.get("wait") in ("true", "1", "True"):
            return _json(msg)
        return web.Response(status=204)

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        found = self._attachments.get(request.match_info["attachment_id"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        if self.cdn_gate is not None or request.match_info["attachment_id"] in self._cdn_modes:
            return await self._crafted_attachment(request)
        body, content_type = found
        return web.Response(body=body, content_type=content_type)

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, 0, "404: Not Found")

    # --------------------------------------------------- crafted CDN downloads
    def _init_cdn_crafting(self) -> None:
        self._cdn_modes: dict[str, str] = {}
        #: While set to an unset event, every download waits for it before sending a byte.
        self.cdn_gate: asyncio.Event | None = None
        #: Downloads being served now, and the most at once since :meth:`hold_downloads`.
        self.cdn_active = 0
        self.cdn_peak_active = 0
        #: Body bytes the CDN managed to hand to the socket, per crafted attachment id.
        self.cdn_bytes_sent: dict[str, int] = {}

    def craft_download(self, attachment: dict[str, Any], mode: str) -> None:
        """Make downloads of ``attachment`` (from :meth:`add_attachment`) misbehave.

        ``mode``: ``"chunked"`` -- no ``Content-Length``, chunked transfer
        encoding (a client cannot know the size before reading);
        ``"exact"`` -- an honest ``Content-Length`` of the whole body (which
        may exceed the ``size`` declared in the attachment object);
        ``"short"`` -- a ``Content-Length`` twice the body's, then the
        connection is closed after the body; ``"stall"`` -- no answer at all
        until the client gives up; ``"error"`` -- HTTP 500.
        The body is sent in 64 KiB writes; :attr:`cdn_bytes_sent` tells how
        much got out before the client hung up.
        """
        if mode not in ("chunked", "exact", "short", "stall", "error"):
            raise ValueError(f"unknown download mode {mode!r}")
        self._cdn_modes[attachment["id"]] = mode

    def hold_downloads(self) -> asyncio.Event:
        """Stall every download until the returned event is set (resets :attr:`cdn_peak_active`)."""
        self.cdn_gate = asyncio.Event()
        self.cdn_peak_active = self.cdn_active
        return self.cdn_gate

    def release_downloads(self) -> None:
        """Let held downloads go on and stop holding new ones."""
        gate, self.cdn_gate = self.cdn_gate, None
        if gate is not None:
            gate.set()

    async def _crafted_attachment(self, request: web.Request) -> web.StreamResponse:
        attachment_id = request.match_info["attachment_id"]
        body, content_type = self._attachments[attachment_id]
        mode = self._cdn_modes.get(attachment_id, "exact")
        self.cdn_active += 1
        self.cdn_peak_active = max(self.cdn_peak_active, self.cdn_active)
        await self._notify()
        try:
            if self.cdn_gate is not None:
                await self.cdn_gate.wait()
            while mode == "stall" and request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.05)  # no answer until the client hangs up
            if mode == "stall":
                return web.Response(status=504)  # nobody is listening any more
            if mode == "error":
                return web.Response(status=500, text="500: Internal Server Error")
            response = web.StreamResponse(headers={"Content-Type": content_type})
            if mode == "chunked":
                response.enable_chunked_encoding()
            else:
                response.content_length = len(body) * (2 if mode == "short" else 1)
            await response.prepare(request)
            sent = self.cdn_bytes_sent[attachment_id] = 0
            try:
                for start in range(0, len(body), 64 * 1024):
                    await response.write(body[start : start + 64 * 1024])
                    sent += len(body[start : start + 64 * 1024])
                    self.cdn_bytes_sent[attachment_id] = sent
                if mode == "short" and request.transport is not None:
                    request.transport.close()  # flushes what was written; half the announced body never comes
                    return response
                await response.write_eof()
            except ConnectionError:  # the client hung up (e.g. it stopped at its byte cap)
                pass
            return response
        finally:
            self.cdn_active -= 1
            await self._notify()


def _json(data: Any, *, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: discord.py's json_or_text compares the header verbatim.
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


_CHAT_NAME = re.compile(r"^[-_\w]{1,32}$")


def _command_problems(cmd: dict[str, Any]) -> list[str]:
    """The checks Discord applies to a command in a bulk overwrite (the subset that matters here)."""
    name, kind = cmd.get("name", ""), cmd.get("type", 1)
    problems = []
    if kind == 1:
        if not _CHAT_NAME.match(name) or name != name.lower():
            problems.append(f"bad chat-input name {name!r}")
        if not 1 <= len(cmd.get("description", "")) <= 100:
            problems.append(f"{name}: description must be 1-100 characters")
        for opt in cmd.get("options", []):
            if not _CHAT_NAME.match(opt.get("name", "")) or not 1 <= len(opt.get("description", "")) <= 100:
                problems.append(f"{name}: bad option {opt.get('name')!r}")
    elif kind in (2, 3):
        if not 1 <= len(name) <= 32 or cmd.get("description"):
            problems.append(f"bad context-menu command {name!r}")
    else:
        problems.append(f"unknown command type {kind}")
    return problems
