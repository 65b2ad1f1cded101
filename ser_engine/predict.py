"""Prediction: audio in, emotion label with probabilities out.

``Predictor.predict(source)`` runs :func:`ser_engine.audio.load_audio`
(decode, limits, 16 kHz mono), :func:`ser_engine.features.extract_features`
with the bundle's own :class:`~ser_engine.features.FeatureConfig`, and the
bundle's fitted pipeline (scaler and MLP).  A :class:`Predictor` holds no
per-call state, so one instance may serve several threads at once.

Bundles trained on speaker-normalised features (``bundle.normalizer``) take
the speaker's running statistics (``speaker_stats=``, see
:class:`~ser_engine.normalization.SpeakerStats`); with fewer than
``normalizer.min_clips`` clips, or none, the training speakers' fallback
statistics are used.  The raw feature vector comes back in
:attr:`Prediction.features`, so a caller can update the speaker's
statistics without extracting the features twice.  Probabilities are
temperature-scaled by ``bundle.temperature``; below a confidence threshold
the prediction is flagged :attr:`Prediction.unsure`.  Before anything is
classified, a voice-activity detector (:func:`ser_engine.vad.default_detector`)
checks that the clip holds speech; without it the predictor raises
:class:`~ser_engine.errors.NoSpeechError` (``detect_speech=False`` turns the
gate off, e.g. for training-time scoring).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from .audio import TARGET_SR, AudioLimits, AudioSource, frame_levels_dbfs, load_audio
from .bundle import DEFAULT_MODEL_PATH, ModelBundle, load_bundle
from .errors import (
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    NoSpeechError,
    SilentAudioError,
)
from .features import extract_features
from .normalization import RunningStatsLike

__all__ = ["DEFAULT_MODEL_PATH", "Prediction", "Predictor", "apply_temperature"]


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale class probabilities: ``softmax(log(p) / T)``.

    For a softmax classifier ``log(p)`` equals the logits up to a per-row
    constant, so this is exactly temperature scaling of the logits (Guo et
    al. 2017, "On calibration of modern neural networks", ICML).

    Parameters
    ----------
    proba : np.ndarray, shape (n_samples, n_classes)
        Rows summing to 1.
    temperature : float
        ``T > 0``; ``T > 1`` softens, ``T < 1`` sharpens, 1 leaves ``proba`` as is.

    Returns
    -------
    np.ndarray, shape (n_samples, n_classes), float64
        Rows summing to 1.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-300, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


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
    unsure : bool, default False
        True when ``confidence`` is below the predictor's ``unsure_below``
        threshold: show :attr:`top_two` rather than asserting ``label``.
    top_two : tuple of str, default ()
        The two most probable labels, most probable first.
    normalization : str, default "none"
        How the features were normalised: ``"speaker"`` (the speaker's own
        statistics), ``"fallback"`` (training speakers' statistics; too few
        clips of this speaker yet) or ``"none"`` (model without speaker
        normalisation).
    features : np.ndarray or None, shape (n_features,)
        The raw (unnormalised) feature vector, for updating the speaker's
        running statistics; not part of :meth:`to_dict` or equality.
    model_version : str, default "unknown"
        The model that made this prediction, ``"<name>@sha256:<hex>"`` (at
        most 128 characters; see :attr:`Predictor.model_version`).  Set by
        the predictor that ran, so a model swapped while a clip was being
        analysed does not relabel it.
    timeline : ser_engine.timeline.Timeline or None, default None
        The emotions over time of the same note, when the caller asked for
        them (:meth:`ser_engine.service.EmotionService.analyse` with
        ``timeline=True``); not part of :meth:`to_dict` or equality.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    duration_s: float
    unsure: bool = False
    top_two: tuple[str, ...] = ()
    normalization: str = "none"
    features: np.ndarray | None = field(default=None, repr=False, compare=False)
    model_version: str = "unknown"
    timeline: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (without ``features``)."""
        return {
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "duration_s": self.duration_s,
            "unsure": self.unsure,
            "top_two": list(self.top_two),
            "normalization": self.normalization,
            "model_version": self.model_version,
        }


