"""JSON payload builders shaped like Discord API v10 objects.

Only the fields that discord.py 2.x reads (or that a test asserts on) are
filled in.  Shapes follow the Discord developer documentation
(https://discord.com/developers/docs/resources/message,
.../interactions/receiving-and-responding, .../topics/gateway-events) and
the TypedDicts in ``discord/types/*.py``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import itertools
from typing import Any

__all__ = [
    "snowflake",
    "user",
    "role",
    "text_channel",
    "member",
    "guild",
    "attachment",
    "message",
    "slash_interaction",
    "message_command_interaction",
    "component_interaction",
    "option",
    "subcommand",
    "resolved_channel",
    "resolved_member",
    "dm_channel",
    "thread_channel",
    "guild_channel",
    "overwrite",
]

#: Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
MANAGE_MESSAGES = 1 << 13
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
#: What a bot invited with the README's permission integer holds.
BOT_PERMISSIONS = (
    VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | SEND_MESSAGES_IN_THREADS
)
#: What an ordinary member holds in the fake guild.
MEMBER_PERMISSIONS = BOT_PERMISSIONS | ATTACH_FILES | USE_APPLICATION_COMMANDS

_EPOCH_MS = 1420070400000  # Discord epoch, 2015-01-01T00:00:00Z
_counter = itertools.count(1)


def snowflake() -> str:
    """Return a fresh, increasing snowflake id (as Discord sends it: a string)."""
    now_ms = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
    return str(((now_ms - _EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF))


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def user(user_id: str, username: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object."""
    return {
        "id": user_id,
        "username": username,
        "global_name": username,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "flags": 0,
        "public_flags": 0,
    }


