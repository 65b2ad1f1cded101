"""Permission checks for application commands: one decorator per rule, used by every cog.

Modelled on discord.py's :mod:`discord.app_commands.checks` and Red-DiscordBot's
``redbot.core.commands.checks``: a command states who may run it with a
decorator, e.g.::

    @app_commands.command()
    @checks.server_manager()
    async def show(self, interaction): ...

A refusal raises a :class:`Refused` subclass (an
:class:`~discord.app_commands.CheckFailure`) whose ``user_message`` the
command tree's error handler (:class:`bot.tree.SERCommandTree`) sends
ephemerally; the command body never runs, so nothing changes.

Permissions are the member's **server-wide** permissions, computed from the
guild's roles that the bot caches (:attr:`discord.Member.guild_permissions`:
the server owner and Administrator hold every permission), never the
``permissions`` field of the interaction, which Discord resolves for the one
channel the command was used in (a channel overwrite granting Manage Messages
in one channel must not open a server-wide command). ``default_member_permissions``
only hides commands in the client (a server's admins can change who sees them),
so these checks are the guard.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = [
    "Refused",
    "GuildOnly",
    "MissingServerPermissions",
    "NotOperator",
    "server_permissions",
    "is_bot_owner",
    "any_server_permission",
    "moderator",
    "server_manager",
    "operator",
    "may_use",
    "MODERATOR_PERMISSIONS",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Holding any one of these server-wide (or Administrator) makes a member a moderator (``/insights``).
MODERATOR_PERMISSIONS: tuple[str, ...] = ("manage_messages", "manage_guild")


class Refused(app_commands.CheckFailure):
    """A check refused the interaction; :attr:`user_message` is shown to the member, ephemerally.

    Parameters
    ----------
    message : str
        Short text for the member (also the log line).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_message = message


class GuildOnly(Refused):
    """A server command was used in a direct message."""

    def __init__(self) -> None:
        super().__init__("This command only works in a server.")


