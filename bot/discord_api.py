"""Point discord.py at a configurable Discord API endpoint.

discord.py 2.x has no constructor option for the REST base URL or the gateway
URL. It builds every REST URL, webhooks and interaction callbacks included,
from the class attribute ``discord.http.Route.BASE`` (the library's own
``discord.http._set_api_version`` sets it too), and a plain
:class:`discord.Client` connects to the class attribute
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (only
:class:`discord.AutoShardedClient` asks ``GET /gateway/bot``). Both are
process-wide, so this module sets them in one place, from configuration, at
start-up, and can put back the library defaults.
"""

from __future__ import annotations

import logging

import discord.http
import yarl
from discord.gateway import DiscordWebSocket

__all__ = ["apply_api_base_url", "apply_gateway_url", "restore_defaults"]

log = logging.getLogger(__name__)

_LIBRARY_API_BASE = discord.http.Route.BASE
_LIBRARY_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


def apply_api_base_url(base_url: str) -> None:
    """Send every discord.py REST request to ``base_url``.

    Parameters
    ----------
    base_url : str
        Base URL including the version, e.g. ``https://discord.com/api/v10``;
        a trailing slash is removed.
    """
    base_url = base_url.rstrip("/")
    if discord.http.Route.BASE != base_url:
        log.info("Discord REST API base URL: %s", base_url)
    discord.http.Route.BASE = base_url


def apply_gateway_url(url: str) -> None:
    """Connect the gateway websocket to ``url`` (the ``url`` of ``GET /gateway/bot``).

    discord.py adds the ``v``, ``encoding`` and ``compress`` query itself.
    """
    gateway = yarl.URL(url)
    if DiscordWebSocket.DEFAULT_GATEWAY != gateway:
        log.info("Discord gateway URL: %s", gateway)
    DiscordWebSocket.DEFAULT_GATEWAY = gateway


def restore_defaults() -> None:
    """Put back discord.py's own REST base and gateway URLs."""
    discord.http.Route.BASE = _LIBRARY_API_BASE
    DiscordWebSocket.DEFAULT_GATEWAY = _LIBRARY_GATEWAY
