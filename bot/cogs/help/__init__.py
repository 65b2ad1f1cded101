"""Help cog package: ``/help`` and the one greeting posted when the bot joins a server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import HelpCog

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["HelpCog", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: add the :class:`HelpCog` to ``bot``."""
    await bot.add_cog(HelpCog(bot))