class MissingServerPermissions(Refused):
    """The member holds none of the server-wide permissions that would allow the command.

    Parameters
    ----------
    names : tuple of str
        :class:`discord.Permissions` flag names, any one of which would do.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        shown = " or ".join(f"**{_permission_name(n)}**" for n in names)
        super().__init__(f"You need the {shown} permission in this server to use this command.")
        self.names = names


class NotOperator(Refused):
    """The member is not one of the bot's operators (model life cycle)."""

    #: What the member reads.
    MESSAGE = (
        "Only the bot's operators can change its model: its owners, and members with Manage Server "
        "in its admin server."
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


def _permission_name(flag: str) -> str:
    return {"manage_guild": "Manage Server"}.get(flag, flag.replace("_", " ").title())


def server_permissions(interaction: discord.Interaction) -> discord.Permissions:
    """The member's server-wide permissions, from the guild's roles (no channel overwrites).

    Parameters
    ----------
    interaction : discord.Interaction
        Any interaction.

    Returns
    -------
    discord.Permissions
        :attr:`discord.Member.guild_permissions` (every permission for the
        server owner and for Administrator; timeouts remove most).
        ``Permissions.none()`` in a direct message, and when the bot does not
        know the server's roles (a server it is not in): checks then fail
        closed.
    """
    user = interaction.user
    guild = interaction.guild
    if not isinstance(user, discord.Member) or guild is None:
        return discord.Permissions.none()
    if guild.default_role is None:  # a placeholder guild: its roles (hence permissions) are unknown
        log.info("server %s is not in the cache; its roles are unknown", interaction.guild_id)
        return discord.Permissions.none()
    return user.guild_permissions


async def is_bot_owner(interaction: discord.Interaction) -> bool:
    """Whether the user is in ``SER_OWNER_IDS`` or owns the application (alone or in its team).

    The application's owner comes from :meth:`discord.ext.commands.Bot.is_owner`
    (``GET /oauth2/applications/@me`` once, then cached; team members with the
    admin or developer role count). When Discord cannot be asked, only
    ``SER_OWNER_IDS`` counts.
    """
    bot: SERBot = interaction.client  # type: ignore[assignment]
    if interaction.user.id in bot.settings.owner_ids:
        return True
    try:
        return await bot.is_owner(interaction.user)
    except discord.HTTPException as exc:
        log.warning("could not read the application's owner (%s); only SER_OWNER_IDS count", exc.status)
        return False


def _is_admin_server_manager(interaction: discord.Interaction) -> bool:
    bot: SERBot = interaction.client  # type: ignore[assignment]
    admin_guild = bot.settings.ser_admin_guild_id
    if admin_guild is None or interaction.guild_id != admin_guild:
        return False
    return server_permissions(interaction).manage_guild


def any_server_permission(*names: str) -> Callable[[T], T]:
    """Allow members holding at least one of ``names`` server-wide (Administrator implies all).

    Parameters
    ----------
    *names : str
        :class:`discord.Permissions` flag names, e.g. ``"manage_messages"``.

    Raises
    ------
    ValueError
        At decoration time, for an unknown permission name.

    Notes
    -----
    At run time the check raises :class:`GuildOnly` in a direct message and
    :class:`MissingServerPermissions` (naming the permissions) otherwise.
    """
    unknown = [n for n in names if n not in discord.Permissions.VALID_FLAGS]
    if unknown or not names:
        raise ValueError(f"unknown permission(s): {unknown}")

    def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            raise GuildOnly()
        perms = server_permissions(interaction)
        if perms.administrator or any(getattr(perms, n) for n in names):
            return True
        raise MissingServerPermissions(names)

    return app_commands.check(predicate)


def moderator() -> Callable[[T], T]:
    """Moderators: Manage Messages or Manage Server server-wide (``/insights``)."""
    return any_server_permission(*MODERATOR_PERMISSIONS)


def server_manager() -> Callable[[T], T]:
    """Members with Manage Server server-wide (``/settings``)."""
    return any_server_permission("manage_guild")


def operator() -> Callable[[T], T]:
    """The bot's operators, who own the model life cycle for every server.

    Allowed: ``SER_OWNER_IDS``; members with Manage Server in
    ``SER_ADMIN_GUILD_ID`` (when set; in that server only); the
    application's owner or team (:func:`is_bot_owner`). Manage Server in any
    other server does not count: one server's moderators must not change the
    model every server uses.

    Notes
    -----
    Raises :class:`NotOperator` at run time for everyone else.
    """

    async def predicate(interaction: discord.Interaction) -> bool:
        # Cheapest first: the Discord request behind is_owner only for members who are neither.
        if _is_admin_server_manager(interaction) or await is_bot_owner(interaction):
            return True
        if not _PROBING.get():  # /help asking is not an attempt
            log.warning("user %s (server %s) was refused an operator command", interaction.user.id,
                        interaction.guild_id)  # fmt: skip
        raise NotOperator()

    return app_commands.check(predicate)


#: True while :func:`may_use` evaluates checks for ``/help`` (no refusal is logged then).
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("ser_checks_probing", default=False)


async def may_use(command: Any, interaction: discord.Interaction) -> bool:
    """Whether the user of ``interaction`` may run ``command`` where the interaction happens (for ``/help``).

    The same rules the command itself applies, nothing run: not in a direct
    message when the command (or its group) is server-only; the command's
    ``default_permissions`` held server-wide (Administrator holds all); and
    every check of its parent groups and of the command passes (the decorators
    of this module and any other :func:`discord.app_commands.check`).

    Parameters
    ----------
    command : discord.app_commands.Command or discord.app_commands.ContextMenu
        A leaf command (a subcommand, not a group).
    interaction : discord.Interaction
        The interaction asking.

    Returns
    -------
    bool
        False when any rule refuses.
    """
    chain: list[Any] = []
    node: Any = command
    while node is not None:
        chain.append(node)
        node = getattr(node, "parent", None)
    root = chain[-1]
    if interaction.guild_id is None and getattr(root, "guild_only", False):
        return False
    needed = getattr(root, "default_permissions", None)
    if needed is not None and interaction.guild_id is not None and needed.value:
        held = server_permissions(interaction)
        if not (held.administrator or held >= needed):
            return False
    token = _PROBING.set(True)
    try:
        for item in reversed(chain):
            for check in getattr(item, "checks", []):
                try:
                    if not await discord.utils.maybe_coroutine(check, interaction):
                        return False
                except app_commands.AppCommandError:
                    return False
    finally:
        _PROBING.reset(token)
    return True
