"""Errors raised by the storage layer.

The bot catches :class:`StoreUnavailableError` to keep answering voice notes
while the database is down (issue #4: "If the database is unreachable, voice
notes are still answered ... and nothing crashes").
"""

from __future__ import annotations

__all__ = ["StoreError", "StoreUnavailableError"]


class StoreError(Exception):
    """Base class of every error raised by :mod:`bot.storage`.

    Parameters
    ----------
    message : str
        Technical description, for logs (never shown to Discord users as is).

    Attributes
    ----------
    user_message : str
        Short text that may be shown to a Discord user.
    """

    user_message: str = "The bot's storage failed; please try again later."

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreUnavailableError(StoreError):
    """The database cannot be reached (refused, timed out, unopenable file, ...).

    Raised quickly: connection attempts are bounded by the store's
    ``connect_timeout_s`` (seconds) and statements by ``statement_timeout_s``.
    Nothing has been written when this is raised by a write method (each
    method runs in one transaction that is rolled back).
    """

    user_message = "The bot's storage is unavailable right now, so nothing was stored or looked up."
