"""Settings cog package: ``await bot.load_extension("bot.cogs.settings")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import SettingsCog

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["SettingsCog", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`SettingsCog` to ``bot``."""
    await bot.add_cog(SettingsCog(bot))
