"""Logging for the bot process: one stderr handler that never prints a secret."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

__all__ = ["RedactingFormatter", "configure_logging"]

_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
REDACTED = "[REDACTED]"


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces each secret with ``[REDACTED]`` in the final text.

    It works on the fully formatted line (message, arguments, exception text),
    so a secret cannot slip through a ``%s`` argument or a traceback.

    Parameters
    ----------
    secrets : iterable of str
        Strings never to print; empty strings are ignored.
    fmt : str
        ``logging`` format string.
    """

    def __init__(self, secrets: Iterable[str], fmt: str = _FORMAT) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and redact every secret from the result."""
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def configure_logging(level: int | str, *, secrets: Iterable[str] = ()) -> logging.Handler:
    """Send all logs at ``level`` and above to stderr through a :class:`RedactingFormatter`.

    Replaces the root logger's handlers; keeps aiohttp's per-request access log
    at WARNING.

    Returns
    -------
    logging.Handler
        The installed handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
