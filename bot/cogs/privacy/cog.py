"""``/privacy``: opt out or in, see what is stored about you, delete it; and the retention sweep.

* ``/privacy optout`` -- the bot never analyses nor stores your voice notes
  again, in any server or DM (``/privacy optin`` reverses it).
* ``/privacy show`` -- what is stored about you.
* ``/privacy delete`` -- deletes every stored row about you after you confirm
  with a button that only you can press.

Every answer is ephemeral. A background task (:mod:`discord.ext.tasks`)
deletes analyses older than each server's retention, every
``RETENTION_SWEEP_MINUTES`` (first run at start-up).

The sweep also deletes the data of servers the bot is no longer in -- left
while the bot was offline, or while the database was down so that
``on_guild_remove`` could not delete. That part needs the complete list of
the bot's servers, which discord.py has only once the gateway's READY was
processed (``on_ready``: every guild of READY is in the cache, unavailable
ones included); before it, or after a disconnect until the next READY or
RESUMED, the list may be empty or partial and sweeping would delete every
server's data. So it runs at each ``on_ready`` and in each later sweep
while the list is complete, never before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.storage import DEFAULT_RETENTION_DAYS, StoreUnavailableError, UserDataSummary

from ..common import store_of, user_message_for

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["PrivacyCog", "ConfirmDeletionView", "summary_embed", "CONFIRM_ID", "CANCEL_ID"]

log = logging.getLogger(__name__)

#: ``custom_id`` of the buttons under ``/privacy delete``.
CONFIRM_ID = "ser:privacy:delete:confirm"
CANCEL_ID = "ser:privacy:delete:cancel"
#: Seconds the confirmation buttons stay usable.
CONFIRM_TIMEOUT_S = 120.0
EXPIRED = "This confirmation expired; nothing was deleted."
NOT_YOURS = "These buttons belong to someone else's `/privacy delete`."
WHAT_IS_STORED = (
    "For each voice note the bot analyses in a server: the server, channel, message and author ids, the time, "
    "the detected emotion with its confidence and the probability of every emotion, the note's duration and "
    "the model version. **Never the audio.**"
)


def _when(value: Any) -> str:
    return discord.utils.format_dt(value, "f") if value is not None else "never"


def summary_embed(summary: UserDataSummary) -> discord.Embed:
    """The ``/privacy show`` embed for one user.

    Parameters
    ----------
    summary : UserDataSummary
        From :meth:`bot.storage.Store.user_summary`.
    """
    embed = discord.Embed(title="What the bot stores about you", description=WHAT_IS_STORED, colour=0x5865F2)
    status = (
        f"Opted out since {_when(summary.opted_out_at)}: your voice notes are neither analysed nor stored."
        if summary.opted_out
        else "Not opted out: your voice notes in servers are analysed and stored (`/privacy optout` stops it)."
    )
    embed.add_field(name="Status", value=status, inline=False)
    if summary.analyses:
        by_label = ", ".join(f"{label} {n}" for label, n in summary.analyses_by_label.items())
        servers = f"{summary.guilds} server{'s' if summary.guilds != 1 else ''}"
        analyses = (
            f"**{summary.analyses}** ({by_label}) from {servers}; "
            f"oldest {_when(summary.first_analysis_at)}, newest {_when(summary.last_analysis_at)}."
        )
    else:
        analyses = "**0**"
    embed.add_field(name="Stored analyses", value=analyses[:1024], inline=False)
    other = (
        f"Feedback labels: {summary.feedback}; speaker statistics: {summary.speaker_stats}; "
        f"alert cool-down records: {summary.alert_log}"
    )
    if summary.feedback_consent is not None:
        other += f"; training consent: {'yes' if summary.feedback_consent else 'no'}"
    embed.add_field(name="Other records", value=other, inline=False)
    embed.set_footer(
        text=f"Analyses are deleted after each server's retention ({DEFAULT_RETENTION_DAYS} days unless the server "
        "changed it). /privacy delete removes everything now."
    )
    return embed


class ConfirmDeletionView(discord.ui.View):
    """Two buttons under ``/privacy delete``: delete everything, or keep it.

    Only the member who ran the command may press them
    (:meth:`interaction_check` compares user ids on every click).

    Parameters
    ----------
    bot : SERBot
        The bot (its store).
    owner_id : int
        The member whose data would be deleted.
    origin : discord.Interaction
        The ``/privacy delete`` interaction, to expire the buttons on timeout.
    """

    def __init__(self, bot: SERBot, owner_id: int, origin: discord.Interaction) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.bot = bot
        self.owner_id = owner_id
        self.origin = origin
        self.deleted: int | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Accept clicks from :attr:`owner_id` only; tell anyone else, ephemerally."""
        if interaction.user.id == self.owner_id:
            return True
        log.warning("user %s pressed the deletion buttons of user %s", interaction.user.id, self.owner_id)
        await interaction.response.send_message(NOT_YOURS, ephemeral=True)
        return False

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger, custom_id=CONFIRM_ID)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        """Delete every stored row about the owner and say how many went."""
        counts = await store_of(self.bot).delete_user_data(self.owner_id)
        self.deleted = counts.total
        self.stop()
        text = (
            f"Deleted {counts.total} stored record{'s' if counts.total != 1 else ''} about you "
            f"({counts.analyses} analyses). Nothing about your voice notes is left."
        )
        await interaction.response.edit_message(content=text, view=None)
        log.info("user data deleted on request: %d rows", counts.total)

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary, custom_id=CANCEL_ID)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        """Leave everything as it is."""
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)

    async def on_timeout(self) -> None:
        """Remove the buttons once they expire."""
        try:
            await self.origin.edit_original_response(content=EXPIRED, view=None)
        except discord.HTTPException:
            pass

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        """A short ephemeral message, never a traceback (e.g. the database is unavailable)."""
        text = user_message_for(error, where="/privacy delete button")
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report an error for the deletion button", exc_info=True)


