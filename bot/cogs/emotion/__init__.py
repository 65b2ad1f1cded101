"""Emotion cog package: ``await bot.load_extension("bot.cogs.emotion")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import EmotionCog

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["EmotionCog", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`EmotionCog` to ``bot``."""
    await bot.add_cog(EmotionCog(bot))
