"""Live emotion: a rolling window over a stream of audio (``ser listen``).

:class:`RollingAnalyser` takes audio as it arrives (any chunk size, 16 kHz
mono) and, every ``step_s`` (0.5 s) of audio, classifies the last ``window_s``
(3 s) with the same model, features and speech gate as ``ser predict``.
Between those updates it checks every ``check_s`` (0.05 s) whether speech has
just begun (the detector hears its minimum, 0.25 s, of speech in the last
second) and then updates at once, so a label follows the start of speech by
about 0.25 s of speech plus at most ``check_s`` plus the computation, not by up
to a whole step (``python -m benchmarks.listen`` measures it).

Sources: :func:`file_chunks` plays a decoded file through the same path in
real time (or ``speed`` times faster), which is how the tests drive it;
:func:`microphone_chunks` reads the local microphone with ``sounddevice``
(PortAudio; the optional extra ``pip install .[listen]``), resampled to
16 kHz with soxr.  :class:`MicrophoneUnavailable` says in one line why there
is no microphone (no ``sounddevice``, no PortAudio library, no input device).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from .audio import TARGET_SR
from .features import extract_features
from .normalization import RunningStatsLike
from .predict import Predictor

__all__ = ["ListenUpdate", "MicrophoneUnavailable", "RollingAnalyser", "file_chunks", "microphone_chunks"]

_MIN_WINDOW_S: Final[float] = 0.3  # shortest audio classified (AudioLimits' min_duration_s)


@dataclass(frozen=True, slots=True)
class ListenUpdate:
    """One update of the rolling window.

    Attributes
    ----------
    t_s : float
        Stream time in seconds at the end of the window.
    window_s : float
        Seconds of audio in the window (less than ``window_s`` at the start).
    speech : bool
        Whether the detector heard its minimum of speech in the window.
    label, confidence, probabilities
        The model's answer for the window; None without speech.
    compute_ms : float
        CPU milliseconds this update took (detector, features, model).
    """

    t_s: float
    window_s: float
    speech: bool
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    compute_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return {"t_s": round(self.t_s, 3), "window_s": round(self.window_s, 3), "speech": self.speech,
                "label": self.label, "confidence": self.confidence, "probabilities": self.probabilities,
                "compute_ms": round(self.compute_ms, 2)}  # fmt: skip


class RollingAnalyser:
    """Classify the last ``window_s`` seconds of a stream every ``step_s`` seconds of audio.

    Parameters
    ----------
    predictor : Predictor
        The model (its feature configuration, temperature and speech gate setting).
    window_s : float, default 3.0
        Seconds of audio classified at each update.
    step_s : float, default 0.5
        Seconds of audio between updates.
    check_s : float, default 0.05
        Seconds between checks for the start of speech while the stream is silent (0: no early updates).
    speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional
        The speaker's statistics (see :meth:`Predictor.predict`).

    Raises
    ------
    ValueError
        If a duration is not positive or ``step_s > window_s``.

    Notes
    -----
    Not thread-safe: one producer pushes, the same thread reads the updates.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        window_s: float = 3.0,
        step_s: float = 0.5,
        check_s: float = 0.05,
        speaker_stats: RunningStatsLike | None = None,
    ) -> None:
        if not (window_s > 0 and 0 < step_s <= window_s and check_s >= 0):
            raise ValueError("RollingAnalyser: need window_s > 0, 0 < step_s <= window_s, check_s >= 0")
        from .vad import default_detector

        self.predictor = predictor
        self.detector = default_detector()
        self.speaker_stats = speaker_stats
        self._window = int(round(window_s * TARGET_SR))
        self._step = int(round(step_s * TARGET_SR))
        self._check = int(round(check_s * TARGET_SR))
        self._buf = np.zeros(self._window, np.float32)
        self._filled = 0  # valid samples at the end of _buf
        self._total = 0  # samples pushed in all
        self._since_update = 0
        self._since_check = 0
        self._speaking = False  # the last update heard speech

    @property
    def t_s(self) -> float:
        """Seconds of audio pushed so far."""
        return self._total / TARGET_SR

    def push(self, chunk: np.ndarray) -> list[ListenUpdate]:
        """Add samples; return the updates they complete (in order).

        Parameters
        ----------
        chunk : np.ndarray, shape (n_samples,)
            Mono audio at 16 kHz, full scale 1.0.

        Returns
        -------
        list of ListenUpdate
        """
        x = np.asarray(chunk, dtype=np.float32).ravel()
        updates: list[ListenUpdate] = []
        while x.size:
            # Feed up to the next update or check boundary, so every update sees exactly its window.
            until = self._step - self._since_update
            if self._check and not self._speaking:
                until = min(until, self._check - self._since_check)
            take = x[: max(1, until)]
            x = x[take.size :]
            self._append(take)
            if self._since_update >= self._step:
                updates.append(self._update())
            elif self._check and not self._speaking and self._since_check >= self._check:
                self._since_check = 0
                recent = self._buf[self._window - min(self._filled, TARGET_SR) :]
                enough = recent.size >= self.detector.settings.min_speech_s * TARGET_SR
                if enough and self.detector.has_speech(recent, 8):
                    updates.append(self._update(speech_heard=True))  # speech has just begun: answer now
        return updates

    def flush(self) -> ListenUpdate | None:
        """An update for the audio pushed since the last one (at the end of a stream), or None."""
        return self._update() if self._since_update > 0 and self._filled else None

    def _append(self, x: np.ndarray) -> None:
        n = x.size
        if n >= self._window:
            self._buf[:] = x[-self._window :]
        else:
            self._buf[:-n] = self._buf[n:]
            self._buf[-n:] = x
        self._filled = min(self._window, self._filled + n)
        self._total += n
        self._since_update += n
        self._since_check += n

    def _update(self, speech_heard: bool = False) -> ListenUpdate:
        started = time.process_time()
        self._since_update = self._since_check = 0
        y = self._buf[self._window - self._filled :]
        window_s = y.size / TARGET_SR
        speech = y.size >= _MIN_WINDOW_S * TARGET_SR and (
            speech_heard or not self.predictor.detect_speech or self.detector.has_speech(y, 8)
        )
        self._speaking = bool(speech)
        if not speech:
            return ListenUpdate(self.t_s, window_s, False, compute_ms=(time.process_time() - started) * 1000)
        y = np.ascontiguousarray(y - np.float32(y.mean()))
        features = extract_features(y=y, sr=TARGET_SR, config=self.predictor.bundle.feature_config)
        p = self.predictor.classify_features(features, speaker_stats=self.speaker_stats, duration_s=window_s)
        return ListenUpdate(self.t_s, window_s, True, p.label, p.confidence, dict(p.probabilities),
                            (time.process_time() - started) * 1000)  # fmt: skip


