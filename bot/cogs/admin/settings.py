"""Settings of the model life cycle (``/retrain``, ``/model``), from the environment or ``.env``.

Kept apart from :class:`bot.config.Settings` so the admin cog owns them;
pass an instance to :class:`bot.client.SERBot` (``lifecycle=``), else they
are read from the environment. Who may use the life-cycle commands
(``SER_OWNER_IDS``, ``SER_ADMIN_GUILD_ID``) is in :class:`bot.config.Settings`,
next to the other checks' inputs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LifecycleSettings", "REGISTRY_DIRNAME", "FEATURE_CACHE_DIRNAME"]

#: Default folders inside ``DATA_DIR`` (see :meth:`LifecycleSettings.under`).
REGISTRY_DIRNAME = "registry"
FEATURE_CACHE_DIRNAME = "feature-cache"


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class LifecycleSettings(BaseSettings):
    """Where models and training data live, and the quality gate.

    Attributes
    ----------
    ser_registry_dir : Path or None
        ``SER_REGISTRY_DIR``: model registry folder (default ``DATA_DIR/registry``,
        see :meth:`under`). When empty, ``SER_MODEL_PATH`` is adopted as version 1.
    ser_corpus_dirs : str
        ``SER_CORPUS_DIRS``: comma-separated RAVDESS-layout folders to train on.
    ser_feature_cache_dir : Path or None
        ``SER_FEATURE_CACHE_DIR``: per-file feature cache (default ``DATA_DIR/feature-cache``).
    ser_promote_margin : float
        ``SER_PROMOTE_MARGIN``: a new model is activated only if its
        speaker-independent macro-F1 is at least the active one's minus this (default 0.02).
    ser_retrain_emotions, ser_retrain_speakers : str
        ``SER_RETRAIN_EMOTIONS`` / ``SER_RETRAIN_SPEAKERS``: comma-separated subsets (default all).
    ser_retrain_folds : int
        ``SER_RETRAIN_FOLDS``: speaker-independent folds (default 6).
    ser_retrain_max_iter : int or None
        ``SER_RETRAIN_MAX_ITER``: override of the MLP's epochs.
    ser_retrain_jobs : int
        ``SER_RETRAIN_JOBS``: feature-extraction processes (default 1: a core stays free for answers).
    ser_feedback_weight : float
        ``SER_FEEDBACK_WEIGHT``: sample weight of a user's feedback clip (corpus clips weigh 1).
    ser_retrain_corrupt_labels : bool
        ``SER_RETRAIN_CORRUPT_LABELS``: **testing only**, train on shuffled labels.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", case_sensitive=False,
                                      extra="ignore", hide_input_in_errors=True)  # fmt: skip

    ser_registry_dir: Path | None = None
    ser_corpus_dirs: str = ""
    ser_feature_cache_dir: Path | None = None
    ser_promote_margin: float = Field(0.02, ge=0.0, le=1.0)
    ser_retrain_emotions: str = ""
    ser_retrain_speakers: str = ""
    ser_retrain_folds: int = Field(6, ge=2, le=50)
    ser_retrain_max_iter: int | None = Field(None, ge=1)
    ser_retrain_jobs: int = Field(1, ge=1, le=64)
    ser_feedback_weight: float = Field(2.0, gt=0.0)
    ser_retrain_corrupt_labels: bool = False

    @field_validator("ser_registry_dir", "ser_feature_cache_dir", mode="before")
    @classmethod
    def _blank_path_is_default(cls, value: object) -> object:
        """An empty ``SER_REGISTRY_DIR=`` / ``SER_FEATURE_CACHE_DIR=`` means the default under ``DATA_DIR``."""
        return None if isinstance(value, str) and not value.strip() else value

    def under(self, data_dir: Path) -> LifecycleSettings:
        """A copy whose unset folders are the defaults under ``data_dir`` (``DATA_DIR``).

        Everything the bot writes lives under ``DATA_DIR`` unless set otherwise:
        the registry in ``DATA_DIR/registry``, the feature cache in
        ``DATA_DIR/feature-cache``.

        Parameters
        ----------
        data_dir : Path
            :attr:`bot.config.Settings.data_dir`.
        """
        return self.model_copy(update={
            "ser_registry_dir": self.ser_registry_dir or data_dir / REGISTRY_DIRNAME,
            "ser_feature_cache_dir": self.ser_feature_cache_dir or data_dir / FEATURE_CACHE_DIRNAME,
        })  # fmt: skip

    @field_validator("ser_retrain_max_iter", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        """An empty ``SER_RETRAIN_MAX_ITER=`` (as in ``.env.example``) means the preset's own."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def corpus_dirs(self) -> list[str]:
        """:attr:`ser_corpus_dirs` as a list."""
        return _split(self.ser_corpus_dirs)

    @property
    def emotions(self) -> list[str] | None:
        """:attr:`ser_retrain_emotions` as a list, or ``None`` for all."""
        return _split(self.ser_retrain_emotions) or None

    @property
    def speakers(self) -> list[str] | None:
        """:attr:`ser_retrain_speakers` as a list, or ``None`` for all."""
        return _split(self.ser_retrain_speakers) or None
