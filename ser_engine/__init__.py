"""ser_engine: speech-emotion recognition as a small, pure, typed library.

Audio in (bytes or a path), emotion out.  No Discord here: the bot in
``bot/`` is one front end; the ``ser`` command line is another.

Public API
----------
Decoding
    :func:`load_audio`, :class:`AudioLimits`, :data:`TARGET_SR`
Features
    :class:`FeatureConfig`, :func:`extract_features`, :func:`extract_many`
Corpora
    :func:`load_ravdess`, :class:`Clip`, :data:`RAVDESS_EMOTIONS`
Training and evaluation
    :func:`train_model`, :func:`build_pipeline`, :data:`PRESETS`, :func:`evaluate`
Models
    :class:`ModelBundle`, :func:`save_bundle`, :func:`load_bundle`
Prediction
    :class:`Predictor`, :class:`Prediction`, :class:`EmotionService`
Errors
    :class:`SERError` and its subclasses in :mod:`ser_engine.errors`
"""

from __future__ import annotations

from .audio import TARGET_SR, AudioLimits, load_audio
from .bundle import ModelBundle, load_bundle, save_bundle
from .corpora import RAVDESS_EMOTIONS, Clip, load_ravdess
from .errors import (
    AudioError,
    AudioFormatLimitError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    CorpusError,
    EmptyAudioError,
    ModelCompatibilityError,
    ModelError,
    ModelIntegrityError,
    ModelNotFoundError,
    NoSpeechError,
    SERError,
    ServiceBusyError,
    ServiceClosedError,
    ServiceError,
    ServiceTimeoutError,
    SilentAudioError,
    UndecodableAudioError,
)
from .evaluation import EvaluationReport, evaluate
from .features import FeatureConfig, extract_features, extract_many
from .predict import DEFAULT_MODEL_PATH, Prediction, Predictor
from .recipe import Recipe
from .service import EmotionService
from .training import PRESETS, build_pipeline, train_model

__version__ = "0.1.0"

__all__ = [
    "TARGET_SR", "AudioLimits", "load_audio",
    "FeatureConfig", "extract_features", "extract_many",
    "RAVDESS_EMOTIONS", "Clip", "load_ravdess",
    "PRESETS", "build_pipeline", "train_model", "Recipe", "EvaluationReport", "evaluate",
    "ModelBundle", "save_bundle", "load_bundle", "DEFAULT_MODEL_PATH",
    "Prediction", "Predictor", "EmotionService",
    "SERError", "AudioError", "EmptyAudioError", "AudioTooLargeError", "AudioTooLongError",
    "AudioTooShortError", "UndecodableAudioError", "SilentAudioError", "AudioFormatLimitError", "NoSpeechError",
    "ModelError", "ModelNotFoundError", "ModelIntegrityError", "ModelCompatibilityError",
    "CorpusError", "ServiceError", "ServiceBusyError", "ServiceTimeoutError", "ServiceClosedError",
    "__version__",
]  # fmt: skip
