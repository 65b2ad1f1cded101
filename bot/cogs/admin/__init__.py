"""Admin cog package (model life cycle): ``await bot.load_extension("bot.cogs.admin")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import AdminCog, operator_guild
from .settings import LifecycleSettings

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["AdminCog", "LifecycleSettings", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`AdminCog` to ``bot`` (``/retrain`` in the admin server, if set)."""
    await bot.add_cog(AdminCog(bot), guild=operator_guild(bot.settings))
