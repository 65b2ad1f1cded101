"""Emotion over time: a timeline of a long voice note.

A long note can start calm and end angry; one label for the whole hides it.
:func:`analyse_timeline` cuts the note, where the voice-activity detector
(:func:`ser_engine.vad.default_detector`) hears speech, into overlapping
windows (3 s every 1.5 s by default, :class:`TimelineSettings`), scores every
window with the same model as the whole note, smooths neighbouring windows
and merges runs of the same emotion into :class:`Segment` s.  The whole
note's own :class:`~ser_engine.predict.Prediction` comes back with them
(:attr:`Timeline.overall`), so a caller gets both from one call.

**One STFT for all windows.**  :class:`FrameTrack` runs the frame-level work
of :func:`ser_engine.features.extract_features` -- the STFT, mel and chroma
filter banks, MFCC, spectral contrast extremes, tonnetz, spectral shape,
zero-crossing rate and the YIN pitch track -- once over the whole note.  A
window's feature vector then only needs what depends on the window: its
active span (``trim_db``), its level gain (``level_dbfs``, which shifts every
dB descriptor by ``20 log10(gain)`` and the first MFCC by ``sqrt(n_mels)``
times that, the DCT being orthonormal), the deltas' edge frames, and the
statistics over time.  The whole note as one window gives the vector of
:func:`~ser_engine.features.extract_features` (``tests/test_timeline.py``);
a window gives the vector of the window's own samples except in the two
edge frames of each descriptor, whose centred STFT frames see the
neighbouring audio instead of zero padding.  ``python -m benchmarks.timeline``
measures the cost against a single prediction of the same note.

References
----------
Overlapping fixed windows with smoothing of the posteriors over time are the
usual way to track emotion in continuous speech, e.g. Schuller et al., "The
INTERSPEECH 2010 paralinguistic challenge" (window-level functionals), and
Ringeval et al., "AVEC 2019 workshop and challenge", ACM MM 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import scipy.fft

from .audio import TARGET_SR, AudioSource, load_audio
from .errors import NoSpeechError
from .features import (
    _AMIN,
    FeatureConfig,
    _active_span,
    _chroma_basis,
    _contrast_extremes,
    _delta,
    _fft_freqs,
    _mel_basis,
    _pitch_track,
    _power_to_db,
    _summarise,
    _tonnetz,
    _voicing,
    _window_energy,
    _zero_crossing_rate,
    extract_features,
    stft_magnitude,
)
from .normalization import RunningStatsLike
from .predict import Prediction, Predictor, apply_temperature

__all__ = [
    "DEFAULT_TIMELINE",
    "FrameTrack",
    "Segment",
    "Timeline",
    "TimelineSettings",
    "TimelineWindow",
    "analyse_timeline",
    "format_clock",
    "predict_timeline",
]

_FLOOR: Final[float] = 1e-30  # power floor of the shared logs (-300 dB): far below _AMIN, so any gain still clips right


@dataclass(frozen=True, slots=True)
class TimelineSettings:
    """How a note is cut into windows and the windows into segments.

    Parameters
    ----------
    window_s : float, default 3.0
        Window length in seconds (about one RAVDESS sentence, what the model was trained on).
    hop_s : float, default 1.5
        Seconds between window starts (half a window: every instant is in two windows).
    min_duration_s : float, default 8.0
        Notes shorter than this get no windows: their timeline is the whole
        note's prediction as one segment (:attr:`Timeline.is_cut` False).
    smoothing : tuple of float, default (1.0, 2.0, 1.0)
        Weights of the previous, the same and the next window in the
        smoothed probabilities of a window (neighbours that are pauses or
        outside the note are left out and the weights renormalised).

    Raises
    ------
    ValueError
        If a duration is not positive, ``hop_s > window_s``, or ``smoothing``
        is not an odd number of non-negative weights with a positive centre.
    """

    window_s: float = 3.0
    hop_s: float = 1.5
    min_duration_s: float = 8.0
    smoothing: tuple[float, ...] = (1.0, 2.0, 1.0)

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and 0 < self.hop_s <= self.window_s and self.min_duration_s >= 0):
            raise ValueError(f"TimelineSettings: need window_s > 0, 0 < hop_s <= window_s, got {self}")
        w = self.smoothing
        if len(w) % 2 != 1 or min(w) < 0 or w[len(w) // 2] <= 0:
            raise ValueError(f"TimelineSettings: smoothing needs an odd number of weights >= 0, centre > 0: {w}")


DEFAULT_TIMELINE: Final[TimelineSettings] = TimelineSettings()
"""The settings of ``ser predict --timeline`` and the bot (3 s windows every 1.5 s, notes of 8 s or more)."""


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    """One scored window.

    Attributes
    ----------
    start_s, end_s : float
        Where the window lies in the note, in seconds.
    speech_s : float
        Seconds of the window in hop-long blocks where the detector heard
        speech (at least its ``min_speech_s`` per block); a window is scored
        when one of its blocks holds speech.
    probabilities : dict of str to float
        The model's (temperature-scaled) probabilities, before smoothing, in the model's label order.
    smoothed : dict of str to float
        After smoothing with the neighbouring windows.
    """

    start_s: float
    end_s: float
    speech_s: float
    probabilities: dict[str, float]
    smoothed: dict[str, float]

    @property
    def label(self) -> str:
        """Most probable emotion after smoothing."""
        return max(self.smoothed, key=self.smoothed.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return {"start_s": self.start_s, "end_s": self.end_s, "speech_s": self.speech_s, "label": self.label,
                "probabilities": dict(self.probabilities), "smoothed": dict(self.smoothed)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the note with one emotion.

    Attributes
    ----------
    start_s, end_s : float
        Seconds from the start of the note (speech, as the detector heard it, inside the windows).
    label : str
        The emotion of the segment's windows (after smoothing).
    confidence : float
        ``probabilities[label]``, in [0, 1].
    probabilities : dict of str to float
        Mean smoothed probabilities of the segment's windows; sums to 1.
    """

    start_s: float
    end_s: float
    label: str
    confidence: float
    probabilities: dict[str, float]

    @property
    def duration_s(self) -> float:
        """``end_s - start_s`` in seconds."""
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: ``start_s``, ``end_s``, ``label``, ``confidence``, ``probabilities``."""
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "label": self.label,
                "confidence": self.confidence, "probabilities": dict(self.probabilities)}  # fmt: skip


def format_clock(seconds: float) -> str:
    """``m:ss`` of a time in seconds (rounded to the nearest second), e.g. ``format_clock(72.4) == "1:12"``."""
    total = max(0, int(round(seconds)))
    return f"{total // 60}:{total % 60:02d}"


@dataclass(frozen=True)
class Timeline:
    """A note's overall emotion and its emotions over time.

    Attributes
    ----------
    overall : Prediction
        The whole note, as :meth:`Predictor.predict_signal` gives it.
    segments : tuple of Segment
        In time order, not overlapping; pauses (windows without enough speech) are gaps.
    windows : tuple of TimelineWindow
        The scored windows (empty when the note is shorter than ``settings.min_duration_s``).
    duration_s : float
        Duration of the note in seconds.
    settings : TimelineSettings
    """

    overall: Prediction
    segments: tuple[Segment, ...]
    windows: tuple[TimelineWindow, ...]
    duration_s: float
    settings: TimelineSettings = field(default=DEFAULT_TIMELINE)

    @property
    def is_cut(self) -> bool:
        """Whether the note was long enough to be cut into windows."""
        return bool(self.windows)

    def dominant(self) -> str:
        """The emotion of the most segment time (the overall label when there are no segments)."""
        totals: dict[str, float] = {}
        for seg in self.segments:
            totals[seg.label] = totals.get(seg.label, 0.0) + seg.duration_s
        if not totals:
            return self.overall.label
        return max(totals, key=lambda k: (totals[k], k == self.overall.label))

    def summary(self, max_items: int = 3) -> str:
        """One line such as ``"mostly calm; angry from 0:12 to 0:18"``.

        Parameters
        ----------
        max_items : int, default 3
            At most this many stretches of other emotions are named (the longest, told in time order).

        Returns
        -------
        str
            ``"<label> throughout"`` when every segment has one emotion.
        """
        main = self.dominant()
        others = [s for s in self.segments if s.label != main]
        if not others:
            return f"{main} throughout"
        keep = sorted(sorted(others, key=lambda s: -s.duration_s)[:max_items], key=lambda s: s.start_s)
        parts = [f"{s.label} from {format_clock(s.start_s)} to {format_clock(s.end_s)}" for s in keep]
        more = len(others) - len(keep)
        return f"mostly {main}; " + ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: the overall prediction's fields, ``summary``, ``segments`` and ``windows``."""
        return {
            **self.overall.to_dict(),
            "summary": self.summary(),
            "segments": [s.to_dict() for s in self.segments],
            "windows": [w.to_dict() for w in self.windows],
            "window_s": self.settings.window_s,
            "hop_s": self.settings.hop_s,
        }