class Predictor:
    """Classify clips with a :class:`~ser_engine.bundle.ModelBundle`.

    Parameters
    ----------
    bundle : ModelBundle
        A fitted bundle (see :func:`ser_engine.bundle.load_bundle`).
    limits : AudioLimits, optional, keyword-only
        Decoding limits for :meth:`predict` (default ``AudioLimits()``).
    unsure_below : float, optional, keyword-only
        Confidence below which a prediction is flagged ``unsure`` (default:
        the bundle's ``metadata["unsure_below"]``, else 0.0 = never).
    model_version : str, optional, keyword-only
        Identity written into every :class:`Prediction` (default: the
        bundle's :attr:`~ser_engine.bundle.ModelBundle.model_version`, e.g.
        ``"v3@sha256:<hex>"`` from a registry, ``"ravdess-8class@sha256:<hex>"``
        from a file, ``"unsaved"`` for an in-memory bundle).
    detect_speech : bool, default True, keyword-only
        Refuse clips without speech (:class:`~ser_engine.errors.NoSpeechError`)
        before classifying them, with the process's
        :func:`~ser_engine.vad.default_detector` (loaded on first use, so a
        Predictor still pickles); False classifies whatever comes.

    Attributes
    ----------
    model_version : str
        Written into every :class:`Prediction` this predictor makes.

    Raises
    ------
    ValueError
        If the bundle's feature configuration is not at 16 kHz,
        ``unsure_below`` is not in [0, 1], or ``model_version`` is empty or
        longer than 128 characters (the width of the stored column).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        limits: AudioLimits | None = None,
        unsure_below: float | None = None,
        model_version: str | None = None,
        detect_speech: bool = True,
    ) -> None:
        if bundle.feature_config.sr != TARGET_SR:
            raise ValueError(f"Predictor: the model's features are at {bundle.feature_config.sr} Hz, not {TARGET_SR}")
        if unsure_below is None:
            unsure_below = float(bundle.metadata.get("unsure_below", 0.0))
        if not 0.0 <= unsure_below <= 1.0:
            raise ValueError(f"Predictor: unsure_below must be in [0, 1], got {unsure_below}")
        if model_version is None:
            model_version = bundle.model_version
        if not isinstance(model_version, str) or not 0 < len(model_version) <= 128:
            raise ValueError(f"Predictor: model_version must be a string of 1-128 characters, got {model_version!r}")
        self.model_version = model_version
        self.bundle = bundle
        self.limits = limits or AudioLimits()
        self.unsure_below = float(unsure_below)
        self.detect_speech = bool(detect_speech)
        self._columns = [bundle.labels[int(c)] for c in bundle.pipeline.classes_]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        limits: AudioLimits | None = None,
        unsure_below: float | None = None,
        model_version: str | None = None,
        detect_speech: bool = True,
    ) -> Predictor:
        """Load a bundle (verified, see :func:`~ser_engine.bundle.load_bundle`) and wrap it.

        Parameters
        ----------
        path : str or os.PathLike, optional
            The ``.joblib`` bundle (default :data:`DEFAULT_MODEL_PATH`).
        limits : AudioLimits, optional
            Decoding limits.
        unsure_below : float, optional
            See :class:`Predictor`.
        model_version : str, optional
            See :class:`Predictor` (default ``"<file stem>@sha256:<hex>"``).
        detect_speech : bool, default True
            See :class:`Predictor`.

        Returns
        -------
        Predictor

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            As :func:`~ser_engine.bundle.load_bundle`.
        """
        bundle = load_bundle(path if path is not None else DEFAULT_MODEL_PATH)
        return cls(bundle, limits=limits, unsure_below=unsure_below, model_version=model_version,
                   detect_speech=detect_speech)

    @property
    def labels(self) -> tuple[str, ...]:
        """The emotions the model tells apart, in probability order."""
        return self.bundle.labels

    @property
    def min_clips(self) -> int | None:
        """Clips of a speaker needed before their own statistics are used (None: no speaker normalisation)."""
        return None if self.bundle.normalizer is None else self.bundle.normalizer.min_clips

    def predict_timeline(self, source: AudioSource, *, speaker_stats: RunningStatsLike | None = None) -> Prediction:
        """The overall prediction of ``source`` carrying its emotions over time as ``timeline``.

        :func:`ser_engine.timeline.predict_timeline` with this predictor: one
        decode and one frame-level pass serve the overall answer and the 3 s
        windows (notes shorter than 8 s: one segment).

        Parameters
        ----------
        source : AudioSource
            Path, bytes or file object in any format :func:`~ser_engine.audio.load_audio` decodes.
        speaker_stats : RunningStatsLike, optional
            The speaker's statistics, as for :meth:`predict`.

        Returns
        -------
        Prediction
            With ``timeline`` a :class:`ser_engine.timeline.Timeline`.

        Raises
        ------
        SERError
            As :meth:`predict` (decoding, limits, :class:`~ser_engine.errors.NoSpeechError`).
        """
        import dataclasses

        from .timeline import predict_timeline

        result = predict_timeline(self, source, speaker_stats=speaker_stats)
        return dataclasses.replace(result.overall, timeline=result)

    def predict(self, source: AudioSource, *, speaker_stats: RunningStatsLike | None = None) -> Prediction:
        """Classify an encoded clip.

        Parameters
        ----------
        source : bytes or path-like
            The file's bytes or its path; any format :func:`~ser_engine.audio.load_audio` decodes.
        speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
            Running statistics of the speaker's raw feature vectors
            (:attr:`Prediction.features` of their earlier clips); used when
            the bundle normalises per speaker and ``n >= min_clips``,
            otherwise ignored.

        Returns
        -------
        Prediction

        Raises
        ------
        ser_engine.errors.AudioError
            Any error of :func:`~ser_engine.audio.load_audio` (empty, too
            large, too long, too short, undecodable, silent).
        NoSpeechError
            If ``detect_speech`` and the detector finds no speech.
        """
        y = load_audio(source, sr=TARGET_SR, limits=self.limits)
        return self._classify(y, speaker_stats)

    def predict_signal(
        self, y: np.ndarray, sr: int = TARGET_SR, *, speaker_stats: RunningStatsLike | None = None
    ) -> Prediction:
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
        speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
            As in :meth:`predict`.

        Returns
        -------
        Prediction

        Raises
        ------
        ValueError
            If ``y`` is not one-dimensional or ``sr`` is not positive.
        EmptyAudioError, AudioTooShortError, AudioTooLongError, SilentAudioError
            If the signal is empty, outside the duration limits, or silent.
        NoSpeechError
            If ``detect_speech`` and the detector finds no speech.
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
        return self._classify(np.ascontiguousarray(y), speaker_stats)

    def warm_up(self, y: np.ndarray, sr: int = TARGET_SR) -> Prediction:
        """Run every stage once, so that the first real request does not pay for loading and caches.

        The speech detector (when ``detect_speech``) loads its model and
        scores ``y`` but does not gate it: warm-up signals are synthetic, and
        the detector rightly finds no speech in them.  Then ``y`` is
        classified as :meth:`predict_signal` would (filter banks, FFT plans).

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Any non-silent mono signal.
        sr : int, default 16000
            Its sample rate in Hz.

        Returns
        -------
        Prediction
            Of no meaning for a synthetic signal.

        Raises
        ------
        ValueError, ser_engine.errors.AudioError
            As :meth:`predict_signal` (except :class:`~ser_engine.errors.NoSpeechError`).
        """
        if self.detect_speech:
            from .vad import default_detector

            x = np.asarray(y, dtype=np.float32)
            if sr != TARGET_SR and sr > 0:
                x = soxr.resample(x, sr, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
            default_detector().speech_seconds(x)
        ungated = copy.copy(self)
        ungated.detect_speech = False
        return ungated.predict_signal(y, sr)

    def classify_features(
        self, features: np.ndarray, *, speaker_stats: RunningStatsLike | None = None, duration_s: float = 0.0
    ) -> Prediction:
        """Classify a raw feature vector of the bundle's :class:`~ser_engine.features.FeatureConfig`.

        Parameters
        ----------
        features : np.ndarray, shape (n_features,)
            From :func:`~ser_engine.features.extract_features`.
        speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
            As in :meth:`predict`.
        duration_s : float, default 0.0
            Reported as :attr:`Prediction.duration_s`.

        Returns
        -------
        Prediction

        Raises
        ------
        ValueError
            If the feature count (of ``features`` or ``speaker_stats``) is wrong.
        """
        features = np.asarray(features, dtype=np.float32).ravel()
        n_features = self.bundle.feature_config.n_features
        if features.size != n_features:
            raise ValueError(f"classify_features: {features.size} features, expected {n_features}")
        normalizer = self.bundle.normalizer
        if normalizer is None:
            X: np.ndarray = features[None, :]
            normalization = "none"
        else:
            X = normalizer.transform(features[None, :], speaker_stats)
            normalization = "speaker" if normalizer.uses_speaker_stats(speaker_stats) else "fallback"
        proba = apply_temperature(self.bundle.pipeline.predict_proba(X), self.bundle.temperature)[0]
        by_label = dict(zip(self._columns, (float(p) for p in proba), strict=True))
        probabilities = {label: by_label.get(label, 0.0) for label in self.labels}
        ranked = sorted(self.labels, key=lambda k: (-probabilities[k], self.labels.index(k)))
        label = ranked[0]
        return Prediction(
            label=label,
            confidence=probabilities[label],
            probabilities=probabilities,
            duration_s=float(duration_s),
            unsure=probabilities[label] < self.unsure_below,
            top_two=tuple(ranked[:2]),
            normalization=normalization,
            features=features,
            model_version=self.model_version,
        )

    def _classify(self, y: np.ndarray, speaker_stats: RunningStatsLike | None = None) -> Prediction:
        if self.detect_speech:
            from .vad import default_detector

            detector = default_detector()
            if not detector.has_speech(y):  # stops scoring once enough speech is found
                raise NoSpeechError(detector.speech_seconds(y), detector.settings.min_speech_s)
        features = extract_features(y=y, sr=TARGET_SR, config=self.bundle.feature_config)
        return self.classify_features(features, speaker_stats=speaker_stats, duration_s=float(y.size / TARGET_SR))

    def __repr__(self) -> str:
        return (
            f"Predictor(labels={self.labels!r}, unsure_below={self.unsure_below}, "
            f"model_version={self.model_version!r}, detect_speech={self.detect_speech})"
        )
