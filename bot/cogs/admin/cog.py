"""The admin cog: ``/retrain`` and ``/model info|list|activate|rollback``.

Training runs in a spawned process (:class:`ser_engine.retrain.RetrainJob`),
so the event loop and the analysis threads keep answering voice notes; the
cog only polls the child's progress queue and edits the command's response
(at most about once a second).  One training at a time per bot process,
decided before the command's first ``await`` (two ``/retrain`` sent at once
cannot both start one).

The model serves every server, so its life cycle (``/retrain``, ``/model
activate``, ``/model rollback``) belongs to the bot's operators
(:func:`bot.checks.operator`): ``SER_OWNER_IDS``, the application's owner or
team, and members with Manage Server in ``SER_ADMIN_GUILD_ID``.  When that
server is set, these commands are registered there only; everywhere they
carry ``default_member_permissions`` Manage Server, which hides them from
other members (the check, not the hiding, is the guard).  ``/model info``
and ``/model list`` are public.  Command layout:

* ``SER_ADMIN_GUILD_ID`` set (and not ``DEV_GUILD_ID``): a global ``/model``
  with ``info`` and ``list``; in the admin server ``/retrain`` and a second
  ``/model`` with ``activate`` and ``rollback`` (Discord lists both groups'
  subcommands together there).
* otherwise: one ``/model`` with all four subcommands, hidden behind Manage
  Server (a group's subcommands cannot be hidden one by one), and ``/retrain``.

A version the quality gate rejected (``promoted`` false in its registry
record) is not activated by ``/model activate`` unless a bot owner
(``SER_OWNER_IDS`` or the application's owner, not the admin server's
managers) adds ``force: True``: overriding the gate is a deliberate,
logged act of the bot's owners.

A version is activated only after its bundle loaded and verified
(:meth:`ser_engine.registry.ModelRegistry.activate`); the service then swaps
to it between requests (:meth:`ser_engine.service.EmotionService.swap_predictor`).
Failures reach the user with an error id, never the exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from ser_engine.errors import ModelError
from ser_engine.registry import ModelRegistry, ModelVersion
from ser_engine.retrain import RetrainJob, RetrainSpec, progress_bar

from ..common import UserFacingError, correlation_id, user_message_for
from .settings import LifecycleSettings

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot
    from bot.config import Settings

__all__ = ["AdminCog", "ModelGroup", "NOT_ALLOWED", "EDIT_INTERVAL_S", "operator_guild"]

log = logging.getLogger(__name__)

#: The refusal every non-operator reads for a life-cycle command.
NOT_ALLOWED = checks.NotOperator.MESSAGE
#: Smallest interval between two edits of the progress message, in seconds.
EDIT_INTERVAL_S = 1.0
STAGE_NAMES = {"features": "Extracting features", "evaluating": "Evaluating (speaker-independent folds)",
               "fitting": "Fitting the final model", "saving": "Saving the new version"}  # fmt: skip
#: Subcommands of ``/model`` anyone may use, and those of the operators.
PUBLIC_SUBCOMMANDS = frozenset({"info", "list"})
OPERATOR_SUBCOMMANDS = frozenset({"activate", "rollback"})
_MANAGE_SERVER = discord.Permissions(manage_guild=True)


def operator_guild(settings: Settings) -> discord.Object | None:
    """The server the operators' commands are registered in (``SER_ADMIN_GUILD_ID``), or ``None``: global."""
    return discord.Object(id=settings.ser_admin_guild_id) if settings.ser_admin_guild_id is not None else None


def _fmt_metrics(m: dict[str, float]) -> str:
    return f"macro-F1 {m['macro_f1']:.3f} · UAR {m['uar']:.3f} · accuracy {m['accuracy']:.3f}"