class PrivacyCog(commands.GroupCog, name="Privacy", group_name="privacy", group_description="Your data and this bot"):
    """The ``/privacy`` command group and the retention sweep.

    Parameters
    ----------
    bot : SERBot
        The running bot; data lives in ``bot.store``.
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        super().__init__()
        # Whether bot.guilds is the complete list (see the module docstring); a cog loaded after
        # READY starts with the ready client's list.
        self._guilds_complete = bot.is_ready()
        self._sweep_lock = asyncio.Lock()

    async def cog_load(self) -> None:
        """Start the retention sweep at the configured interval."""
        self.retention_sweep.change_interval(minutes=self.bot.settings.retention_sweep_minutes)
        self.retention_sweep.start()

    async def cog_unload(self) -> None:
        """Stop the retention sweep."""
        self.retention_sweep.cancel()

    # ---------------------------------------------------------- commands
    @app_commands.command(name="optout", description="Never analyse nor store my voice notes, in any server")
    async def optout(self, interaction: discord.Interaction) -> None:
        """``/privacy optout``."""
        await store_of(self.bot).opt_out(interaction.user.id)
        await interaction.response.send_message(
            "You're opted out: I won't analyse or store your voice notes anywhere. "
            "What was stored before stays until it expires; `/privacy delete` removes it now. "
            "`/privacy optin` reverses this.",
            ephemeral=True,
        )

    @app_commands.command(name="optin", description="Analyse my voice notes again")
    async def optin(self, interaction: discord.Interaction) -> None:
        """``/privacy optin``."""
        was_out = await store_of(self.bot).opt_in(interaction.user.id)
        text = (
            "You're opted in again: your voice notes are analysed, and stored where a server uses insights."
            if was_out
            else "You weren't opted out; nothing changed."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="show", description="What the bot stores about me")
    async def show(self, interaction: discord.Interaction) -> None:
        """``/privacy show``."""
        summary = await store_of(self.bot).user_summary(interaction.user.id)
        await interaction.response.send_message(embed=summary_embed(summary), ephemeral=True)

    @app_commands.command(name="delete", description="Delete everything the bot stores about me (asks first)")
    async def delete(self, interaction: discord.Interaction) -> None:
        """``/privacy delete``: ask for confirmation with buttons only the caller may press."""
        summary = await store_of(self.bot).user_summary(interaction.user.id)
        view = ConfirmDeletionView(self.bot, interaction.user.id, interaction)
        note = " Your opt-out stays in place." if summary.opted_out else ""
        await interaction.response.send_message(
            f"Delete all {summary.total_rows} stored record{'s' if summary.total_rows != 1 else ''} about you "
            f"({summary.analyses} analyses of voice notes, in every server)? This cannot be undone.{note}",
            view=view,
            ephemeral=True,
        )

    # ------------------------------------------------------ retention sweep
    @tasks.loop(minutes=60)
    async def retention_sweep(self) -> None:
        """Delete analyses older than each server's retention (and expired alert records).

        Then, when the guild list is complete, the data of servers the bot left
        (:meth:`sweep_departed_guilds`).
        """
        store = self.bot.store
        if store is None:
            return
        async with self._sweep_lock:
            try:
                counts = await store.purge_expired()
            except StoreUnavailableError as exc:
                log.warning("retention sweep skipped: %s", exc.message)
                return
            except Exception:  # a failed sweep must not stop the loop; the next one retries
                log.exception("retention sweep failed")
            else:
                log.debug("retention sweep: %s", counts)
        await self.sweep_departed_guilds()

    async def sweep_departed_guilds(self) -> int | None:
        """Delete the stored data of every server the bot is no longer in; only with a complete guild list.

        Returns
        -------
        int or None
            Rows deleted; ``None`` when skipped (guild list incomplete: before
            READY or during a reconnect; no store; database unavailable).
        """
        store = self.bot.store
        if store is None or not (self._guilds_complete and self.bot.is_ready()):
            return None
        present = [g.id for g in self.bot.guilds]  # unavailable guilds are listed too
        async with self._sweep_lock:
            try:
                guilds, rows = await store.delete_departed_guilds(present)
            except StoreUnavailableError as exc:
                log.warning("sweep of departed servers skipped: %s", exc.message)
                return None
            except Exception:  # the next sweep retries
                log.exception("sweep of departed servers failed")
                return None
        if guilds:
            log.info("retention sweep: deleted %d stored rows of %d server(s) the bot is no longer in", rows, guilds)
        return rows

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """The guild cache is complete (READY processed): sweep the data of departed servers now."""
        self._guilds_complete = True
        await self.sweep_departed_guilds()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        """A resumed session keeps its guild cache: the list is complete again."""
        self._guilds_complete = True

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        """Until READY or RESUMED the guild cache may be cleared and refilled: no departed-server sweep."""
        self._guilds_complete = False
