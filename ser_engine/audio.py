"""Decoding: bytes or a path in, mono float32 samples at 16 kHz out.

Two decoders, tried in order:

1. **soundfile** (libsndfile, in process): WAV, FLAC, AIFF, Ogg Vorbis and
   Ogg Opus -- Discord voice notes are Ogg/Opus at 48 kHz -- at a few
   milliseconds per clip.
2. **ffmpeg** (a subprocess): everything else it knows (MP3, M4A/AAC, WebM,
   MP4 audio tracks, ...).  The executable is located the way pydub locates
   it (``pydub.AudioSegment.converter``, so pydub's configuration applies),
   but the process is driven here, because pydub's ``from_file`` waits on
   ffmpeg with no timeout: a hostile file must never hang the caller.  The
   process gets a wall-clock timeout, is killed and reaped when it expires,
   and decodes at most ``max_duration_s`` + 1 s, so a two-hour upload is
   refused without being decoded whole.

Limits (:class:`AudioLimits`) are checked before heavy work: the byte size
before any decoding, the duration from the container header before the
samples are read.  Channels are averaged to mono and the result resampled
with soxr (high quality) to the target rate.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf
import soxr

from .errors import (
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
    UndecodableAudioError,
)

__all__ = ["TARGET_SR", "AudioLimits", "AudioSource", "load_audio", "ffmpeg_executable", "frame_levels_dbfs"]

TARGET_SR: Final[int] = 16_000
"""Sample rate in Hz of every signal the engine analyses."""

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str]
"""What :func:`load_audio` accepts: the encoded file's bytes, or its path."""

_LEVEL_FRAME_S: Final[float] = 0.025


@dataclass(frozen=True, slots=True)
class AudioLimits:
    """Limits applied to every input before and while it is decoded.

    Parameters
    ----------
    max_bytes : int
        Largest accepted encoded size in bytes (default 25 MiB, Discord's
        attachment limit for most servers).
    max_duration_s : float
        Longest accepted duration in seconds.
    min_duration_s : float
        Shortest accepted duration in seconds.
    ffmpeg_timeout_s : float
        Wall-clock limit of one ffmpeg run in seconds.
    silence_dbfs : float
        A clip whose loudest 25 ms frame (after removing DC offset) is below
        this RMS level in dBFS is refused as silent.
    """

    max_bytes: int = 25 * 2**20
    max_duration_s: float = 300.0
    min_duration_s: float = 0.3
    ffmpeg_timeout_s: float = 30.0
    silence_dbfs: float = -60.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_duration_s <= 0 or self.ffmpeg_timeout_s <= 0:
            raise ValueError("AudioLimits: max_bytes, max_duration_s and ffmpeg_timeout_s must be positive")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ValueError("AudioLimits: need 0 <= min_duration_s < max_duration_s")


def ffmpeg_executable() -> str:
    """Return the ffmpeg executable that pydub is configured to use.

    Returns
    -------
    str
        ``pydub.AudioSegment.converter`` (``"ffmpeg"`` unless configured).
    """
    import warnings

    with warnings.catch_warnings():  # pydub warns at import when ffmpeg is not on PATH
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment

    return str(AudioSegment.converter)


def _source_size(source: AudioSource) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        return os.stat(source).st_size
    except FileNotFoundError:
        raise UndecodableAudioError("That file does not exist.") from None
    except OSError:
        raise UndecodableAudioError("That file could not be read.") from None