class ModelGroup(app_commands.Group, name="model", description="The emotion model: versions, activation, rollback"):
    """The ``/model`` group, or the part of it registered in one scope.

    Parameters
    ----------
    cog : AdminCog
        Does the work.
    subcommands : frozenset of str
        Which of ``info``, ``list``, ``activate``, ``rollback`` to keep.
    hidden : bool
        Register with ``default_member_permissions`` Manage Server (and for
        servers only).
    """

    def __init__(self, cog: AdminCog, subcommands: frozenset[str], *, hidden: bool) -> None:
        super().__init__(default_permissions=_MANAGE_SERVER if hidden else None, guild_only=hidden)
        self.cog = cog
        for name in [c.name for c in self.commands if c.name not in subcommands]:
            self.remove_command(name)

    @app_commands.command(name="info", description="The active emotion model: version, metrics, training data, date")
    async def info(self, interaction: discord.Interaction) -> None:
        """``/model info`` (public)."""
        await self.cog.model_info(interaction)

    @app_commands.command(name="list", description="Every registered model version")
    async def list_versions(self, interaction: discord.Interaction) -> None:
        """``/model list`` (public)."""
        await self.cog.model_list(interaction)

    @app_commands.command(name="activate", description="Switch every server to a registered model version (operators)")
    @app_commands.describe(version="Version number, e.g. 3",
                           force="Activate a version the quality gate rejected (bot owners only)")  # fmt: skip
    @checks.operator()
    async def activate(self, interaction: discord.Interaction, version: int, force: bool = False) -> None:
        """``/model activate VERSION [force]`` (operators)."""
        await self.cog.model_activate(interaction, version, force=force)

    @app_commands.command(name="rollback", description="Go back to the previously active model version (operators)")
    @checks.operator()
    async def rollback(self, interaction: discord.Interaction) -> None:
        """``/model rollback`` (operators)."""
        await self.cog.model_rollback(interaction)


