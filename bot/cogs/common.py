"""Helpers shared by the cogs: user-facing error text, permission checks, the store.

Permission checks run on the bot's side of every interaction, from
``interaction.permissions`` -- the member's permissions in the channel, as
Discord computes them (roles and channel overwrites) and sends them in the
interaction payload. ``default_member_permissions`` only hides a command in
the client; a server's admins can change who sees it, so it is never the
only guard.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.storage import StoreError, StoreUnavailableError
from ser_engine.errors import AudioError, ModelError, SERError, ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot
    from bot.storage import Store

__all__ = [
    "UserFacingError",
    "MissingModeratorPermissions",
    "GuildOnly",
    "user_message_for",
    "has_any_permission",
    "require_any_permission",
    "store_of",
    "correlation_id",
]

log = logging.getLogger(__name__)


def correlation_id() -> str:
    """A short random id (8 hex digits) that ties a user's apology to the logged traceback."""
    return secrets.token_hex(4)


class UserFacingError(Exception):
    """A refusal whose message may be shown to the user as it is (like ``SERError.user_message``).

    Parameters
    ----------
    message : str
        Short text for the user.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message


class MissingModeratorPermissions(app_commands.CheckFailure):
    """The member lacks every permission that would allow the command.

    Parameters
    ----------
    message : str
        Shown to the member, ephemerally.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class GuildOnly(app_commands.CheckFailure):
    """A server command was used in a direct message."""

    def __init__(self) -> None:
        super().__init__("This command only works in a server.")


def has_any_permission(interaction: discord.Interaction, *names: str) -> bool:
    """Whether the member who interacted holds at least one of the permissions ``names``.

    Uses ``interaction.permissions`` (the member's resolved permissions in the
    channel, sent by Discord with the interaction); Administrator implies all.

    Parameters
    ----------
    interaction : discord.Interaction
        A guild interaction.
    *names : str
        :class:`discord.Permissions` flag names, e.g. ``"manage_messages"``.

    Returns
    -------
    bool
        ``False`` outside a guild.
    """
    if interaction.guild_id is None:
        return False
    perms = interaction.permissions
    return perms.administrator or any(getattr(perms, name) for name in names)


def require_any_permission(interaction: discord.Interaction, *names: str) -> None:
    """Raise unless the member holds one of ``names`` in a guild.

    Raises
    ------
    GuildOnly
        In a direct message.
    MissingModeratorPermissions
        When the member holds none of them (the message names them).
    """
    if interaction.guild_id is None:
        raise GuildOnly()
    if not has_any_permission(interaction, *names):
        shown = " or ".join(f"**{_permission_name(n)}**" for n in names)
        raise MissingModeratorPermissions(f"You need the {shown} permission to use this command.")


def _permission_name(flag: str) -> str:
    return {"manage_guild": "Manage Server"}.get(flag, flag.replace("_", " ").title())


def store_of(bot: SERBot) -> Store:
    """The bot's store.

    Raises
    ------
    bot.storage.StoreUnavailableError
        When the bot has no store (start-up not finished, or shutting down).
    """
    if bot.store is None:
        raise StoreUnavailableError("the bot has no store")
    return bot.store


def user_message_for(error: BaseException, *, where: str) -> str:
    """The short message to show a user for ``error``, logging it as it deserves.

    Refusals (engine errors, bot refusals, storage outages) show their own
    ``user_message``. Anything else is logged with its traceback under a
    fresh correlation id, and the user gets an apology quoting that id, never
    the exception text.

    Parameters
    ----------
    error : BaseException
        What went wrong.
    where : str
        Context for the log line (e.g. ``"/emotion"``).

    Returns
    -------
    str
        At most a few sentences, without tracebacks or internal details.
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
    if isinstance(error, StoreUnavailableError):
        log.warning("%s: %s", where, error.message)
        return error.user_message
    if isinstance(error, StoreError):
        cid = correlation_id()
        log.error("%s: storage error [%s]", where, cid, exc_info=error)
        return f"{error.user_message} (error id `{cid}`)"
    cid = correlation_id()
    log.error("%s: unexpected error [%s]", where, cid, exc_info=error)
    return f"Sorry, something went wrong on my side. (error id `{cid}`)"