def _to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: (n_samples, n_channels) -> (n_samples,) float32."""
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(data, dtype=np.float32)


def _read_soundfile(source: AudioSource, limits: AudioLimits) -> tuple[np.ndarray, int] | None:
    """Decode in process; ``None`` when libsndfile does not know the format."""
    fobj = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with sf.SoundFile(fobj) as f:
            sr = int(f.samplerate)
            if sr <= 0 or f.channels <= 0:
                return None
            frames = f.frames
            if frames > 0 and frames / sr > limits.max_duration_s:
                raise AudioTooLongError(frames / sr, limits.max_duration_s)
            # Read at most limit + 1 s, even if the header understated the length.
            max_frames = int((limits.max_duration_s + 1.0) * sr)
            data = f.read(frames=max_frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError, MemoryError, OverflowError):
        return None
    if data.shape[0] / sr > limits.max_duration_s:
        raise AudioTooLongError(data.shape[0] / sr, limits.max_duration_s)
    return _to_mono(data), sr


def _read_ffmpeg(source: AudioSource, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """Decode with an ffmpeg subprocess: 32-bit float mono WAV on a pipe."""
    exe = ffmpeg_executable()
    tmp: str | None = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            # A temporary file, not stdin: containers such as MP4 need to seek.
            fd, tmp = tempfile.mkstemp(prefix="ser-", suffix=".bin")
            with os.fdopen(fd, "wb") as fh:
                fh.write(source)
            path = tmp
        else:
            path = os.fspath(source)
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-i", f"file:{path}",
            "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-t", f"{limits.max_duration_s + 1.0:.3f}",
            "-ac", "1", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=limits.ffmpeg_timeout_s, check=False)
        except subprocess.TimeoutExpired:  # subprocess.run kills and reaps the child
            raise UndecodableAudioError("Decoding that file took too long; it may be damaged.") from None
        except FileNotFoundError:
            raise UndecodableAudioError("I can't read that audio format here (no decoder available).") from None
        if proc.returncode != 0 or len(proc.stdout) <= 44:
            raise UndecodableAudioError("I couldn't read that file as audio.")
        try:
            # ffmpeg cannot seek back on a pipe, so the WAV header's sizes are
            # unset; libsndfile then reads up to the end of the data.
            data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            raise UndecodableAudioError("I couldn't read that file as audio.") from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if data.shape[0] / sr > limits.max_duration_s:
        raise AudioTooLongError(data.shape[0] / sr, limits.max_duration_s)
    return _to_mono(data), int(sr)


def frame_levels_dbfs(y: np.ndarray, *, sr: int, frame_s: float = _LEVEL_FRAME_S) -> np.ndarray:
    """RMS level of consecutive non-overlapping frames, in dBFS.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal, full scale = 1.0.
    sr : int
        Sample rate in Hz.
    frame_s : float
        Frame length in seconds (default 0.025).

    Returns
    -------
    np.ndarray, shape (n_frames,)
        ``20 log10(rms)`` per frame (-inf-safe: floored at -200 dBFS).
    """
    n = max(1, int(round(frame_s * sr)))
    usable = (len(y) // n) * n
    frames = y[:usable].reshape(-1, n) if usable else y.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def load_audio(source: AudioSource, *, sr: int = TARGET_SR, limits: AudioLimits | None = None) -> np.ndarray:
    """Decode audio to a mono float32 signal at ``sr``.

    Parameters
    ----------
    source : bytes or path-like
        The encoded file's bytes (e.g. a downloaded attachment) or its path.
    sr : int, keyword-only
        Output sample rate in Hz (default 16 000).
    limits : AudioLimits, optional, keyword-only
        Size, duration and silence limits (default ``AudioLimits()``).

    Returns
    -------
    np.ndarray, shape (n_samples,), dtype float32
        Mono samples at ``sr`` Hz with NaN/inf replaced by 0 and DC offset
        removed.

    Raises
    ------
    EmptyAudioError
        The input has no bytes or decodes to no samples.
    AudioTooLargeError
        The input is over ``limits.max_bytes`` (checked before decoding).
    AudioTooLongError
        The audio is over ``limits.max_duration_s`` (from the header where
        one states it; never decoded past the limit + 1 s).
    AudioTooShortError
        The audio is under ``limits.min_duration_s``.
    UndecodableAudioError
        Neither soundfile nor ffmpeg can decode it, or ffmpeg timed out.
    SilentAudioError
        No 25 ms frame reaches ``limits.silence_dbfs``.
    """
    limits = limits or AudioLimits()
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        raise UndecodableAudioError("That is a folder, not an audio file.")
    size = _source_size(source)
    if size == 0:
        raise EmptyAudioError("That file is empty.")
    if size > limits.max_bytes:
        raise AudioTooLargeError(size, limits.max_bytes)

    decoded = _read_soundfile(source, limits)
    if decoded is None:
        decoded = _read_ffmpeg(source, limits)
    y, native_sr = decoded
    if y.size == 0:
        raise EmptyAudioError("That file holds no audio samples.")

    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    if native_sr != sr:
        y = soxr.resample(y, native_sr, sr, quality="HQ").astype(np.float32, copy=False)
    duration_s = y.size / sr
    if duration_s < limits.min_duration_s:
        raise AudioTooShortError(duration_s, limits.min_duration_s)
    y = y - np.float32(y.mean())
    peak_level = float(frame_levels_dbfs(y, sr=sr).max())
    if peak_level < limits.silence_dbfs:
        raise SilentAudioError(peak_level)
    return np.ascontiguousarray(y, dtype=np.float32)