class AdminCog(commands.Cog, name="Admin"):
    """Model life cycle from Discord.

    Add it with ``bot.add_cog(cog, guild=operator_guild(bot.settings))`` (as
    :func:`bot.cogs.admin.setup` does) so that ``/retrain`` lands in the
    admin server when one is set; :meth:`cog_load` registers ``/model``.

    Parameters
    ----------
    bot : SERBot
        The running bot (its ``service`` started); ``bot.lifecycle_settings``
        gives the registry, corpus and gate settings.

    Attributes
    ----------
    registry : ModelRegistry
    job : RetrainJob or None
        The training running now.
    active_version : int or None
        The version the service serves.
    groups : list of (ModelGroup, discord.Object or None)
        The ``/model`` group(s) this cog registered, with their scope (``None``: global).
    """

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        self.lifecycle: LifecycleSettings = bot.lifecycle_settings.under(bot.settings.data_dir)
        self.registry = ModelRegistry(self.lifecycle.ser_registry_dir)
        self.job: RetrainJob | None = None
        #: (mention of who started it, time.monotonic() at the start) while a training is starting or running.
        self._training: tuple[str, float] | None = None
        self.active_version: int | None = None
        self._watch: asyncio.Task[None] | None = None
        self.groups: list[tuple[ModelGroup, discord.Object | None]] = []

    # ------------------------------------------------------------ lifecycle
    async def cog_load(self) -> None:
        """Register ``/model``; adopt the configured model as v1 if the registry is empty; serve the active version."""
        s = self.bot.settings
        if s.ser_admin_guild_id is not None and s.ser_admin_guild_id != s.dev_guild_id:
            self.groups = [(ModelGroup(self, PUBLIC_SUBCOMMANDS, hidden=False), None),
                           (ModelGroup(self, OPERATOR_SUBCOMMANDS, hidden=True), operator_guild(s))]  # fmt: skip
        else:  # one group: hiding it hides info/list too (they stay usable for whoever sees them)
            self.groups = [(ModelGroup(self, PUBLIC_SUBCOMMANDS | OPERATOR_SUBCOMMANDS, hidden=True), None)]
        for group, guild in self.groups:
            self.bot.tree.add_command(group, guild=guild)
        await asyncio.to_thread(self.registry.ensure_default, s.ser_model_path)
        try:
            version, bundle = await asyncio.to_thread(self.registry.load_active)
        except ModelError as exc:
            log.error("no registered model version loads (%s); serving %s", exc, s.ser_model_path)
            return
        if version != self.registry.active_version:
            log.error("model version v%s is refused; serving v%s instead", self.registry.active_version, version)
        self._serve(version, bundle)

    async def cog_unload(self) -> None:
        """Unregister ``/model``; stop a running training (its model is not activated)."""
        for group, guild in self.groups:
            self.bot.tree.remove_command(group.name, guild=guild)
        self.groups = []
        if self._watch is not None:
            self._watch.cancel()
        if self.job is not None:
            await asyncio.to_thread(self.job.kill)

    def _serve(self, version: int, bundle: Any) -> None:
        from ser_engine.predict import Predictor

        service = self.bot.service
        if service is None:
            return
        service.swap_predictor(Predictor(bundle, limits=service.predictor.limits))
        self.active_version = version  # predictions now say "v<N>@sha256:..." (Prediction.model_version)
        log.info("serving model version v%s (%s)", version, ", ".join(bundle.labels))

    # -------------------------------------------------------------- retrain
    @app_commands.command(name="retrain", description="Retrain the emotion model (operators); promoted if not worse")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @checks.operator()
    async def retrain(self, interaction: discord.Interaction) -> None:
        """``/retrain``: train in a separate process, show progress, compare, promote or keep."""
        # Claimed before the first await: the event loop runs this synchronous part of one interaction
        # to its end before any other, so of two /retrain sent at once exactly one starts a training.
        if self._training is not None:
            owner, started = self._training
            await interaction.response.send_message(
                f"A training is already running (started by {owner} {time.monotonic() - started:.0f} s ago); "
                "wait for it to finish.", ephemeral=True)  # fmt: skip
            return
        if not self.lifecycle.corpus_dirs:
            await interaction.response.send_message("No training corpus is configured (SER_CORPUS_DIRS).",
                                                    ephemeral=True)  # fmt: skip
            return
        self._training = (interaction.user.mention, time.monotonic())
        try:
            job = await self._start(interaction)
        except BaseException:
            self._training = None
            raise
        self.job = job
        log.info("retrain started by %s (pid %s)", interaction.user.id, job.pid)
        self._watch = asyncio.create_task(self._follow(interaction, job))

    async def _start(self, interaction: discord.Interaction) -> RetrainJob:
        """Gather feedback, answer publicly, start the training process."""
        feedback = await self._feedback()
        s = self.lifecycle
        spec = RetrainSpec(
            corpus_dirs=s.corpus_dirs, registry_dir=str(self.registry.root), cache_dir=str(s.ser_feature_cache_dir),
            emotions=s.emotions, speakers=s.speakers, folds=s.ser_retrain_folds, max_iter=s.ser_retrain_max_iter,
            margin=s.ser_promote_margin, n_jobs=s.ser_retrain_jobs, feedback_weight=s.ser_feedback_weight,
            corrupt_labels=s.ser_retrain_corrupt_labels, requested_by=f"{interaction.user} ({interaction.user.id})",
            feedback_X=[list(map(float, f.features)) for f in feedback],
            feedback_labels=[f.label for f in feedback], feedback_users=[f.user_id for f in feedback],
        )  # fmt: skip
        job = RetrainJob(spec)
        await interaction.response.send_message(f"Training started by {interaction.user.mention}: preparing …")
        await asyncio.to_thread(job.start)
        return job

    async def _feedback(self) -> list[Any]:
        """Consented feedback for the default feature configuration (empty without a store)."""
        store = self.bot.store
        if store is None:
            return []
        from ser_engine.cache import config_key
        from ser_engine.features import FeatureConfig

        try:
            return list(await store.training_feedback(config_key(FeatureConfig())))
        except Exception as exc:  # the corpus alone still trains
            log.warning("feedback unavailable for training: %s", exc)
            return []

    async def _edit(self, interaction: discord.Interaction, content: str) -> None:
        try:
            await interaction.edit_original_response(content=content)
        except discord.HTTPException:
            log.warning("could not edit the /retrain message", exc_info=True)

    async def _follow(self, interaction: discord.Interaction, job: RetrainJob) -> None:
        last_edit = 0.0
        shown: dict[str, Any] | None = None
        try:
            while True:
                await asyncio.to_thread(job.poll)
                if job.finished:
                    break
                progress = job.last_progress
                now = time.monotonic()
                if progress is not None and progress is not shown and now - last_edit >= EDIT_INTERVAL_S:
                    shown, last_edit = progress, now
                    stage = STAGE_NAMES.get(progress["stage"], progress["stage"])
                    detail = f" ({progress['detail']})" if progress.get("detail") else ""
                    await self._edit(interaction, f"Training: {stage}{detail}\n`{progress_bar(progress['fraction'])}`"
                                                  f"  elapsed {now - job.started_at:.0f} s")  # fmt: skip
                await asyncio.sleep(0.25)
            await asyncio.to_thread(job.join, 5)
            if job.error is not None:
                # The child's error text may name files or exceptions: it goes to the log, the user gets its id.
                cid = correlation_id()
                log.error("retrain failed [%s]: %s", cid, job.error)
                reason = f"{job.user_message} " if job.user_message else ""  # an expected SERError's own text
                await self._edit(interaction, f"Training failed: {reason}(error id `{cid}`). "
                                              "The active model is unchanged.")  # fmt: skip
                return
            await self._edit(interaction, await self._conclude(job.result or {}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = user_message_for(exc, where="/retrain")
            await self._edit(interaction, f"Training failed: {text} v{self.active_version} is active.")
        finally:
            if self.job is job:
                self.job = None
            self._training = None

    async def _conclude(self, r: dict[str, Any]) -> str:
        version = int(r["version"])
        lines = [
            f"Training finished in {r['elapsed_s']:.0f} s: **v{version}** ({r['n_clips']} clips, "
            f"{r['n_feedback']} feedback, {len(r['labels'])} emotions).",
            f"Same {r['folds']} speaker-independent folds:",
            f"• new v{version}: {_fmt_metrics(r['candidate'])}",
            f"• active v{r['reference_version']} (its recipe): {_fmt_metrics(r['reference'])}",
        ]
        if r["promoted"]:
            try:
                bundle = await asyncio.to_thread(self.registry.promote, version)  # activate + mark, one lock
            except ModelError as exc:
                lines.append(f"Not activated: {exc.user_message}")
                return "\n".join(lines)
            self._serve(version, bundle)
            lines.append(f"Promoted: v{version} is now active ({r['reason']}). Undo with /model rollback.")
        else:
            lines.append(f"Not promoted: {r['reason']}. Stored as v{version}; v{self.active_version} stays active.")
        return "\n".join(lines)

    # ---------------------------------------------------------------- model
    def _describe(self, v: ModelVersion) -> str:
        md = v.metadata
        metrics = v.metrics
        data = f"{md.get('n_clips', '?')} clips, {md.get('n_speakers', '?')} speakers"
        if md.get("n_feedback"):
            data += f", {md['n_feedback']} feedback"
        return (f"**{v.name}** ({v.source}), trained {md.get('created_at', v.created_at)}\n"
                f"Emotions: {', '.join(v.labels)}\nTraining data: {data}\n"
                f"Speaker-independent: {_fmt_metrics(metrics) if len(metrics) == 3 else 'not measured'}")  # fmt: skip

    async def model_info(self, interaction: discord.Interaction) -> None:
        """``/model info``: the active version, ephemerally."""
        if self.active_version is None:
            await interaction.response.send_message("No registered model is active.", ephemeral=True)
            return
        entry = await asyncio.to_thread(self.registry.get, self.active_version)
        await interaction.response.send_message("Active model: " + self._describe(entry), ephemeral=True)

    async def model_list(self, interaction: discord.Interaction) -> None:
        """``/model list``: the last 20 versions, ephemerally."""
        versions = await asyncio.to_thread(self.registry.list)
        lines = []
        for v in versions[-20:]:
            f1 = v.metrics.get("macro_f1")
            flag = " ← active" if v.version == self.active_version else ""
            gate = " (not promoted)" if v.info.get("promoted") is False else ""
            lines.append(f"v{v.version}: {len(v.labels)} emotions, macro-F1 {f1:.3f}{gate}{flag}" if f1 is not None
                         else f"v{v.version}: {len(v.labels)} emotions{gate}{flag}")  # fmt: skip
        await interaction.response.send_message("\n".join(lines) or "No versions.", ephemeral=True)

    async def model_activate(self, interaction: discord.Interaction, version: int, *, force: bool = False) -> None:
        """``/model activate VERSION [force]`` (the operator check has passed).

        Raises
        ------
        UserFacingError
            The version was rejected by the quality gate and ``force`` is not
            given by a bot owner (answered ephemerally by the tree).
        """
        try:
            entry = await asyncio.to_thread(self.registry.get, version)
        except ModelError as exc:
            raise UserFacingError(f"{exc.user_message} v{self.active_version} stays active.") from exc
        if entry.info.get("promoted") is False:
            reason = str(entry.info.get("note") or "it scored below the active model")[:200]
            if not force:
                raise UserFacingError(
                    f"v{version} was rejected by the quality gate ({reason}); v{self.active_version} stays active. "
                    "A bot owner can activate it anyway with `force: True`.")  # fmt: skip
            if not await checks.is_bot_owner(interaction):
                raise UserFacingError(f"Only the bot's owners can activate v{version}, which the quality gate "
                                      f"rejected; v{self.active_version} stays active.")  # fmt: skip
            log.warning("user %s forces gate-rejected model v%s", interaction.user.id, version)
        try:
            bundle = await asyncio.to_thread(self.registry.activate, version)
        except ModelError as exc:
            raise UserFacingError(f"{exc.user_message} v{self.active_version} stays active.") from exc
        self._serve(version, bundle)
        log.info("user %s activated model v%s", interaction.user.id, version)
        await interaction.response.send_message(f"v{version} is now active.")

    async def model_rollback(self, interaction: discord.Interaction) -> None:
        """``/model rollback`` (the operator check has passed)."""
        try:
            version, bundle = await asyncio.to_thread(self.registry.rollback)
        except ModelError as exc:
            raise UserFacingError(f"{exc.user_message} v{self.active_version} stays active.") from exc
        self._serve(version, bundle)
        log.info("user %s rolled back to model v%s", interaction.user.id, version)
        await interaction.response.send_message(f"Rolled back: v{version} is now active.")