class FrameTrack:
    """The frame-level descriptors of one signal, computed once, summarised over any span of frames.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``config.sr`` Hz, finite.
    config : FeatureConfig
        The model's feature configuration (``sr`` must be 16 kHz or what ``y`` has).

    Attributes
    ----------
    n_frames : int
        ``1 + n_samples // config.hop_length`` frames; frame ``k`` is centred on sample ``k * hop_length``.

    Raises
    ------
    ValueError
        As :func:`~ser_engine.features.stft_magnitude`.

    Notes
    -----
    Memory: about 1.3 kB per frame (100 frames per second) beyond the STFT,
    i.e. 4 MB for a 30 s note.
    """

    def __init__(self, y: np.ndarray, config: FeatureConfig) -> None:
        self.config = c = config
        self.y = y = np.ascontiguousarray(y)
        S = stft_magnitude(y=y, config=c)
        P = np.square(S, dtype=np.float32)
        self.n_frames = S.shape[1]
        frame_power = P.sum(axis=0)
        self.frame_db = 10.0 * np.log10(np.maximum(frame_power, _AMIN))
        self._power_db = 10.0 * np.log10(np.maximum(frame_power, _FLOOR))  # before the gain, floored far below
        groups = set(c.groups)
        if groups & {"mfcc", "mfcc_delta", "mfcc_delta2", "mel"}:
            self._mel = _mel_basis(c.sr, c.n_fft, c.n_mels, c.fmin, c.fmax) @ P
            self._mel_db = 10.0 * np.log10(np.maximum(self._mel, _FLOOR))
            if groups & {"mfcc", "mfcc_delta", "mfcc_delta2"}:
                self._mfcc = scipy.fft.dct(np.maximum(self._mel_db, 10.0 * np.log10(_AMIN)), axis=0, type=2,
                                           norm="ortho")[: c.n_mfcc]  # fmt: skip
        if groups & {"chroma", "tonnetz"}:
            raw = _chroma_basis(c.sr, c.n_fft) @ P
            length = raw.max(axis=0, initial=0.0)
            length[length < np.finfo(raw.dtype).tiny] = 1.0
            self._chroma = raw / length
            if "tonnetz" in groups:
                self._tonnetz = _tonnetz(self._chroma)
        if "contrast" in groups:
            self._peak, self._valley = _contrast_extremes(S, c)
        if "spectral" in groups:
            freqs = _fft_freqs(c.sr, c.n_fft)
            total = S.sum(axis=0) + _AMIN
            centroid = (freqs[:, None] * S).sum(axis=0) / total
            bandwidth = np.sqrt(((freqs[:, None] - centroid) ** 2 * S).sum(axis=0) / total)
            cum = np.cumsum(P, axis=0)
            rolloff = freqs[np.argmax(cum >= 0.85 * cum[-1:], axis=0)]
            # Flatness is a ratio of powers, the same after the gain unless a bin is below 1e-10 before or
            # after it; such frames are recomputed per window from the floored log (``_flatness``).
            self._log_p = np.log(np.maximum(P, _FLOOR))
            self._min_log_p = self._log_p.min(axis=0)
            self._mean_p = P.mean(axis=0)
            flatness = np.exp(np.maximum(self._log_p, np.log(_AMIN)).mean(axis=0)) / np.maximum(self._mean_p, _AMIN)
            zcr = _zero_crossing_rate(y, frame_length=c.n_fft, hop_length=c.hop_length)[: self.n_frames]
            self._shape = np.vstack([centroid / 1000.0, bandwidth / 1000.0, rolloff / 1000.0, flatness, zcr])
        if "prosody" in groups:
            self._f0 = _pitch_track(y, c)

    def features(self, start: int = 0, stop: int | None = None, *, exact: bool = True) -> np.ndarray:
        """The feature vector of frames ``start:stop``, as :func:`~ser_engine.features.extract_features` makes it.

        Parameters
        ----------
        start, stop : int
            Frame indices (``stop`` exclusive, default the last frame);
            frames of a window of samples ``[s, s + L)`` with ``s`` a multiple
            of ``hop_length`` are ``s // hop`` to ``s // hop + 1 + L // hop``.
        exact : bool, default True, keyword-only
            False sorts in float32 for the percentiles, minimum and maximum
            (3.5 times faster sorts; float64 descriptors then differ by float32
            rounding, 6e-8 relative), as the timeline's windows do.

        Returns
        -------
        np.ndarray, shape (config.n_features,), float32
            Finite values, in the layout of ``config.feature_names()``.

        Raises
        ------
        ValueError
            If the span is empty or outside the track.
        """
        c = self.config
        stop = self.n_frames if stop is None else stop
        if not 0 <= start < stop <= self.n_frames:
            raise ValueError(f"FrameTrack.features: frames {start}:{stop} outside 0:{self.n_frames}")
        frame_db = self.frame_db[start:stop]
        span = _active_span(frame_db, c.trim_db)
        a, b = start + span.start, start + span.stop
        gain_db = 0.0
        if c.level_dbfs is not None:
            kept = frame_db[span]
            loud = kept[kept >= kept.max() - 30.0]
            power = float(np.mean(10.0 ** (loud / 10.0)))
            level = 10.0 * np.log10(max(2.0 * power / (c.n_fft * _window_energy(c.win_length)), _AMIN))
            gain_db = c.level_dbfs - level  # 20 log10(gain)
        floor_db = 10.0 * np.log10(_AMIN)
        T = b - a
        mel_db = None
        if hasattr(self, "_mel"):
            mel_db = np.maximum(self._mel_db[:, a:b] + gain_db, floor_db)
        mfcc = None
        if hasattr(self, "_mfcc"):
            assert mel_db is not None
            if (self._mel_db[:, a:b] + gain_db >= floor_db).all() and (self._mel_db[:, a:b] >= floor_db).all():
                # No band clipped at 1e-10 before or after the gain: the gain only moves the DCT's first
                # coefficient, by sqrt(n_mels) * gain_db (orthonormal DCT-II of a constant).
                mfcc = self._mfcc[:, a:b].copy()
                mfcc[0] += gain_db * np.sqrt(c.n_mels)
            else:
                mfcc = scipy.fft.dct(mel_db, axis=0, type=2, norm="ortho")[: c.n_mfcc]
        width = 9 if T >= 9 else (T if T % 2 == 1 else T - 1)
        rows: list[np.ndarray] = []
        for group in c.groups:
            if group == "mfcc":
                rows.append(mfcc)
            elif group in ("mfcc_delta", "mfcc_delta2"):
                order = 1 if group == "mfcc_delta" else 2
                rows.append(_delta(mfcc, width=width, order=order) if width >= 3 else np.zeros_like(mfcc))
            elif group == "mel":
                rows.append(mel_db if c.log_mel else self._mel[:, a:b] * np.float32(10.0 ** (gain_db / 10.0)))
            elif group == "chroma":
                rows.append(self._chroma[:, a:b])
            elif group == "contrast":
                g = 10.0 ** (gain_db / 20.0)
                rows.append(_power_to_db(self._peak[:, a:b] * g, top_db=80.0)
                            - _power_to_db(self._valley[:, a:b] * g, top_db=80.0))  # fmt: skip
            elif group == "tonnetz":
                rows.append(self._tonnetz[:, a:b])
            elif group == "spectral":
                rms_db = np.maximum(self._power_db[a:b] + gain_db, floor_db)
                shape = self._shape[:, a:b]
                ln_gain, ln_amin = gain_db * np.log(10.0) / 10.0, np.log(_AMIN)  # ln(gain^2), ln(1e-10)
                low = np.flatnonzero(np.minimum(self._min_log_p[a:b], self._min_log_p[a:b] + ln_gain) < ln_amin)
                if low.size:
                    shape = shape.copy()
                    logs = np.maximum(self._log_p[:, a + low] + ln_gain, ln_amin).mean(axis=0)
                    shape[3, low] = np.exp(logs) / np.maximum(self._mean_p[a + low] * np.exp(ln_gain), _AMIN)
                rows.append(np.vstack([shape, rms_db[None, :]]))
        sort_dtype = np.float64 if exact else np.float32
        parts = [_summarise(np.vstack(rows), c.stats, sort_dtype)] if rows else []
        if "prosody" in c.groups:
            f0_row, voiced_ratio, onsets_per_s = _voicing(self._f0[a:b], self.frame_db[a:b], c)
            parts += [_summarise(f0_row, c.stats, sort_dtype), np.array([voiced_ratio, onsets_per_s])]
        out = np.concatenate(parts).astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _probabilities(predictor: Predictor, X: np.ndarray, speaker_stats: RunningStatsLike | None) -> np.ndarray:
    """Temperature-scaled probabilities of raw feature rows, columns in ``predictor.labels`` order: (n, n_labels)."""
    bundle = predictor.bundle
    Z = X if bundle.normalizer is None else bundle.normalizer.transform(X, speaker_stats)
    proba = apply_temperature(bundle.pipeline.predict_proba(np.asarray(Z, dtype=np.float32)), bundle.temperature)
    out = np.zeros((X.shape[0], len(predictor.labels)))
    for j, cls in enumerate(bundle.pipeline.classes_):
        out[:, predictor.labels.index(bundle.labels[int(cls)])] = proba[:, j]
    return out


