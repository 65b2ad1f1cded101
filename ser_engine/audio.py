"""Decoding: bytes or a path in, mono float32 samples at 16 kHz out.

Three decoders.  The first bytes of the input choose the order of the two in
process; the ffmpeg subprocess is always the last resort:

1. **PyAV** (FFmpeg's libavformat/libavcodec, in process) for everything
   that is not WAV, FLAC or AIFF: Ogg/Opus -- Discord voice notes are
   Ogg/Opus at 48 kHz, mono -- Ogg Vorbis, WebM/Matroska, MP4/M4A/AAC, MP3.
   Opus is decoded by libopus, the reference decoder that libsndfile also
   uses, so voice notes decode as before to within 2e-7 (FFmpeg's own Opus
   decoder, PyAV's default, decodes about 15 % faster, but its output
   differs from libopus's by up to 0.3 of full scale and changed 2 of 96
   labels of the shipped model: ``python -m benchmarks.decode_check``).
   Only the demuxers in :data:`PYAV_DEMUXERS` and the codecs in
   :data:`PYAV_CODECS` run in process: FFmpeg's most used, continuously
   fuzzed ones; no demuxer that opens other files or URLs (HLS, concat, ...)
   is allowed, and FFmpeg reads the input through a Python file object, never
   by name.  Anything else goes to the subprocess.
2. **soundfile** (libsndfile, in process) for WAV, FLAC and AIFF (sniffed
   from the magic bytes ``RIFF``/``RF64``/``fLaC``/``FORM``...), and as the
   in-process fallback for the rest.
3. **ffmpeg** (a subprocess): everything else it knows.  The executable is
   located the way pydub locates it (``pydub.AudioSegment.converter``, so
   pydub's configuration applies), but the process is driven here, because
   pydub's ``from_file`` waits on ffmpeg with no timeout: a hostile file must
   never hang the caller.  The process gets a wall-clock timeout, is killed
   and reaped when it expires, and decodes at most ``max_duration_s`` + 1 s,
   so a two-hour upload is refused without being decoded whole.

Limits (:class:`AudioLimits`) are checked before heavy work: the byte size
before any decoding, the duration from the container header before the
samples are read, and the decoded length while decoding (PyAV stops at the
first frame past ``max_duration_s``; soundfile and ffmpeg read at most
``max_duration_s`` + 1 s).  PyAV's decode loop also stops at the wall-clock
``limits.ffmpeg_timeout_s``.  Channels are averaged to mono and the result
resampled with soxr (high quality) to the target rate.

Every decoder works at the file's own rate and soxr resamples afterwards.
Decoding Opus at 16 kHz directly (libopus can) is not reachable through
FFmpeg, whose libopus wrapper always asks for 48 kHz; FFmpeg's own resampler
(``av.AudioResampler``, frame by frame) was slower than one soxr HQ call in
our measurement, and its default filter is of lower quality.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

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

__all__ = [
    "TARGET_SR",
    "PYAV_CODECS",
    "PYAV_DEMUXERS",
    "AudioLimits",
    "AudioSource",
    "Decoder",
    "load_audio",
    "preload_decoders",
    "ffmpeg_executable",
    "frame_levels_dbfs",
]

TARGET_SR: Final[int] = 16_000
"""Sample rate in Hz of every signal the engine analyses."""

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str]
"""What :func:`load_audio` accepts: the encoded file's bytes, or its path."""

Decoder = Literal["auto", "pyav", "soundfile", "ffmpeg"]
"""Decoder choice of :func:`load_audio`: ``"auto"`` (by the magic bytes, with
fallbacks) or one decoder alone, with no fallback."""

PYAV_DEMUXERS: Final[str] = "ogg,matroska,mov,mp3,aac,wav,flac,aiff"
"""FFmpeg demuxers PyAV may use, as FFmpeg's ``format_whitelist`` option
(``matroska`` also covers WebM, ``mov`` covers MP4/M4A/3GP)."""

