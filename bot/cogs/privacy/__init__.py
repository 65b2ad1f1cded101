"""Privacy cog package: ``await bot.load_extension("bot.cogs.privacy")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import PrivacyCog

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["PrivacyCog", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`PrivacyCog` to ``bot``."""
    await bot.add_cog(PrivacyCog(bot))
