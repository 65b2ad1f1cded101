"""Insights cog package: ``await bot.load_extension("bot.cogs.insights")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import InsightsCog

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["InsightsCog", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`InsightsCog` to ``bot``."""
    await bot.add_cog(InsightsCog(bot))