PYAV_CODECS: Final[frozenset[str]] = frozenset(
    {"opus", "vorbis", "aac", "mp3", "flac", "alac", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8"}
)
"""Audio codecs (FFmpeg codec names) PyAV decodes in process; others go to
the ffmpeg subprocess."""

_PYAV_DECODERS: Final[str] = ",".join(sorted(PYAV_CODECS | {"libopus", "libvorbis", "aac_fixed", "mp3float"}))
"""FFmpeg decoders that may run in process, as FFmpeg's ``codec_whitelist``
option: the decoders of :data:`PYAV_CODECS` by their FFmpeg names.  It also
keeps libavformat from opening a video decoder while probing a file."""

_SOUNDFILE_MAGIC: Final[tuple[bytes, ...]] = (b"RIFF", b"RIFX", b"RF64", b"BW64", b"fLaC", b"FORM")
"""First bytes of WAV (RIFF/RIFX/RF64/BW64), FLAC and AIFF (FORM): read by soundfile first."""

_OPUS_DECODER: Final[str] = "libopus"
"""FFmpeg decoder for Opus streams (the reference libopus); FFmpeg's default is its own ``opus``."""

_PYAV_MAX_RATE: Final[int] = 384_000
"""Highest sample rate in Hz accepted from PyAV (DXD, the highest in common use)."""

_PYAV_BLOCK_S: Final[float] = 10.0
"""PyAV's decoded frames are converted to mono in blocks of this many seconds."""

_LEVEL_FRAME_S: Final[float] = 0.025

_TOO_SLOW: Final[str] = "Decoding that file took too long; it may be damaged."


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
        Wall-clock limit in seconds of one decode by FFmpeg: the ffmpeg
        subprocess is killed after it, and PyAV's in-process decode loop
        stops at it (checked between packets).
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


def _head(source: AudioSource, n: int = 12) -> bytes:
    """First ``n`` bytes of the input (``b""`` when a path cannot be read)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    try:
        with open(source, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


@functools.cache
def _pyav() -> ModuleType | None:
    """PyAV, imported on first use (``None`` when it is not installed)."""
    try:
        import av
    except ImportError:  # the ffmpeg subprocess and soundfile still work
        return None
    return av


def preload_decoders() -> bool:
    """Import PyAV now rather than on the first compressed file (about 0.1 s and 20 MB here).

    For a service's warm-up, so that the first voice note does not pay for
    loading FFmpeg's libraries.

    Returns
    -------
    bool
        Whether PyAV is available (without it, Ogg/Opus goes to libsndfile
        and everything else to the ffmpeg subprocess).
    """
    return _pyav() is not None


_SAMPLE_TYPES: Final[dict[str, tuple[type[np.generic], float, float]]] = {
    # FFmpeg sample format (packed name) -> (NumPy type, offset, scale to full scale 1.0)
    "u8": (np.uint8, 128.0, 1.0 / 2**7),
    "s16": (np.int16, 0.0, 1.0 / 2**15),
    "s32": (np.int32, 0.0, 1.0 / 2**31),
    "s64": (np.int64, 0.0, 1.0 / 2**63),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}


def _frame_to_mono(frame: Any) -> np.ndarray:
    """One decoded ``av.AudioFrame`` -> (n_samples,) float32, channels averaged, full scale 1.0.

    Reads the frame's planes in place (no ``to_ndarray`` stacking copy);
    float32 mono, what libopus gives, is returned without a copy.
    """
    kind = frame.format.packed.name
    dtype, offset, scale = _SAMPLE_TYPES[kind]
    channels = max(1, int(frame.layout.nb_channels))
    n = int(frame.samples)
    if frame.format.is_planar:
        chans = [np.frombuffer(frame.planes[c], dtype=dtype, count=n) for c in range(channels)]
    else:
        packed = np.frombuffer(frame.planes[0], dtype=dtype, count=n * channels).reshape(n, channels)
        chans = [packed[:, c] for c in range(channels)]

    def as_float(x: np.ndarray) -> np.ndarray:
        if kind == "flt":
            return x
        x = x.astype(np.float32)
        if offset:
            x -= np.float32(offset)
        if scale != 1.0:
            x *= np.float32(scale)
        return x

    if channels == 1:
        return as_float(chans[0])
    y = np.array(as_float(chans[0]), dtype=np.float32)  # a copy: accumulated in place
    for c in chans[1:]:
        y += as_float(c)
    y *= np.float32(1.0 / channels)
    return y


def _pyav_decoder(av: ModuleType, stream: Any) -> Any:
    """The codec context that decodes ``stream``: libopus for Opus, FFmpeg's default otherwise."""
    ctx = stream.codec_context
    if ctx.codec.canonical_name != "opus" or ctx.name == _OPUS_DECODER:
        return ctx
    try:
        opus = av.CodecContext.create(_OPUS_DECODER, "r")
    except (av.FFmpegError, ValueError):  # a build of FFmpeg without libopus
        return ctx
    # libopus reads channels, pre-skip, gain and channel mapping from the
    # OpusHead in the extradata and always decodes at 48 kHz.
    opus.extradata = ctx.extradata
    opus.layout = ctx.layout
    opus.options = {"request_sample_fmt": "flt"}  # float32 out, as libsndfile reads it (else int16)
    return opus


def _header_duration_s(container: Any, stream: Any) -> float:
    """Duration the container states, in seconds (0.0 when it states none)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE: microseconds
    return 0.0


def _decode_pyav(av: ModuleType, fobj: Any, limits: AudioLimits, deadline: float) -> tuple[np.ndarray, int] | None:
    """Demux and decode the first audio stream of ``fobj``: (mono float32 at the stream's rate, rate) or ``None``.

    ``None`` when the demuxer or codec is not allowed in process, there is
    no audio stream, the rate is implausible or changes mid-stream, or no
    sample decodes.  Packets the decoder refuses are skipped; a container
    that breaks off keeps what decoded before (as the ffmpeg tool does).
    """
    container = av.open(
        fobj,
        mode="r",
        container_options={"format_whitelist": PYAV_DEMUXERS, "codec_whitelist": _PYAV_DECODERS},
        timeout=limits.ffmpeg_timeout_s,  # FFmpeg's interrupt callback: opening and each read
    )
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if stream.codec_context is None or stream.codec_context.codec.canonical_name not in PYAV_CODECS:
            return None
        rate = int(stream.codec_context.sample_rate or 0)
        if not 0 < rate <= _PYAV_MAX_RATE:
            return None
        header_s = _header_duration_s(container, stream)
        if header_s > limits.max_duration_s:
            raise AudioTooLongError(header_s, limits.max_duration_s)
        decoder = _pyav_decoder(av, stream)
        max_samples = int(limits.max_duration_s * rate)
        # Frames are queued in FFmpeg's sample FIFO and converted to mono in
        # blocks of _PYAV_BLOCK_S: one NumPy conversion per block instead of
        # one per 20 ms frame, and memory bounded by one block of all channels.
        fifo = av.AudioFifo()
        block = int(_PYAV_BLOCK_S * rate)
        chunks: list[np.ndarray] = []
        n_samples = 0

        def frames() -> Iterator[Any]:
            """Decoded frames; packets the decoder refuses are skipped, as the ffmpeg tool does."""
            try:
                for packet in container.demux(stream):
                    if time.monotonic() > deadline:
                        raise UndecodableAudioError(_TOO_SLOW)
                    try:
                        yield from decoder.decode(packet)
                    except av.InvalidDataError:
                        continue
            except (av.FFmpegError, OSError, ValueError, EOFError):
                # A damaged or truncated container: keep what decoded before it.
                try:
                    yield from decoder.decode(None)
                except (av.FFmpegError, ValueError, EOFError):
                    pass

        for frame in frames():
            if frame.sample_rate != rate:  # a rate change mid-stream: the ffmpeg tool resamples it
                return None
            n_samples += frame.samples
            if n_samples > max_samples:  # stop decoding at the limit, whatever the header said
                raise AudioTooLongError(n_samples / rate, limits.max_duration_s)
            frame.pts = None  # the FIFO would refuse a timestamp gap; gaps are the container's business
            fifo.write(frame)  # ValueError on a layout or format change mid-stream
            if fifo.samples >= block:
                chunks.append(_frame_to_mono(fifo.read()))
        if fifo.samples:
            chunks.append(_frame_to_mono(fifo.read()))
    if not chunks:
        return None
    return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)), rate


def _read_pyav(source: AudioSource, limits: AudioLimits) -> tuple[np.ndarray, int] | None:
    """Decode in process with PyAV; ``None`` when it cannot (or may not) decode the input.

    Raises
    ------
    AudioTooLongError
        The header states, or decoding reaches, more than ``limits.max_duration_s``.
    UndecodableAudioError
        Decoding outlasted ``limits.ffmpeg_timeout_s``.
    """
    av = _pyav()
    if av is None:
        return None
    deadline = time.monotonic() + limits.ffmpeg_timeout_s
    try:
        fobj: Any = (
            io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else open(source, "rb")
        )
    except OSError:
        return None
    with fobj:
        try:
            return _decode_pyav(av, fobj, limits, deadline)
        except (av.FFmpegError, OSError, ValueError, EOFError, OverflowError, MemoryError):
            return None


FFMPEG_DEMUXERS: Final[str] = (
    "ogg,matroska,webm,mov,mp4,m4a,3gp,mp3,aac,wav,w64,flac,aiff,caf,amr,asf,au,wv,ape,tta,voc,avi,ac3,eac3"
)
"""Demuxers the ffmpeg subprocess may use (``-format_whitelist``); with ``-protocol_whitelist file``."""


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
            # Only local files and audio containers: no playlists (hls, concat) that open other files or URLs.
            "-protocol_whitelist", "file", "-format_whitelist", FFMPEG_DEMUXERS,
            "-i", f"file:{path}",
            "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-t", f"{limits.max_duration_s + 1.0:.3f}",
            "-ac", "1", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=limits.ffmpeg_timeout_s, check=False)
        except subprocess.TimeoutExpired:  # subprocess.run kills and reaps the child
            raise UndecodableAudioError(_TOO_SLOW) from None
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


_ONE_DECODER: Final[dict[str, Callable[[AudioSource, AudioLimits], tuple[np.ndarray, int] | None]]] = {
    "pyav": _read_pyav,
    "soundfile": _read_soundfile,
    "ffmpeg": _read_ffmpeg,
}


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


def load_audio(
    source: AudioSource, *, sr: int = TARGET_SR, limits: AudioLimits | None = None, decoder: Decoder = "auto"
) -> np.ndarray:
    """Decode audio to a mono float32 signal at ``sr``.

    Parameters
    ----------
    source : bytes or path-like
        The encoded file's bytes (e.g. a downloaded attachment) or its path.
    sr : int, keyword-only
        Output sample rate in Hz (default 16 000).
    limits : AudioLimits, optional, keyword-only
        Size, duration and silence limits (default ``AudioLimits()``).
    decoder : {"auto", "pyav", "soundfile", "ffmpeg"}, keyword-only
        ``"auto"`` (default): soundfile first for WAV, FLAC and AIFF, PyAV
        first for everything else, the other in-process decoder next, the
        ffmpeg subprocess last.  Any other value uses that decoder alone,
        with no fallback (for benchmarks and tests).

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
    ValueError
        ``decoder`` is not one of the four names.
    AudioTooShortError
        The audio is under ``limits.min_duration_s``.
    UndecodableAudioError
        No decoder can decode it, or decoding outlasted
        ``limits.ffmpeg_timeout_s``.
    SilentAudioError
        No 25 ms frame reaches ``limits.silence_dbfs``.
    """
    if decoder != "auto" and decoder not in _ONE_DECODER:
        raise ValueError(f"load_audio: decoder must be 'auto', 'pyav', 'soundfile' or 'ffmpeg', not {decoder!r}")
    limits = limits or AudioLimits()
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        raise UndecodableAudioError("That is a folder, not an audio file.")
    size = _source_size(source)
    if size == 0:
        raise EmptyAudioError("That file is empty.")
    if size > limits.max_bytes:
        raise AudioTooLargeError(size, limits.max_bytes)

    decoded: tuple[np.ndarray, int] | None
    if decoder == "auto":
        sniffed_soundfile = _head(source).startswith(_SOUNDFILE_MAGIC)
        readers = (_read_soundfile, _read_pyav) if sniffed_soundfile else (_read_pyav, _read_soundfile)
        decoded = readers[0](source, limits)
        if decoded is None:
            decoded = readers[1](source, limits)
        if decoded is None:
            decoded = _read_ffmpeg(source, limits)
    else:
        decoded = _ONE_DECODER[decoder](source, limits)
        if decoded is None:
            raise UndecodableAudioError("I couldn't read that file as audio.")
    y, native_sr = decoded
    if y.size == 0:
        raise EmptyAudioError("That file holds no audio samples.")

    if not np.isfinite(y).all():  # one pass; the four of nan_to_num only when needed
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