def file_chunks(y: np.ndarray, *, chunk_s: float = 0.1, speed: float = 1.0) -> Iterator[np.ndarray]:
    """Play a 16 kHz signal as a stream: chunks of ``chunk_s`` seconds, each when it would have been heard.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        The decoded file (16 kHz mono).
    chunk_s : float, default 0.1
        Seconds per chunk (a microphone's block).
    speed : float, default 1.0
        Playback speed: 1 real time, 20 twenty times faster; ``inf`` as fast as possible.

    Yields
    ------
    np.ndarray, shape (<= chunk_s * 16000,), float32

    Raises
    ------
    ValueError
        If ``chunk_s`` or ``speed`` is not positive.
    """
    if chunk_s <= 0 or speed <= 0:
        raise ValueError(f"file_chunks: chunk_s and speed must be positive, got {chunk_s}, {speed}")
    n = max(1, int(round(chunk_s * TARGET_SR)))
    start = time.monotonic()
    for i in range(0, y.size, n):
        due = start + (i + n) / TARGET_SR / speed  # the chunk's last sample has been "heard"
        if np.isfinite(speed) and (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        yield np.asarray(y[i : i + n], dtype=np.float32)


class MicrophoneUnavailable(RuntimeError):
    """No microphone can be read: ``sounddevice`` or PortAudio is missing, or there is no input device.

    ``str(exc)`` is one line for the user.
    """


def microphone_chunks(*, device: int | str | None = None, chunk_s: float = 0.1) -> Iterator[np.ndarray]:
    """Read the microphone with ``sounddevice`` (PortAudio), resampled to 16 kHz mono.

    Parameters
    ----------
    device : int or str, optional
        A ``sounddevice`` input device (default: the system's default input).
    chunk_s : float, default 0.1
        Seconds per block.

    Yields
    ------
    np.ndarray, shape (about chunk_s * 16000,), float32

    Raises
    ------
    MicrophoneUnavailable
        ``sounddevice`` is not installed, the PortAudio library is missing, or
        the device does not exist or cannot be opened for input.
    """
    try:
        import sounddevice as sd
    except ImportError:
        raise MicrophoneUnavailable(
            "ser listen needs the optional sounddevice package for the microphone: pip install 'ser-discord[listen]' "
            "(or use --input FILE)"
        ) from None
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise MicrophoneUnavailable(f"no PortAudio library ({exc}); install libportaudio2 (or use --input FILE)") from None
    try:
        info = sd.query_devices(device, kind="input")
        rate = int(info["default_samplerate"])
        if int(info.get("max_input_channels", 0)) < 1:
            raise ValueError("not an input device")
    except (ValueError, sd.PortAudioError) as exc:
        raise MicrophoneUnavailable(f"no microphone: {exc} (or use --input FILE)") from None
    import soxr

    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:  # PortAudio's thread
        blocks.put(indata[:, 0].copy())

    resampler = soxr.ResampleStream(rate, TARGET_SR, 1, dtype="float32", quality="HQ") if rate != TARGET_SR else None
    try:
        stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                                blocksize=max(1, int(rate * chunk_s)), callback=callback)  # fmt: skip
    except (ValueError, sd.PortAudioError) as exc:
        raise MicrophoneUnavailable(f"cannot open the microphone: {exc}") from None
    with stream:
        while True:
            block = blocks.get()
            yield resampler.resample_chunk(block) if resampler is not None else block
