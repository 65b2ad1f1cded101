"""Log-mel frames: the input of the temporal model.

The same STFT (512-point FFT, 400-sample Hann window, 160-sample hop at
16 kHz: 25 ms windows every 10 ms), the same mel filter bank (librosa's
Slaney mel scale, tested against librosa in tests/test_features.py) and the
same silence trimming (frames within ``trim_db`` of the loudest kept) as
:func:`ser_engine.features.extract_features`, so both models see the same
signal.  Each band is then centred on its own mean over the clip (cepstral
mean normalisation, in the log-mel domain: removes the level and the
microphone's fixed colouring, Furui 1981, "Cepstral analysis technique for
automatic speaker verification", IEEE TASSP 29(2)); the network scales the
result itself (a batch-norm layer on its input).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from ..audio import TARGET_SR, AudioLimits
from ..features import FeatureConfig, _active_span, _mel_basis, stft_magnitude

__all__ = ["FRAMES_VERSION", "FrameConfig", "clip_frames", "log_mel_frames"]

#: Layout version of the frames (part of the cache key and of a saved model's sidecar).
FRAMES_VERSION: Final[int] = 1

_AMIN: Final[float] = 1e-10


@dataclass(frozen=True)
class FrameConfig:
    """What :func:`log_mel_frames` computes.

    Parameters
    ----------
    sr : int, default 16000
        Sample rate in Hz.
    n_fft, win_length, hop_length : int, default 512 / 400 / 160
        STFT size, Hann window and hop in samples (25 ms / 10 ms at 16 kHz),
        as :class:`ser_engine.features.FeatureConfig`.
    n_mels : int, default 64
        Mel bands (Slaney scale, 0 Hz to sr / 2).
    trim_db : float or None, default 40.0
        Keep the frames from the first to the last one within this many dB
        of the loudest (None: keep all).
    max_frames : int, default 3000
        At most this many frames (30 s) are kept, from the start.

    Raises
    ------
    ValueError
        If a size is not positive or the window is longer than the FFT.
    """

    sr: int = TARGET_SR
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    trim_db: float | None = 40.0
    max_frames: int = 3000

    def __post_init__(self) -> None:
        if min(self.sr, self.n_fft, self.win_length, self.hop_length, self.n_mels, self.max_frames) < 1:
            raise ValueError(f"FrameConfig: sizes must be positive, got {self}")
        if self.win_length > self.n_fft:
            raise ValueError(f"FrameConfig: win_length {self.win_length} > n_fft {self.n_fft}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON form), with :data:`FRAMES_VERSION` as ``"version"``."""
        return {**asdict(self), "version": FRAMES_VERSION}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameConfig:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            If ``data["version"]`` is not :data:`FRAMES_VERSION` or a field is unknown.
        """
        data = dict(data)
        version = data.pop("version", FRAMES_VERSION)
        if version != FRAMES_VERSION:
            raise ValueError(f"FrameConfig: frames version {version}, this code computes {FRAMES_VERSION}")
        return cls(**data)

    def _stft_config(self) -> FeatureConfig:
        return FeatureConfig(sr=self.sr, n_fft=self.n_fft, win_length=self.win_length, hop_length=self.hop_length,
                             n_mels=self.n_mels)  # fmt: skip


def log_mel_frames(y: np.ndarray, config: FrameConfig | None = None) -> np.ndarray:
    """Mean-normalised log-mel frames of one clip.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``config.sr`` Hz, finite.
    config : FrameConfig, optional
        Default ``FrameConfig()``.

    Returns
    -------
    np.ndarray, shape (n_frames, config.n_mels), float32
        Log power in dB (10 log10) of each mel band, minus that band's mean
        over the kept frames; ``1 <= n_frames <= config.max_frames``.

    Raises
    ------
    ValueError
        If ``y`` is not a finite one-dimensional floating-point signal.
    """
    config = config or FrameConfig()
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating) and y.size < config.n_fft:
        y = np.pad(y, (0, config.n_fft - y.size))
    S = stft_magnitude(y=y, config=config._stft_config())
    P = np.square(S, dtype=np.float32)
    frame_db = 10.0 * np.log10(np.maximum(P.sum(axis=0), _AMIN))
    span = _active_span(frame_db, config.trim_db)
    P = P[:, span][:, : config.max_frames]
    mel = _mel_basis(config.sr, config.n_fft, config.n_mels, 0.0, None).astype(np.float32) @ P
    log_mel = 10.0 * np.log10(np.maximum(mel, np.float32(_AMIN)))
    log_mel -= log_mel.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(log_mel.T, dtype=np.float32)


def _clip_frames(path: str, conditions: Sequence[str], seed: int, config: FrameConfig,
                 limits: AudioLimits | None) -> list[np.ndarray]:  # fmt: skip
    from ..audio import load_audio
    from ..augment import apply_condition

    y = load_audio(path, limits=limits)
    return [log_mel_frames(apply_condition(y, c, seed=seed), config) for c in conditions]


def clip_frames(
    paths: Sequence[str | os.PathLike[str]],
    conditions: Sequence[str] = ("clean",),
    *,
    config: FrameConfig | None = None,
    n_jobs: int = 1,
    limits: AudioLimits | None = None,
    progress: bool = False,
) -> dict[str, list[np.ndarray]]:
    """Log-mel frames of audio files, clean and degraded.

    Each file is decoded once (:func:`ser_engine.audio.load_audio`) and
    every condition of :data:`ser_engine.augment.CONDITIONS` is applied to
    that signal, with seed = the file's index (as
    :func:`ser_engine.training.featurize_conditions` does for the MLP's
    features, so both models train on the same degraded copies).

    Parameters
    ----------
    paths : sequence of path-like
        Audio files.
    conditions : sequence of str, default ("clean",)
        E.g. ``("clean", "opus24k", "noise20", "pitch+1")``.
    config : FrameConfig, optional
    n_jobs : int, default 1
        joblib worker processes.
    limits : AudioLimits, optional
        Decoding limits.
    progress : bool, default False
        A tqdm bar on stderr.

    Returns
    -------
    dict of str to list of np.ndarray, each shape (n_frames_i, n_mels), float32
        Per condition, item ``i`` belongs to ``paths[i]``.

    Raises
    ------
    ValueError
        If a condition is unknown.
    ser_engine.errors.AudioError
        If a file cannot be decoded.
    """
    from ..augment import condition_parts

    config = config or FrameConfig()
    conditions = list(dict.fromkeys(conditions))
    for condition in conditions:
        condition_parts(condition)
    from tqdm.auto import tqdm

    args = [(str(p), conditions, i, config, limits) for i, p in enumerate(paths)]
    it = tqdm(args, desc="log-mel frames", unit="clip", disable=not progress)
    if n_jobs == 1 or len(args) < 2:
        rows = [_clip_frames(*a) for a in it]
    else:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=n_jobs, batch_size=8)(delayed(_clip_frames)(*a) for a in it)
    return {c: [row[k] for row in rows] for k, c in enumerate(conditions)}
