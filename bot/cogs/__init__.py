"""Cog packages, each with an ``async def setup(bot)`` entry point for ``bot.load_extension``."""
