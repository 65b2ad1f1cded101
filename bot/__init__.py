"""Discord bot that detects the emotion in voice notes with :mod:`ser_engine`.

Run it with ``ser-bot`` or ``python -m bot``; configuration comes from the
environment and ``.env`` (:class:`bot.config.Settings`, ``.env.example``).
Importing this package stays light: discord.py and the engine load on use.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
