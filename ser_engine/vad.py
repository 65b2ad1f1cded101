"""Voice-activity detection: is there speech in a clip, and where?

Two detectors give a speech score per frame of a 16 kHz mono signal:

:class:`SileroVad`
    Silero VAD v6 (Silero Team (2024), "Silero VAD: pre-trained
    enterprise-grade Voice Activity Detector", https://github.com/snakers4/silero-vad,
    MIT licence), a small recurrent network run by ``onnxruntime``: one
    probability per 32 ms frame (512 samples, each seen with the 64 samples
    before it).  The ``silero-vad`` 6.2.3 wheel on PyPI ships the ONNX model
    ``silero_vad_16k_sequence.onnx``, which runs a whole block of frames in
    one call, but the package requires torch; the engine carries that file
    (1.2 MB, in ``ser_engine/assets`` with Silero's MIT licence) and runs it
    with ``onnxruntime`` alone (see :func:`silero_model_path`).
:class:`WebRtcVad`
    The Gaussian-mixture VAD of the WebRTC project (``webrtcvad-wheels``):
    a 0/1 decision per 30 ms frame at an aggressiveness of 0-3.

:class:`SpeechDetector` turns frame scores into a decision: frames scoring at
least ``threshold`` are speech; runs shorter than ``min_run_s`` are dropped
(isolated clicks, a tone's onset); the clip holds speech if at least
``min_speech_s`` of speech remains.  :func:`default_detector` is the one the
engine uses: Silero, chosen by ``python -m benchmarks.vad`` (see
:data:`DEFAULT_SETTINGS` for the figures).  WebRTC's detector calls most
tones, sweeps, clicks and music speech: at its most aggressive setting it
refused 47 % / 58 % of the generated non-speech clips (seeds 0 / 1) with the
same settings, and at most 69 % over the settings tried, against 98 % for
Silero.  Silero costs more: 10.7 ms of CPU to score a whole 5 s clip against
0.5 ms; the gate (:meth:`SpeechDetector.has_speech`) stops once it has
enough speech, 4 ms on a 5 s voice note.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np

from .audio import TARGET_SR

__all__ = [
    "DEFAULT_SETTINGS",
    "FrameScorer",
    "SileroVad",
    "SpeechDetector",
    "VadSettings",
    "WebRtcVad",
    "default_detector",
    "silero_model_path",
]

SILERO_MODEL: Final[Path] = Path(__file__).resolve().parent / "assets" / "silero_vad_16k_sequence.onnx"
"""Silero VAD's sequence model, copied from the ``silero-vad`` 6.2.3 wheel's ``silero_vad/data`` folder."""

SILERO_MODEL_SHA256: Final[str] = "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"
"""SHA-256 of :data:`SILERO_MODEL` as the wheel ships it."""


class FrameScorer(Protocol):
    """Anything giving a speech score in [0, 1] per frame of a 16 kHz signal."""

    frame_s: float

    def frame_scores(self, y: np.ndarray) -> np.ndarray:
        """Speech score per frame; shape (ceil(n_samples / frame samples),)."""
        ...

    def iter_frame_scores(self, y: np.ndarray, block_frames: int) -> Iterator[np.ndarray]:
        """The same scores, ``block_frames`` at a time, computed only as far as they are consumed."""
        ...


def silero_model_path() -> Path:
    """Where Silero's sequence ONNX model is: ``SER_SILERO_MODEL`` if set, else :data:`SILERO_MODEL`.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(os.environ.get("SER_SILERO_MODEL") or SILERO_MODEL)
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model not found at {path}")
    return path


