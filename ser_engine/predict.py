"""Prediction: audio in, emotion label with probabilities out.

``Predictor.predict(source)`` runs :func:`ser_engine.audio.load_audio`
(decode, limits, 16 kHz mono), :func:`ser_engine.features.extract_features`
with the bundle's own :class:`~ser_engine.features.FeatureConfig`, and the
bundle's fitted pipeline (scaler and MLP).  A :class:`Predictor` holds no
per-call state, so one instance may serve several threads at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from .audio import TARGET_SR, AudioLimits, AudioSource, frame_levels_dbfs, load_audio
from .bundle import DEFAULT_MODEL_PATH, ModelBundle, load_bundle
from .errors import AudioTooLongError, AudioTooShortError, EmptyAudioError, SilentAudioError
from .features import extract_features

__all__ = ["DEFAULT_MODEL_PATH", "Prediction", "Predictor"]


@dataclass(frozen=True)
class Prediction:
    """The model's judgement of one clip.

    Attributes
    ----------
    label : str
        Most probable emotion.
    confidence : float
        Its probability, in [0, 1] (``max(probabilities.values())``).
    probabilities : dict of str to float
        Probability of every label, in the model's label order; sums to 1.
    duration_s : float
        Duration in seconds of the analysed signal (after decoding and
        resampling to 16 kHz).
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "duration_s": self.duration_s,
        }


class Predictor:
    """Classify clips with a :class:`~ser_engine.bundle.ModelBundle`.

    Parameters
    ----------
    bundle : ModelBundle
        A fitted bundle (see :func:`ser_engine.bundle.load_bundle`).
    limits : AudioLimits, optional, keyword-only
        Decoding limits for :meth:`predict` (default ``AudioLimits()``).

    Raises
    ------
    ValueError
        If the bundle's feature configuration is not at 16 kHz.
    """

    def __init__(self, bundle: ModelBundle, *, limits: AudioLimits | None = None) -> None:
        if bundle.feature_config.sr != TARGET_SR:
            raise ValueError(f"Predictor: the model's features are at {bundle.feature_config.sr} Hz, not {TARGET_SR}")
        self.bundle = bundle
        self.limits = limits or AudioLimits()
        self._columns = [bundle.labels[int(c)] for c in bundle.pipeline.classes_]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, limits: AudioLimits | None = None) -> Predictor:
        """Load a bundle (verified, see :func:`~ser_engine.bundle.load_bundle`) and wrap it.

        Parameters
        ----------
        path : str or os.PathLike, optional
            The ``.joblib`` bundle (default :data:`DEFAULT_MODEL_PATH`).
        limits : AudioLimits, optional
            Decoding limits.

        Returns
        -------
        Predictor

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            As :func:`~ser_engine.bundle.load_bundle`.
        """
        return cls(load_bundle(path if path is not None else DEFAULT_MODEL_PATH), limits=limits)

    @property
    def labels(self) -> tuple[str, ...]:
        """The emotions the model tells apart, in probability order."""
        return self.bundle.labels

    def predict(self, source: AudioSource) -> Prediction:
        """Classify an encoded clip.

        Parameters
        ----------
        source : bytes or path-like
            The file's bytes or its path; any format :func:`~ser_engine.audio.load_audio` decodes.

        Returns
        -------
        Prediction

        Raises
        ------
        ser_engine.errors.AudioError
            Any error of :func:`~ser_engine.audio.load_audio` (empty, too
            large, too long, too short, undecodable, silent).
        """
        y = load_audio(source, sr=TARGET_SR, limits=self.limits)
        return self._classify(y)

    def predict_signal(self, y: np.ndarray, sr: int = TARGET_SR) -> Prediction:
        """Classify a decoded mono signal.

        The duration and silence limits of ``self.limits`` apply as in
        :meth:`predict`; the signal is resampled to 16 kHz (soxr, HQ) when
        ``sr`` differs.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono samples, full scale 1.0.
        sr : int, default 16000
            Sample rate of ``y`` in Hz.

        Returns
        -------
        Prediction

        Raises
        ------
        ValueError
            If ``y`` is not one-dimensional or ``sr`` is not positive.
        EmptyAudioError, AudioTooShortError, AudioTooLongError, SilentAudioError
            If the signal is empty, outside the duration limits, or silent.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1 or sr <= 0:
            raise ValueError(f"predict_signal: need a 1-D signal and sr > 0, got shape {y.shape} and sr={sr}")
        if y.size == 0:
            raise EmptyAudioError("That recording holds no audio samples.")
        duration_s = y.size / sr
        if duration_s > self.limits.max_duration_s:
            raise AudioTooLongError(duration_s, self.limits.max_duration_s)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        if sr != TARGET_SR:
            y = soxr.resample(y, sr, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
        if y.size / TARGET_SR < self.limits.min_duration_s:
            raise AudioTooShortError(y.size / TARGET_SR, self.limits.min_duration_s)
        y = y - np.float32(y.mean())
        level = float(frame_levels_dbfs(y, sr=TARGET_SR).max())
        if level < self.limits.silence_dbfs:
            raise SilentAudioError(level)
        return self._classify(np.ascontiguousarray(y))

    def _classify(self, y: np.ndarray) -> Prediction:
        features = extract_features(y=y, sr=TARGET_SR, config=self.bundle.feature_config)
        proba = self.bundle.pipeline.predict_proba(features[None, :])[0]
        by_label = dict(zip(self._columns, (float(p) for p in proba), strict=True))
        probabilities = {label: by_label.get(label, 0.0) for label in self.labels}
        label = max(probabilities, key=probabilities.__getitem__)
        return Prediction(
            label=label,
            confidence=probabilities[label],
            probabilities=probabilities,
            duration_s=float(y.size / TARGET_SR),
        )

    def __repr__(self) -> str:
        return f"Predictor(labels={self.labels!r})"
