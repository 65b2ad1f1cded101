"""Helpers shared by the cogs: user-facing error text and the store.

Permission checks live in :mod:`bot.checks` (one decorator per rule); the
command tree's error handler is :class:`bot.tree.SERCommandTree`.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from bot.storage import StoreError, StoreUnavailableError
from ser_engine.errors import AudioError, ModelError, SERError, ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot
    from bot.storage import Store

__all__ = [
    "UserFacingError",
    "user_message_for",
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