class SileroVad:
    """Silero VAD's speech probability per 32 ms frame, through ``onnxruntime``.

    Parameters
    ----------
    model_path : str or os.PathLike, optional
        The sequence ONNX model (default :func:`silero_model_path`).

    Raises
    ------
    FileNotFoundError
        If the model is missing.
    ImportError
        If ``onnxruntime`` is missing.
    """

    frame_s: float = 512 / TARGET_SR
    _FRAME: Final[int] = 512
    _CONTEXT: Final[int] = 64  # samples of the previous frame fed with each frame (Silero's 16 kHz setting)
    _BLOCK: Final[int] = 512  # frames per ONNX call (16.4 s): bounds the call's memory

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: the engine runs one analysis per worker process; more threads only contend for the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = Path(model_path) if model_path is not None else silero_model_path()
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def frame_scores(self, y: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz, full scale 1.0.

        Returns
        -------
        np.ndarray, shape (ceil(n_samples / 512),), float32
            In [0, 1]; the last frame is zero-padded.
        """
        blocks = list(self.iter_frame_scores(y, self._BLOCK))
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)

    def iter_frame_scores(self, y: np.ndarray, block_frames: int = 32) -> Iterator[np.ndarray]:
        """Speech probabilities ``block_frames`` frames at a time, the recurrent state carried between blocks.

        The sequence model gives the same probabilities whatever the block
        size (its recurrent state is an input and an output), so a caller
        may stop early without changing what it has seen.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz, full scale 1.0.
        block_frames : int, default 32
            Frames per ONNX call (32: about 1 s).

        Yields
        ------
        np.ndarray, shape (<= block_frames,), float32
        """
        x = np.asarray(y, dtype=np.float32).ravel()
        n_frames = -(-x.size // self._FRAME)
        if n_frames == 0:
            return
        frames = np.zeros((n_frames, self._FRAME), np.float32)
        frames.reshape(-1)[: x.size] = x
        context = np.zeros((n_frames, self._CONTEXT), np.float32)
        context[1:] = frames[:-1, -self._CONTEXT :]
        rows = np.concatenate([context, frames], axis=1)
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        step = max(1, min(int(block_frames), self._BLOCK))
        for start in range(0, n_frames, step):
            probs, h, c = self._session.run(
                ["speech_probs", "hn", "cn"], {"input": rows[start : start + step], "h": h, "c": c}
            )
            yield np.asarray(probs, np.float32).reshape(-1)


class WebRtcVad:
    """WebRTC's voice-activity decision per frame (``webrtcvad-wheels``), as 0.0 or 1.0.

    Parameters
    ----------
    aggressiveness : int, default 3
        0 (least) to 3 (most ready to call a frame non-speech).
    frame_ms : int, default 30
        10, 20 or 30 ms frames (what the detector accepts).

    Raises
    ------
    ValueError
        If ``aggressiveness`` or ``frame_ms`` is out of range.
    """

    def __init__(self, aggressiveness: int = 3, frame_ms: int = 30) -> None:
        import webrtcvad

        if aggressiveness not in (0, 1, 2, 3) or frame_ms not in (10, 20, 30):
            raise ValueError(f"WebRtcVad: aggressiveness 0-3 and frame_ms 10/20/30, got {aggressiveness}, {frame_ms}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._n = TARGET_SR * frame_ms // 1000
        self.frame_s = frame_ms / 1000

    def frame_scores(self, y: np.ndarray) -> np.ndarray:
        """1.0 for each frame the detector calls speech, else 0.0.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz, full scale 1.0; converted to 16-bit PCM.

        Returns
        -------
        np.ndarray, shape (ceil(n_samples / frame samples),), float32
        """
        x = np.asarray(y, dtype=np.float32).ravel()
        n_frames = -(-x.size // self._n)
        pcm = np.zeros(n_frames * self._n, np.int16)
        pcm[: x.size] = np.clip(np.round(x * 32767), -32768, 32767)
        data = pcm.tobytes()
        step = 2 * self._n
        return np.array(
            [self._vad.is_speech(data[i * step : (i + 1) * step], TARGET_SR) for i in range(n_frames)], np.float32
        )

    def iter_frame_scores(self, y: np.ndarray, block_frames: int = 32) -> Iterator[np.ndarray]:
        """:meth:`frame_scores` in blocks of ``block_frames`` (computed at once: 0.5 ms per 5 s)."""
        scores = self.frame_scores(y)
        step = max(1, int(block_frames))
        for start in range(0, scores.size, step):
            yield scores[start : start + step]


@dataclass(frozen=True)
class VadSettings:
    """How frame scores become a decision.

    Attributes
    ----------
    threshold : float
        Frames scoring at least this are speech.
    min_run_s : float
        Speech runs shorter than this (seconds) are dropped.
    min_speech_s : float
        A clip holds speech if its remaining speech frames last at least this long (seconds).
    """

    threshold: float = 0.5
    min_run_s: float = 0.1
    min_speech_s: float = 0.3


DEFAULT_SETTINGS: Final[VadSettings] = VadSettings(threshold=0.15, min_run_s=0.064, min_speech_s=0.25)
"""Settings of :func:`default_detector`.

Chosen on the generated non-speech set of seed 0 (:mod:`benchmarks.nonspeech`,
220 clips) and the 1440 RAVDESS clips, then checked on the held-out set of
seed 1 (``python -m benchmarks.vad``): Silero's default threshold 0.5
refused 14 RAVDESS clips (1 %), most of them Actor 06's shouted and fearful
strong takes, which score 0.2-0.9 at their peak.  At 0.15, with runs of at
least two frames (64 ms) and 0.25 s of speech in all, it refused 98.6 % /
98.2 % of the non-speech clips (seeds 0 / 1; what passes is synthetic
music) and accepted 99.58 % of RAVDESS (6 of 1440 refused) and 298 of 300
clips of the five other corpora (60 each).
"""



def _runs_of(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` frame indices (stop exclusive) of each run of True in ``flags``, shape (n_frames,)."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


class SpeechDetector:
    """Decide whether a clip holds speech, and where, from a frame scorer.

    Parameters
    ----------
    scorer : FrameScorer
        :class:`SileroVad` or :class:`WebRtcVad`.
    settings : VadSettings, default DEFAULT_SETTINGS

    Notes
    -----
    Holds no per-call state: :class:`SileroVad` starts each clip from a zero
    recurrent state, so one detector may serve several threads.
    """

    def __init__(self, scorer: FrameScorer, settings: VadSettings = DEFAULT_SETTINGS) -> None:
        self.scorer = scorer
        self.settings = settings

    def speech_frames(self, y: np.ndarray) -> np.ndarray:
        """Which frames are speech, after dropping runs shorter than ``min_run_s``.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz.

        Returns
        -------
        np.ndarray, shape (n_frames,), bool
            Frames of ``scorer.frame_s`` seconds.
        """
        return self._runs(self.scorer.frame_scores(y))

    def _runs(self, scores: np.ndarray) -> np.ndarray:
        speech = scores >= self.settings.threshold
        min_run = max(1, round(self.settings.min_run_s / self.scorer.frame_s))
        if min_run > 1 and speech.any():
            for a, b in _runs_of(speech):
                if b - a < min_run:
                    speech[a:b] = False
        return speech

    def speech_segments(self, y: np.ndarray) -> list[tuple[float, float]]:
        """Start and end times in seconds of the speech runs of :meth:`speech_frames`.

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz.

        Returns
        -------
        list of (float, float)
            In order; ends are clipped to the signal's duration.
        """
        frame, duration = self.scorer.frame_s, np.asarray(y).size / TARGET_SR
        return [(float(a * frame), float(min(b * frame, duration))) for a, b in _runs_of(self.speech_frames(y))]

    def speech_seconds(self, y: np.ndarray) -> float:
        """Seconds of speech in the clip (frames of :meth:`speech_frames`)."""
        return float(self.speech_frames(y).sum() * self.scorer.frame_s)

    def has_speech(self, y: np.ndarray, block_frames: int = 32) -> bool:
        """Whether the clip holds at least ``min_speech_s`` of speech.

        Scores about 1 s at a time and stops as soon as enough speech is
        found: the runs kept so far only grow as frames are added, so the
        answer is the one of :meth:`speech_seconds` on the whole clip, at a
        fraction of the cost for speech (a 5 s voice note: 12 ms of CPU for
        the whole clip, measured with one BLAS thread).

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono signal at 16 kHz.
        block_frames : int, default 32
            Frames scored between checks (32: about 1 s; fewer stop sooner
            on speech, at some cost per call; the answer is the same).

        Returns
        -------
        bool
        """
        blocks: list[np.ndarray] = []
        for block in self.scorer.iter_frame_scores(y, block_frames):
            blocks.append(block)
            if self._runs(np.concatenate(blocks)).sum() * self.scorer.frame_s >= self.settings.min_speech_s:
                return True
        return False


@functools.lru_cache(maxsize=1)
def default_detector() -> SpeechDetector:
    """The engine's detector: Silero VAD with :data:`DEFAULT_SETTINGS`, one per process.

    Returns
    -------
    SpeechDetector

    Raises
    ------
    FileNotFoundError, ImportError
        As :class:`SileroVad`.
    """
    return SpeechDetector(SileroVad(), DEFAULT_SETTINGS)