def role(role_id: str, name: str, permissions: int, *, position: int = 0) -> dict[str, Any]:
    """A role object (the @everyone role has the guild's id)."""
    return {
        "id": role_id,
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def text_channel(channel_id: str, guild_id: str, name: str, *, position: int = 0) -> dict[str, Any]:
    """A guild text channel (type 0) without permission overwrites."""
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": guild_id,
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def guild_channel(
    channel_id: str,
    guild_id: str,
    name: str,
    *,
    type: int = 0,
    position: int = 0,
    overwrites: list[dict[str, Any]] | None = None,
    parent_id: str | None = None,
) -> dict[str, Any]:
    """A guild channel of any ``type`` (0 text, 2 voice, 4 category, 5 announcement, 13 stage, 15 forum).

    ``overwrites`` as built by :func:`overwrite`; ``parent_id`` is the category.
    """
    data = text_channel(channel_id, guild_id, name, position=position)
    data.update(type=type, permission_overwrites=list(overwrites or []), parent_id=parent_id)
    if type in (2, 13):  # voice and stage channels carry these (discord.py reads them)
        data.update(bitrate=64000, user_limit=0, rtc_region=None)
    if type in (4, 2, 13, 15):
        data.pop("topic", None)
    return data


def overwrite(target_id: str, kind: int, *, allow: int = 0, deny: int = 0) -> dict[str, Any]:
    """A permission overwrite: ``kind`` 0 for a role (the guild id for @everyone), 1 for a member."""
    return {"id": target_id, "type": kind, "allow": str(allow), "deny": str(deny)}


def member(user_payload: dict[str, Any], roles: list[str], *, permissions: int | None = None) -> dict[str, Any]:
    """A guild member; interaction payloads also carry the computed ``permissions``."""
    data: dict[str, Any] = {
        "user": user_payload,
        "roles": roles,
        "joined_at": _now_iso(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
        "avatar": None,
    }
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def guild(
    guild_id: str,
    name: str,
    *,
    owner_id: str,
    roles: list[dict[str, Any]],
    channels: list[dict[str, Any]],
    members: list[dict[str, Any]],
    system_channel_id: str | None = None,
    preferred_locale: str = "en-US",
) -> dict[str, Any]:
    """A GUILD_CREATE payload (available guild with its channels, roles and members).

    ``system_channel_id``: where Discord posts system messages (``None``: the server has none).
    """
    return {
        "id": guild_id,
        "name": name,
        "icon": None,
        "owner_id": owner_id,
        "unavailable": False,
        "large": False,
        "member_count": len(members),
        "roles": roles,
        "channels": channels,
        "members": members,
        "threads": [],
        "voice_states": [],
        "presences": [],
        "emojis": [],
        "stickers": [],
        "features": [],
        "joined_at": _now_iso(),
        "preferred_locale": preferred_locale,
        "system_channel_id": system_channel_id,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "system_channel_flags": 0,
    }


def attachment(
    attachment_id: str,
    filename: str,
    size: int,
    url: str,
    *,
    content_type: str | None,
    duration_s: float | None = None,
    voice_message: bool = False,
) -> dict[str, Any]:
    """An attachment object; voice messages carry ``duration_secs`` and a base64 ``waveform``.

    Parameters
    ----------
    size : int
        Size in bytes that Discord reports (the fake may serve a different body).
    duration_s : float, optional
        Duration in seconds (voice messages only).
    """
    data: dict[str, Any] = {
        "id": attachment_id,
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
    }
    if content_type is not None:
        data["content_type"] = content_type
    if voice_message:
        data["duration_secs"] = float(duration_s if duration_s is not None else 1.0)
        # 256 one-byte samples of waveform, as the official clients send.
        data["waveform"] = base64.b64encode(bytes(range(256))).decode("ascii")
    return data


def message(
    message_id: str,
    channel_id: str,
    author: dict[str, Any],
    *,
    guild_id: str | None = None,
    member_payload: dict[str, Any] | None = None,
    content: str = "",
    attachments: list[dict[str, Any]] | None = None,
    embeds: list[dict[str, Any]] | None = None,
    flags: int = 0,
    message_reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message object (also the MESSAGE_CREATE event body when ``guild_id``/``member`` are set).

    ``flags`` 8192 is IS_VOICE_MESSAGE, 64 is EPHEMERAL.
    """
    data: dict[str, Any] = {
        "id": message_id,
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": _now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": embeds or [],
        "pinned": False,
        "type": 0 if message_reference is None else 19,  # 19: REPLY
        "flags": flags,
        "components": [],
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
    if member_payload is not None:
        data["member"] = {k: v for k, v in member_payload.items() if k != "user"}
    if message_reference is not None:
        data["message_reference"] = message_reference
    return data


def thread_channel(thread_id: str, guild_id: str, parent_id: str, name: str, *, owner_id: str) -> dict[str, Any]:
    """A public thread (type 11) of the text channel ``parent_id``."""
    return {
        "id": thread_id,
        "type": 11,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner_id,
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": _now_iso(),
            "locked": False,
        },
    }


def dm_channel(recipient: dict[str, Any]) -> dict[str, Any]:
    """A DM channel (type 1) with ``recipient``."""
    return {"id": snowflake(), "type": 1, "recipients": [recipient], "last_message_id": None}


def option(name: str, type: int, value: Any) -> dict[str, Any]:
    """A command option value: ``type`` 3 string, 4 integer, 5 boolean, 6 user, 7 channel, 10 number, 11 attachment.

    User, channel and attachment options carry the id; the object goes in ``resolved``.
    """
    return {"name": name, "type": type, "value": value}


def subcommand(name: str, options: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A subcommand (option type 1) of a slash command group, with its options."""
    return {"name": name, "type": 1, "options": options or []}


def resolved_channel(channel: dict[str, Any], permissions: int) -> dict[str, Any]:
    """A channel as ``resolved.channels`` carries it: the invoker's ``permissions`` in it, as a string."""
    data = {k: channel[k] for k in ("id", "type", "name") if k in channel}
    data["permissions"] = str(permissions)
    if channel.get("parent_id") is not None:
        data["parent_id"] = channel["parent_id"]
    return data


def resolved_member(member_payload: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` for a user option naming a guild member: its user and member (without ``user``)."""
    user_payload = member_payload["user"]
    return {
        "users": {user_payload["id"]: user_payload},
        "members": {user_payload["id"]: {k: v for k, v in member_payload.items() if k != "user"}},
    }


def _interaction(
    *,
    application_id: str,
    guild_id: str | None,
    channel: dict[str, Any],
    invoker: dict[str, Any],
    data: dict[str, Any],
    kind: int = 2,
) -> dict[str, Any]:
    """INTERACTION_CREATE body; ``invoker`` is a member payload (its ``permissions`` are the invoker's)."""
    payload: dict[str, Any] = {
        "id": snowflake(),
        "application_id": application_id,
        "type": kind,  # 2 APPLICATION_COMMAND, 3 MESSAGE_COMPONENT
        "data": data,
        "channel_id": channel["id"],
        "channel": channel,
        "token": "interaction-token-" + snowflake(),
        "version": 1,
        "locale": "en-US",
        "app_permissions": str(BOT_PERMISSIONS),
        "attachment_size_limit": 10 * 2**20,
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": invoker["user"]["id"]},
        "context": 0 if guild_id else 1,
    }
    if guild_id is not None:
        payload["guild_id"] = guild_id
        payload["guild_locale"] = "en-US"
        payload["member"] = invoker
    else:
        payload["user"] = invoker["user"]
    return payload


def slash_interaction(
    *,
    application_id: str,
    command: dict[str, Any],
    guild_id: str | None,
    channel: dict[str, Any],
    invoker: dict[str, Any],
    options: list[dict[str, Any]],
    resolved: dict[str, Any],
) -> dict[str, Any]:
    """INTERACTION_CREATE for a chat-input (slash) command.

    ``command`` is the registered command (with its ``id``); ``options`` are
    ``{"name", "type", "value"}`` dicts, attachment options (type 11) hold the
    attachment id whose object sits in ``resolved["attachments"]``.
    """
    data = {
        "id": command["id"],
        "name": command["name"],
        "type": 1,
        "options": options,
        "resolved": resolved,
    }
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    return _interaction(
        application_id=application_id, guild_id=guild_id, channel=channel, invoker=invoker, data=data
    )


def message_command_interaction(
    *,
    application_id: str,
    command: dict[str, Any],
    guild_id: str | None,
    channel: dict[str, Any],
    invoker: dict[str, Any],
    target: dict[str, Any],
) -> dict[str, Any]:
    """INTERACTION_CREATE for a message context-menu command (type 3) on ``target``."""
    data = {
        "id": command["id"],
        "name": command["name"],
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: target}},
    }
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    return _interaction(
        application_id=application_id, guild_id=guild_id, channel=channel, invoker=invoker, data=data
    )


def component_interaction(
    *,
    application_id: str,
    guild_id: str | None,
    channel: dict[str, Any],
    invoker: dict[str, Any],
    message: dict[str, Any],
    custom_id: str,
    component_type: int = 2,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a click on a message component (type 3; ``component_type`` 2 is a button)."""
    payload = _interaction(
        application_id=application_id,
        guild_id=guild_id,
        channel=channel,
        invoker=invoker,
        data={"custom_id": custom_id, "component_type": component_type},
        kind=3,
    )
    payload["message"] = message
    return payload
