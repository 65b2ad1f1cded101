"""A small fake Discord (REST + gateway) on loopback for end-to-end bot tests.

See :class:`tests.fake_discord.server.FakeDiscord`.
"""

from __future__ import annotations

from . import payloads
from .server import FakeDiscord, FakeDiscordTimeout, RecordedRequest, Upload

__all__ = ["FakeDiscord", "FakeDiscordTimeout", "RecordedRequest", "Upload", "payloads"]
