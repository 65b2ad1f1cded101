"""Logging for the bot process: one stderr handler that never prints a secret.

``LOG_FORMAT=text`` (default) writes ``time LEVEL logger: message`` lines;
``LOG_FORMAT=json`` writes one JSON object per line (:class:`JsonFormatter`),
through the standard library's formatter hook, so every library that logs
through :mod:`logging` (discord.py, aiohttp, SQLAlchemy, warnings) comes out
as JSON too, and uncaught exceptions are logged rather than printed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["RedactingFormatter", "JsonFormatter", "configure_logging", "emit_json_line", "LOG_FORMATS"]

#: Values of ``LOG_FORMAT``.
LOG_FORMATS: tuple[str, ...] = ("text", "json")
#: The error id of an apology (``bot.cogs.common.correlation_id``: 8 hex digits), as log lines quote it:
#: ``... [1a2b3c4d]`` or ``error id `1a2b3c4d```.
_ERROR_ID = re.compile(r"(?:\[|error id `)([0-9a-f]{8})(?:\]|`)")

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


class JsonFormatter(RedactingFormatter):
    """One JSON object per record, on one line, with every secret replaced by ``[REDACTED]``.

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``; ``error_id``
    when the message quotes one (the id a user was shown); ``exception`` (the
    formatted traceback, newlines escaped by JSON) when the record has one.
    Secrets are replaced in every field before encoding and again in the
    encoded line (a secret with characters JSON escapes is caught by the first).

    Parameters
    ----------
    secrets : iterable of str
        Strings never to print.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(secrets, "%(message)s")

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        """Encode ``record`` as one JSON line (no newline inside)."""
        message = self._redact(record.getMessage())
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        found = _ERROR_ID.search(message)
        if found:
            entry["error_id"] = found.group(1)
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self._redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return self._redact(json.dumps(entry, ensure_ascii=False, default=str))


def emit_json_line(message: str, *, level: str = "ERROR", logger: str = "ser-bot", stream: TextIO | None = None) -> None:
    """Write one JSON log line without the logging machinery (before it is configured).

    Used for the start-up messages of ``ser-bot`` (missing token, invalid
    setting) when ``LOG_FORMAT=json``; they never contain a secret value.
    """
    entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level, "logger": logger,
             "message": message}  # fmt: skip
    print(json.dumps(entry, ensure_ascii=False), file=stream or sys.stderr, flush=True)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("ser-bot").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("ser-bot").error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                                       exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # fmt: skip


def configure_logging(level: int | str, *, secrets: Iterable[str] = (), fmt: str = "text") -> logging.Handler:
    """Send all logs at ``level`` and above to stderr through a :class:`RedactingFormatter`.

    Replaces the root logger's handlers; keeps aiohttp's per-request access log
    at WARNING. With ``fmt="json"`` the formatter is a :class:`JsonFormatter`,
    Python warnings are routed through logging, and uncaught exceptions (main
    thread and other threads) are logged instead of printed, so every line on
    stderr is one JSON object.

    Parameters
    ----------
    level : int or str
        Logging level.
    secrets : iterable of str
        Strings never to print.
    fmt : {"text", "json"}
        ``LOG_FORMAT``.

    Returns
    -------
    logging.Handler
        The installed handler.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else RedactingFormatter(secrets))
    if fmt == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
