"""The admin cog: ``/retrain`` and ``/model info|list|activate|rollback``.

Training runs in a spawned process (:class:`ser_engine.retrain.RetrainJob`),
so the event loop and the analysis threads keep answering voice notes; the
cog only polls the child's progress queue and edits the command's response
(at most about once a second).  One training at a time per bot process.

Who may retrain or switch models is checked here, on the bot's side, from
``interaction.permissions`` (Manage Server in the channel) or the configured
owner ids -- never only by ``default_member_permissions``, which a server's
admins can change.

A version is activated only after its bundle loaded and verified
(:meth:`ser_engine.registry.ModelRegistry.activate`); the service then swaps
to it between requests (:meth:`ser_engine.service.EmotionService.swap_predictor`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from ser_engine.errors import ModelError
from ser_engine.registry import ModelRegistry, ModelVersion
from ser_engine.retrain import RetrainJob, RetrainSpec, progress_bar

from .settings import LifecycleSettings

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import SERBot

__all__ = ["AdminCog", "NOT_ALLOWED", "EDIT_INTERVAL_S"]

log = logging.getLogger(__name__)

NOT_ALLOWED = "Only members with the Manage Server permission (or the bot's owners) can do this."
#: Smallest interval between two edits of the progress message, in seconds.
EDIT_INTERVAL_S = 1.0
STAGE_NAMES = {"features": "Extracting features", "evaluating": "Evaluating (speaker-independent folds)",
               "fitting": "Fitting the final model", "saving": "Saving the new version"}  # fmt: skip


def _fmt_metrics(m: dict[str, float]) -> str:
    return f"macro-F1 {m['macro_f1']:.3f} · UAR {m['uar']:.3f} · accuracy {m['accuracy']:.3f}"


class AdminCog(commands.Cog, name="Admin"):
    """Model life cycle from Discord.

    Parameters
    ----------
    bot : SERBot
        The running bot (its ``service`` started).  ``bot.lifecycle_settings``
        (a :class:`LifecycleSettings`) is used when set, else the environment.

    Attributes
    ----------
    registry : ModelRegistry
    job : RetrainJob or None
        The training running now.
    active_version : int or None
        The version the service serves.
    """

    model = app_commands.Group(name="model", description="The emotion model: versions, activation, rollback")

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot
        self.lifecycle: LifecycleSettings = getattr(bot, "lifecycle_settings", None) or LifecycleSettings()
        self.registry = ModelRegistry(self.lifecycle.ser_registry_dir)
        self.job: RetrainJob | None = None
        self.job_owner: str = ""
        self.active_version: int | None = None
        self._watch: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def cog_load(self) -> None:
        """Adopt the configured model as version 1 if the registry is empty; serve the active version."""
        await asyncio.to_thread(self.registry.ensure_default, self.bot.settings.ser_model_path)
        try:
            version, bundle = await asyncio.to_thread(self.registry.load_active)
        except ModelError as exc:
            log.error("no registered model version loads (%s); serving %s", exc, self.bot.settings.ser_model_path)
            return
        if version != self.registry.active_version:
            log.error("model version v%s is refused; serving v%s instead", self.registry.active_version, version)
        self._serve(version, bundle)

    async def cog_unload(self) -> None:
        """Stop a running training (its model is not activated)."""
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
        self.active_version = version
        entry = self.registry.get(version)
        self.bot.model_version = f"v{version}@sha256:{entry.sha256}"[:128]
        log.info("serving model version v%s (%s)", version, ", ".join(bundle.labels))

    def _allowed(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id in self.lifecycle.owner_ids:
            return True
        return interaction.guild is not None and interaction.permissions.manage_guild

    async def _refuse(self, interaction: discord.Interaction) -> bool:
        if self._allowed(interaction):
            return False
        await interaction.response.send_message(NOT_ALLOWED, ephemeral=True)
        return True

    # -------------------------------------------------------------- retrain
    @app_commands.command(name="retrain", description="Retrain the emotion model (admins); promoted only if not worse")
    async def retrain(self, interaction: discord.Interaction) -> None:
        """``/retrain``: train in a separate process, show progress, compare, promote or keep."""
        if await self._refuse(interaction):
            return
        if self.job is not None and not self.job.finished:
            elapsed = time.monotonic() - self.job.started_at
            await interaction.response.send_message(
                f"A training is already running (started by {self.job_owner} {elapsed:.0f} s ago); "
                "wait for it to finish.", ephemeral=True)  # fmt: skip
            return
        if not self.lifecycle.corpus_dirs:
            await interaction.response.send_message("No training corpus is configured (SER_CORPUS_DIRS).",
                                                    ephemeral=True)  # fmt: skip
            return
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
        self.job, self.job_owner = job, interaction.user.mention
        await interaction.response.send_message(f"Training started by {interaction.user.mention}: preparing …")
        try:
            await asyncio.to_thread(job.start)
        except Exception:
            self.job = None
            raise
        log.info("retrain started by %s (pid %s)", interaction.user.id, job.pid)
        self._watch = asyncio.create_task(self._follow(interaction, job))

    async def _feedback(self) -> list[Any]:
        """Consented feedback for the default feature configuration (empty without a store)."""
        store = getattr(self.bot, "store", None)
        if store is None or not hasattr(store, "training_feedback"):
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
                log.warning("retrain failed: %s", job.error)
                await self._edit(interaction, f"Training failed: {job.error}. The active model is unchanged.")
                return
            await self._edit(interaction, await self._conclude(job.result or {}))
        finally:
            if self.job is job:
                self.job = None

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
                bundle = await asyncio.to_thread(self.registry.activate, version)
            except ModelError as exc:
                lines.append(f"Not activated: {exc.user_message}")
                return "\n".join(lines)
            await asyncio.to_thread(self.registry.annotate, version, promoted=True)
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

    @model.command(name="info", description="The active emotion model: version, metrics, training data, date")
    async def model_info(self, interaction: discord.Interaction) -> None:
        """``/model info``."""
        if self.active_version is None:
            await interaction.response.send_message("No registered model is active.", ephemeral=True)
            return
        entry = await asyncio.to_thread(self.registry.get, self.active_version)
        await interaction.response.send_message("Active model: " + self._describe(entry), ephemeral=True)

    @model.command(name="list", description="Every registered model version")
    async def model_list(self, interaction: discord.Interaction) -> None:
        """``/model list``."""
        versions = await asyncio.to_thread(self.registry.list)
        lines = []
        for v in versions[-20:]:
            f1 = v.metrics.get("macro_f1")
            flag = " ← active" if v.version == self.active_version else ""
            gate = " (not promoted)" if v.info.get("promoted") is False else ""
            lines.append(f"v{v.version}: {len(v.labels)} emotions, macro-F1 {f1:.3f}{gate}{flag}" if f1 is not None
                         else f"v{v.version}: {len(v.labels)} emotions{gate}{flag}")  # fmt: skip
        await interaction.response.send_message("\n".join(lines) or "No versions.", ephemeral=True)

    @model.command(name="activate", description="Switch to a registered model version (admins)")
    @app_commands.describe(version="Version number, e.g. 3")
    async def model_activate(self, interaction: discord.Interaction, version: int) -> None:
        """``/model activate VERSION``."""
        if await self._refuse(interaction):
            return
        try:
            bundle = await asyncio.to_thread(self.registry.activate, version)
        except ModelError as exc:
            await interaction.response.send_message(
                f"{exc.user_message} v{self.active_version} stays active.", ephemeral=True)  # fmt: skip
            return
        self._serve(version, bundle)
        await interaction.response.send_message(f"v{version} is now active.")

    @model.command(name="rollback", description="Go back to the previously active model version (admins)")
    async def model_rollback(self, interaction: discord.Interaction) -> None:
        """``/model rollback``."""
        if await self._refuse(interaction):
            return
        try:
            version, bundle = await asyncio.to_thread(self.registry.rollback)
        except ModelError as exc:
            await interaction.response.send_message(
                f"{exc.user_message} v{self.active_version} stays active.", ephemeral=True)  # fmt: skip
            return
        self._serve(version, bundle)
        await interaction.response.send_message(f"Rolled back: v{version} is now active.")