def _smooth(proba: np.ndarray, kept: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of each kept window's probabilities with its kept neighbours: (n, C) -> (n, C)."""
    half = len(weights) // 2
    out = np.zeros_like(proba)
    for i in np.flatnonzero(kept):
        total = np.zeros(proba.shape[1])
        wsum = 0.0
        for k, w in enumerate(weights):
            j = i + k - half
            if 0 <= j < len(kept) and kept[j] and w > 0:
                if all(kept[min(i, j) : max(i, j) + 1]):  # no pause in between
                    total += w * proba[j]
                    wsum += w
        out[i] = total / wsum
    return out


def analyse_timeline(
    y: np.ndarray,
    predictor: Predictor,
    *,
    speaker_stats: RunningStatsLike | None = None,
    settings: TimelineSettings = DEFAULT_TIMELINE,
) -> Timeline:
    """The overall emotion and the timeline of a decoded 16 kHz note, from one STFT.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at 16 kHz without DC offset (e.g. from :func:`~ser_engine.audio.load_audio`).
    predictor : Predictor
        The model; its ``detect_speech`` decides whether a note without speech is refused.
    speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
        The speaker's running statistics, for the note and every window alike (see :meth:`Predictor.predict`).
    settings : TimelineSettings, default DEFAULT_TIMELINE

    Returns
    -------
    Timeline
        ``overall`` is the prediction of the whole note (its ``features`` set,
        for the speaker's statistics); notes shorter than
        ``settings.min_duration_s`` get one segment, the whole note, and
        exactly the prediction of :meth:`Predictor.predict_signal` (for
        longer notes the whole note's vector comes from the shared frame
        track: the same up to float rounding, 1e-4 relative).

    Raises
    ------
    NoSpeechError
        If ``predictor.detect_speech`` and the detector finds less speech than its minimum.
    ValueError
        If ``y`` is not a finite 1-D floating-point signal.
    """
    from .vad import default_detector

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"analyse_timeline: need a 1-D signal, got shape {y.shape}")
    y = np.ascontiguousarray(y)  # as decoded: load_audio has removed any DC offset (Predictor.predict does the same)
    config = predictor.bundle.feature_config
    sr, hop = TARGET_SR, config.hop_length
    duration = y.size / sr
    detector = default_detector()
    hop_frames = max(1, int(round(settings.hop_s * sr / hop)))
    window_frames = max(hop_frames, int(round(settings.window_s * sr / hop)))
    per_window = -(-window_frames // hop_frames)  # blocks of one hop in a window
    block = hop_frames * hop  # samples
    n_blocks = -(-y.size // block)
    cut = duration >= settings.min_duration_s and n_blocks > per_window
    if not cut:  # a short note: exactly what Predictor.predict_signal gives, as one segment
        if predictor.detect_speech and not detector.has_speech(y):
            raise NoSpeechError(detector.speech_seconds(y), detector.settings.min_speech_s)
        features = extract_features(y=y, sr=sr, config=config)
        whole = predictor.classify_features(features, speaker_stats=speaker_stats, duration_s=duration)
        only = Segment(0.0, float(duration), whole.label, whole.confidence, dict(whole.probabilities))
        return Timeline(overall=whole, segments=(only,), windows=(), duration_s=duration, settings=settings)
    track = FrameTrack(y, config)
    trim_db = config.trim_db if config.trim_db is not None else 40.0
    note_max_db = float(track.frame_db.max())

    def loud(a: int, b: int) -> np.ndarray:
        """Frames a:b within trim_db (40 dB) of the loudest of them: what the features of a:b keep."""
        db = track.frame_db[a:b]
        return db >= db.max() - trim_db

    # Speech per block of one hop: the detector scores each block from its first loud frame (less 0.1 s) and
    # stops once it has heard its minimum of speech (8 frames of 32 ms at a time): a third of a pass on speech.
    # A block 60 dB below the note's loudest frame (digital silence, a muted stretch) is a pause unscored.
    def block_has_speech(i: int) -> bool:
        a, b = i * hop_frames, min(track.n_frames, (i + 1) * hop_frames)
        if a >= b or track.frame_db[a:b].max() < note_max_db - 60.0:
            return False
        first = max(i * block, (a + int(np.argmax(loud(a, b)))) * hop - sr // 10)
        return detector.has_speech(y[first : (i + 1) * block], 8)

    block_speech = np.array([block_has_speech(i) for i in range(n_blocks)] if cut else [], dtype=bool)
    if predictor.detect_speech and not block_speech.any() and not detector.has_speech(y):
        raise NoSpeechError(detector.speech_seconds(y), detector.settings.min_speech_s)
    cut = cut and bool(block_speech.any())

    spans: list[tuple[int, int]] = [(0, track.n_frames)]
    n_windows = n_blocks - per_window + 1 if cut else 0
    kept = np.array([block_speech[j : j + per_window].any() for j in range(n_windows)], dtype=bool)
    scored = np.flatnonzero(kept)
    spans += [(int(j) * hop_frames, min(track.n_frames, int(j) * hop_frames + window_frames + 1)) for j in scored]
    X = np.vstack([track.features(a, b, exact=i == 0) for i, (a, b) in enumerate(spans)])
    proba = np.zeros((n_windows, len(predictor.labels)))
    all_proba = _probabilities(predictor, X, speaker_stats)
    proba[scored] = all_proba[1:]
    whole = predictor.classify_features(X[0], speaker_stats=speaker_stats, duration_s=duration)
    labels = predictor.labels

    def as_dict(p: np.ndarray) -> dict[str, float]:
        return {label: float(v) for label, v in zip(labels, p, strict=True)}

    def trim(lo: float, hi: float) -> tuple[float, float]:
        a, b = int(np.ceil(lo * sr / hop)), min(track.n_frames, int(hi * sr / hop) + 1)
        on = np.flatnonzero(loud(a, b)) if a < b else np.zeros(0, int)
        return (lo, hi) if not on.size else (max(lo, (a + on[0]) * hop / sr), min(hi, (a + on[-1]) * hop / sr))

    windows: list[TimelineWindow] = []
    segments: list[Segment] = []
    if cut:
        starts = [j * block / sr for j in range(n_windows)]
        ends = [min(duration, (j * hop_frames + window_frames) * hop / sr) for j in range(n_windows)]
        smoothed = _smooth(proba, kept, settings.smoothing)
        for j in scored:
            speech_s = float(sum(block_speech[j : j + per_window]) * settings.hop_s)
            windows.append(TimelineWindow(starts[j], ends[j], speech_s, as_dict(proba[j]), as_dict(smoothed[j])))
        # Window j owns the time between the midpoints to its neighbours; runs of one label become segments,
        # their outer ends (next to a pause or the note's ends) pulled in to where the note is loud.
        centre = [(s + e) / 2 for s, e in zip(starts, ends, strict=True)]
        run: list[int] = []
        for n, j in enumerate(scored):
            run.append(int(j))
            nxt = scored[n + 1] if n + 1 < scored.size else None
            if nxt == j + 1 and smoothed[nxt].argmax() == smoothed[j].argmax():
                continue
            j0, j1 = run[0], run[-1]
            outer_lo, outer_hi = j0 == 0 or not kept[j0 - 1], j1 == n_windows - 1 or not kept[j1 + 1]
            lo = starts[j0] if outer_lo else (centre[j0 - 1] + centre[j0]) / 2
            hi = ends[j1] if outer_hi else (centre[j1] + centre[j1 + 1]) / 2
            t_lo, t_hi = trim(lo, hi)
            lo, hi = (t_lo if outer_lo else lo), (t_hi if outer_hi else hi)
            mean = smoothed[run].mean(axis=0)
            label = labels[int(smoothed[j].argmax())]
            segments.append(Segment(float(lo), float(min(hi, duration)), label, float(mean[labels.index(label)]),
                                    as_dict(mean)))  # fmt: skip
            run = []
    else:
        lo, hi = trim(0.0, duration)
        segments.append(Segment(float(lo), float(hi), whole.label, whole.confidence, dict(whole.probabilities)))
    return Timeline(overall=whole, segments=tuple(segments), windows=tuple(windows), duration_s=duration,
                    settings=settings)  # fmt: skip


def predict_timeline(
    predictor: Predictor,
    source: AudioSource,
    *,
    speaker_stats: RunningStatsLike | None = None,
    settings: TimelineSettings = DEFAULT_TIMELINE,
) -> Timeline:
    """Decode a file (with the predictor's limits) and run :func:`analyse_timeline` on it.

    Parameters
    ----------
    predictor : Predictor
    source : bytes or path-like
        Any format :func:`~ser_engine.audio.load_audio` decodes.
    speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
    settings : TimelineSettings, default DEFAULT_TIMELINE

    Returns
    -------
    Timeline

    Raises
    ------
    ser_engine.errors.AudioError
        As :meth:`Predictor.predict` (undecodable, too long, silent, no speech...).
    """
    y = load_audio(source, sr=TARGET_SR, limits=predictor.limits)
    return analyse_timeline(y, predictor, speaker_stats=speaker_stats, settings=settings)
