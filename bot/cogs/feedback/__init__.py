"""Feedback cog package: ``await bot.load_extension("bot.cogs.feedback")``.

Buttons under every emotion answer let the speaker confirm or correct the
label (stored, with consent, as a feature vector for ``/retrain``), and every
analysis of a voice note uses and updates the speaker's running feature
statistics (speaker normalisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import FeedbackCog
from .items import FeedbackButton, FeedbackRef
from .memory import FeatureMemory

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["FeatureMemory", "FeedbackButton", "FeedbackCog", "FeedbackRef", "setup"]


async def setup(bot: SERBot) -> None:
    """Extension entry point: register the persistent buttons and add the :class:`FeedbackCog`."""
    bot.add_dynamic_items(FeedbackButton)
    await bot.add_cog(FeedbackCog(bot))
