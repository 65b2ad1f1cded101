"""Admin cog package (model life cycle): ``await bot.load_extension("bot.cogs.admin")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import AdminCog
from .settings import LifecycleSettings

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["AdminCog", "LifecycleSettings", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`AdminCog` to ``bot``."""
    await bot.add_cog(AdminCog(bot))
