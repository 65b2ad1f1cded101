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
   never hang the caller.  ``ffprobe`` first reads the stream's rate and
   channels (same whitelists), then ffmpeg decodes with ``-ac 1 -ar <sr>``
   (resampled by libsoxr where FFmpeg has it) as raw float32 on a pipe, of
   which at most the limits' worth of bytes is read.  Both processes get a
   wall-clock timeout, are killed and reaped when it expires, and run with
   :func:`ser_engine.environment.minimal_environment` (no secrets).

Limits (:class:`AudioLimits`) are checked before heavy work: the byte size
before any decoding; the sample rate, channel count, duration and sample
count (frames x channels) from the header before the samples are read, by
every decoder; and the decoded length and sample count while decoding, since
a header may lie (each decoder stops at the first block past
``max_duration_s`` or ``max_samples``).  PyAV's decode loop also stops at the
wall-clock ``limits.ffmpeg_timeout_s``.

Memory does not grow with the input's rate or channel count: the in-process
decoders read blocks of at most :data:`_BLOCK_SAMPLES` samples over all
channels, average each block to mono and resample it at once to the output
rate with a streaming soxr resampler (``soxr.ResampleStream``, high quality;
its output equals one ``soxr.resample`` call over the whole signal, bit for
bit in our check at 44.1 and 48 kHz), and nothing is allocated from a length
a header states.  Measured on a 1.0 MB FLAC declaring 655 350 Hz x 8 channels
x 60 s: ``ser predict`` peaked at 1.52 GB RSS before these limits; it is now
refused from the header.

Decoding Opus at 16 kHz directly (libopus can) is not reachable through
FFmpeg, whose libopus wrapper always asks for 48 kHz; FFmpeg's own resampler
(``av.AudioResampler``, frame by frame) was slower than soxr in our
measurement, and its default filter is of lower quality.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import numpy as np
import soundfile as sf
import soxr

from .environment import minimal_environment
from .errors import (
    AudioFormatLimitError,
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
    "ffprobe_executable",
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

_PYAV_BLOCK_S: Final[float] = 10.0
"""PyAV's decoded frames are converted to mono in blocks of this many seconds (at most :data:`_BLOCK_SAMPLES`)."""

_BLOCK_SAMPLES: Final[int] = 1 << 20
"""Most samples, over all channels, decoded before a block is mixed down to mono and resampled:
4 MiB of float32 whatever the rate and channel count (10 s of 48 kHz stereo is 0.96 million)."""

_SF_UNKNOWN_FRAMES: Final[int] = 2**62
"""libsndfile reports ``SF_COUNT_MAX`` (2**63 - 1) frames for a stream of unknown length (a FLAC written to a pipe)."""

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
    max_sample_rate : int
        Highest accepted sample rate in Hz (default 192 000, the highest rate
        of common recording hardware and of USB Audio Class 2 devices;
        Discord voice notes are 48 kHz).  Checked from the header (or stream
        parameters) by every decoder before any sample is decoded.
    max_channels : int
        Most accepted channels (default 8: 7.1 surround, and FLAC's own
        maximum).  Checked like ``max_sample_rate``.
    max_samples : int
        Sample budget: most samples decoded from one input, counted over all
        channels (frames x channels); default 28 800 000, five minutes of
        48 kHz stereo.  Refused from the header when it states more, and
        decoding stops at the first block past it whatever the header said.
        It bounds the decoding work, which ``max_duration_s`` alone does not
        (a 0.9 MB FLAC can declare 655 350 Hz x 8 channels x 60 s: 315
        million samples).

    Raises
    ------
    ValueError
        A limit is not positive, or ``min_duration_s`` is not below ``max_duration_s``.
    """

    max_bytes: int = 25 * 2**20
    max_duration_s: float = 300.0
    min_duration_s: float = 0.3
    ffmpeg_timeout_s: float = 30.0
    silence_dbfs: float = -60.0
    max_sample_rate: int = 192_000
    max_channels: int = 8
    max_samples: int = 28_800_000

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_duration_s <= 0 or self.ffmpeg_timeout_s <= 0:
            raise ValueError("AudioLimits: max_bytes, max_duration_s and ffmpeg_timeout_s must be positive")
        if self.max_sample_rate <= 0 or self.max_channels <= 0 or self.max_samples <= 0:
            raise ValueError("AudioLimits: max_sample_rate, max_channels and max_samples must be positive")
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


def ffprobe_executable() -> str:
    """Return the ffprobe executable that goes with :func:`ffmpeg_executable`.

    Returns
    -------
    str
        The same path with ``ffmpeg`` in the file name replaced by
        ``ffprobe`` (``"/opt/ffmpeg/bin/ffmpeg"`` -> ``"/opt/ffmpeg/bin/ffprobe"``),
        or ``"ffprobe"`` (looked up on ``PATH``) when the name has no ``ffmpeg``.
    """
    directory, name = os.path.split(ffmpeg_executable())
    probe = name.replace("ffmpeg", "ffprobe") if "ffmpeg" in name else "ffprobe"
    return os.path.join(directory, probe) if directory else probe


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


def _check_format(rate: int, channels: int, limits: AudioLimits) -> None:
    """Refuse a stream whose rate (Hz) or channel count is over the limits, before it is decoded.

    Raises
    ------
    AudioFormatLimitError
        ``rate > limits.max_sample_rate`` or ``channels > limits.max_channels``.
    """
    if rate > limits.max_sample_rate:
        raise AudioFormatLimitError("sample rate", rate, limits.max_sample_rate)
    if channels > limits.max_channels:
        raise AudioFormatLimitError("channels", channels, limits.max_channels)


def _check_header_length(header_s: float, rate: int, channels: int, limits: AudioLimits) -> None:
    """Refuse a stream whose header states more than the limits (``header_s`` 0: states nothing).

    Raises
    ------
    AudioTooLongError
        ``header_s > limits.max_duration_s``.
    AudioFormatLimitError
        The stated frames x channels are over ``limits.max_samples``.
    """
    if header_s > limits.max_duration_s:
        raise AudioTooLongError(header_s, limits.max_duration_s)
    samples = int(header_s * rate) * channels
    if samples > limits.max_samples:
        raise AudioFormatLimitError("samples", samples, limits.max_samples)


class _MonoSink:
    """Count decoded blocks against the limits, mix them down to mono and resample them as they come.

    Holds one block of the input's channels at a time and the output at
    ``sr``: memory does not grow with the input's rate or channel count.
    ``soxr.ResampleStream`` gives the same samples as one ``soxr.resample``
    call over the whole signal (bit-identical in our check, 44.1 and 48 kHz
    to 16 kHz, blocks of 4 800 to 100 003 samples).

    Parameters
    ----------
    rate : int
        The stream's sample rate in Hz.
    sr : int
        The output rate in Hz.
    limits : AudioLimits
        Duration and sample budget applied by :meth:`count`.
    """

    def __init__(self, rate: int, sr: int, limits: AudioLimits) -> None:
        self.rate = rate
        self.limits = limits
        self.frames = 0
        self.samples = 0
        self._max_frames = int(limits.max_duration_s * rate)
        self._resampler = None if rate == sr else soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
        self._chunks: list[np.ndarray] = []

    def count(self, frames: int, channels: int) -> None:
        """Count ``frames`` decoded frames of ``channels`` channels, before they are converted.

        Raises
        ------
        AudioTooLongError
            More than ``limits.max_duration_s`` decoded.
        AudioFormatLimitError
            More than ``limits.max_samples`` samples (over all channels) decoded.
        """
        self.frames += frames
        self.samples += frames * channels
        if self.frames > self._max_frames:
            raise AudioTooLongError(self.frames / self.rate, self.limits.max_duration_s)
        if self.samples > self.limits.max_samples:
            raise AudioFormatLimitError("samples", self.samples, self.limits.max_samples)

    def add(self, mono: np.ndarray) -> None:
        """Append a mono block, shape (n,) float32 at the stream's rate: NaN/inf zeroed, then resampled."""
        if mono.size == 0:
            return
        if not np.isfinite(mono).all():  # one pass; the four of nan_to_num only when needed
            mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32))
        self._chunks.append(mono)

    def finish(self) -> np.ndarray:
        """The whole signal at ``sr``: shape (n_samples,) float32 (empty when nothing was added)."""
        if self._resampler is not None and self.frames:
            self._chunks.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if not self._chunks:
            return np.zeros(0, np.float32)
        y = self._chunks[0] if len(self._chunks) == 1 else np.concatenate(self._chunks)
        return np.ascontiguousarray(y, dtype=np.float32)


def _read_soundfile(source: AudioSource, limits: AudioLimits, sr: int) -> np.ndarray | None:
    """Decode in process with libsndfile, in blocks: mono float32 at ``sr``, or ``None`` for a format it does not know.

    The header's rate, channels and length are checked before any sample is
    read; the length it states is never used to allocate (a WAV header can
    claim 4 GB over 4 s of data).

    Raises
    ------
    AudioFormatLimitError
        Rate, channels or samples over the limits (header or decoding).
    AudioTooLongError
        The header states, or decoding reaches, more than ``limits.max_duration_s``.
    """
    fobj = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with sf.SoundFile(fobj) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if rate <= 0 or channels <= 0:
                return None
            _check_format(rate, channels, limits)
            frames = int(f.frames)
            if frames >= _SF_UNKNOWN_FRAMES:
                # A stream of unknown length: soundfile seeks after every read to
                # track its position, which libsndfile cannot do in such a stream
                # ("psf_fseek() failed" after the first block).  PyAV reads those.
                return None
            _check_header_length(frames / rate, rate, channels, limits)
            sink = _MonoSink(rate, sr, limits)
            block = max(1, _BLOCK_SAMPLES // channels)
            while True:
                # soundfile allocates min(block, frames the header says remain): never the claimed length.
                data = f.read(frames=block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                sink.count(len(data), channels)
                sink.add(_to_mono(data))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError, MemoryError, OverflowError):
        return None
    return sink.finish()


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


def _decode_pyav(av: ModuleType, fobj: Any, limits: AudioLimits, deadline: float, sr: int) -> np.ndarray | None:
    """Demux and decode the first audio stream of ``fobj``: mono float32 at ``sr``, or ``None``.

    ``None`` when the demuxer or codec is not allowed in process, there is
    no audio stream, the rate is unknown or changes mid-stream, or no
    sample decodes.  The stream's rate and channels are checked before the
    first packet is decoded, each frame's channels as it comes.  Packets
    the decoder refuses are skipped; a container that breaks off keeps what
    decoded before (as the ffmpeg tool does).
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
        if rate <= 0:
            return None
        channels = int(stream.codec_context.layout.nb_channels or 0)
        _check_format(rate, channels, limits)
        _check_header_length(_header_duration_s(container, stream), rate, max(1, channels), limits)
        decoder = _pyav_decoder(av, stream)
        # Frames are queued in FFmpeg's sample FIFO and converted to mono in
        # blocks of _PYAV_BLOCK_S: one NumPy conversion per block instead of
        # one per 20 ms frame, and memory bounded by one block of all channels.
        fifo = av.AudioFifo()
        block = 0  # frames per block, from the first frame's channels (the FIFO refuses a change after it)
        sink = _MonoSink(rate, sr, limits)

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
            frame_channels = int(frame.layout.nb_channels)
            if frame_channels > limits.max_channels:  # the decoder may say otherwise than the container
                raise AudioFormatLimitError("channels", frame_channels, limits.max_channels)
            sink.count(frame.samples, frame_channels)  # stop at the limits, whatever the header said
            block = block or max(1, min(int(_PYAV_BLOCK_S * rate), _BLOCK_SAMPLES // max(1, frame_channels)))
            frame.pts = None  # the FIFO would refuse a timestamp gap; gaps are the container's business
            fifo.write(frame)  # ValueError on a layout or format change mid-stream
            if fifo.samples >= block:
                sink.add(_frame_to_mono(fifo.read()))
        if fifo.samples:
            sink.add(_frame_to_mono(fifo.read()))
    if not sink.frames:
        return None
    return sink.finish()


def _read_pyav(source: AudioSource, limits: AudioLimits, sr: int) -> np.ndarray | None:
    """Decode in process with PyAV: mono float32 at ``sr``, or ``None`` when it cannot (or may not) decode the input.

    Raises
    ------
    AudioFormatLimitError
        Rate, channels or samples over the limits (stream parameters or decoding).
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
            return _decode_pyav(av, fobj, limits, deadline, sr)
        except (av.FFmpegError, OSError, ValueError, EOFError, OverflowError, MemoryError):
            return None


FFMPEG_DEMUXERS: Final[str] = (
    "ogg,matroska,webm,mov,mp4,m4a,3gp,mp3,aac,wav,w64,flac,aiff,caf,amr,asf,au,wv,ape,tta,voc,avi,ac3,eac3"
)
"""Demuxers the ffmpeg subprocess may use (``-format_whitelist``); with ``-protocol_whitelist file``."""


_UNREADABLE: Final[str] = "I couldn't read that file as audio."
_NO_DECODER: Final[str] = "I can't read that audio format here (no decoder available)."


@functools.cache
def _ffmpeg_has_soxr(exe: str) -> bool:
    """Whether this ffmpeg was built with libsoxr (``--enable-libsoxr`` in ``-buildconf``)."""
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-buildconf"], capture_output=True, timeout=10.0, check=False,
            stdin=subprocess.DEVNULL, env=minimal_environment(),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--enable-libsoxr" in proc.stdout


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise UndecodableAudioError(_TOO_SLOW)
    return left


def _probe_ffmpeg(path: str, limits: AudioLimits, deadline: float) -> tuple[int, int, float]:
    """Rate (Hz), channels and stated duration (s, 0.0 when none) of the first audio stream, by ffprobe.

    Raises
    ------
    UndecodableAudioError
        ffprobe is missing, finds no audio stream, fails, or outlasts the deadline.
    """
    cmd = [
        ffprobe_executable(), "-v", "error", "-hide_banner",
        "-protocol_whitelist", "file", "-format_whitelist", FFMPEG_DEMUXERS,
        "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels,duration", "-of", "json",
        f"file:{path}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=_remaining(deadline), check=False,
            stdin=subprocess.DEVNULL, env=minimal_environment(),
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # subprocess.run kills and reaps the child
        raise UndecodableAudioError(_TOO_SLOW) from None
    except OSError:
        raise UndecodableAudioError(_NO_DECODER) from None
    try:
        stream = json.loads(proc.stdout)["streams"][0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
        duration = float(stream.get("duration") or 0.0)
    except (ValueError, KeyError, IndexError, TypeError):
        raise UndecodableAudioError(_UNREADABLE) from None
    if rate <= 0 or channels <= 0:
        raise UndecodableAudioError(_UNREADABLE)
    return rate, channels, duration if np.isfinite(duration) and duration > 0 else 0.0


def _run_capped(cmd: list[str], max_bytes: int, deadline: float) -> tuple[bytes, int | None]:
    """Run ``cmd`` and read at most ``max_bytes`` + 1 bytes of its stdout.

    Returns
    -------
    tuple of (bytes, int or None)
        What was read, and the exit status (``None`` when more than
        ``max_bytes`` came and the process was killed for it).

    Raises
    ------
    UndecodableAudioError
        The executable is missing, or the process outlasted the deadline
        (it is killed and reaped).
    """
    expired = threading.Event()
    timeout_s = _remaining(deadline)  # before the process starts: nothing to kill if the time is already up
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=minimal_environment(),
        )  # fmt: skip
    except OSError:
        raise UndecodableAudioError(_NO_DECODER) from None

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout_s, expire)
    timer.start()
    try:
        with proc:  # closes the pipe and reaps the process
            out = bytearray()
            assert proc.stdout is not None
            while len(out) <= max_bytes:
                chunk = proc.stdout.read(min(1 << 20, max_bytes + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
            over = len(out) > max_bytes
            if over:
                proc.kill()
            status = proc.wait()
    finally:
        timer.cancel()
    if expired.is_set():
        raise UndecodableAudioError(_TOO_SLOW)
    return bytes(out[:max_bytes]), None if over else status


def _read_ffmpeg(source: AudioSource, limits: AudioLimits, sr: int) -> np.ndarray:
    """Decode with ffprobe and an ffmpeg subprocess: mono float32 at ``sr``.

    ffprobe reads the stream's rate and channels, which are checked before
    decoding; ffmpeg then decodes at most ``min(max_duration_s, sample budget
    in seconds) + 1 s`` and mixes down and resamples itself (``-ac 1 -ar sr``),
    and at most that many bytes of its output are read.

    Raises
    ------
    AudioFormatLimitError
        Rate, channels or samples over the limits.
    AudioTooLongError
        The stream states, or decodes to, more than ``limits.max_duration_s``.
    UndecodableAudioError
        ffmpeg or ffprobe cannot read it, is missing, or outlasted ``limits.ffmpeg_timeout_s``.
    """
    exe = ffmpeg_executable()
    deadline = time.monotonic() + limits.ffmpeg_timeout_s
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
        rate, channels, header_s = _probe_ffmpeg(path, limits, deadline)
        _check_format(rate, channels, limits)
        _check_header_length(header_s, rate, channels, limits)
        budget_s = limits.max_samples / (rate * channels)  # seconds of this stream the sample budget allows
        cap_s = min(limits.max_duration_s, budget_s) + 1.0  # decode past the limit, to tell that it is over
        # libsoxr, where FFmpeg has it, at the same precision (20 bits) as soxr's "HQ" in the other decoders.
        resampler = ["-af", "aresample=resampler=soxr:precision=20"] if _ffmpeg_has_soxr(exe) else []
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error",
            # Only local files and audio containers: no playlists (hls, concat) that open other files or URLs.
            "-protocol_whitelist", "file", "-format_whitelist", FFMPEG_DEMUXERS,
            "-i", f"file:{path}",
            "-map", "0:a:0", "-vn", "-sn", "-dn",
            "-t", f"{cap_s:.3f}", *resampler,
            "-ac", "1", "-ar", str(sr), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        # Raw float32 at sr: 4 bytes a sample; one second more for the resampler's and the last frame's rounding.
        max_bytes = 4 * int((cap_s + 1.0) * sr)
        out, status = _run_capped(cmd, max_bytes, deadline)
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if status not in (0, None) or len(out) < 4:
        raise UndecodableAudioError(_UNREADABLE)
    y = np.frombuffer(out, dtype="<f4", count=len(out) // 4).astype(np.float32)
    duration_s = y.size / sr
    if duration_s > limits.max_duration_s:
        raise AudioTooLongError(duration_s, limits.max_duration_s)
    if duration_s > budget_s:
        raise AudioFormatLimitError("samples", int(duration_s * rate) * channels, limits.max_samples)
    return y


_ONE_DECODER: Final[dict[str, Callable[[AudioSource, AudioLimits, int], np.ndarray | None]]] = {
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
        Size, duration, rate, channel, sample-budget and silence limits
        (default ``AudioLimits()``).
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
    AudioFormatLimitError
        The sample rate or channel count is over ``limits.max_sample_rate``
        or ``limits.max_channels`` (from the header, before decoding), or the
        samples over all channels are over ``limits.max_samples`` (from the
        header where it states a length; decoding stops at the first block
        past it otherwise).
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

    # Every decoder checks rate, channels and length before decoding and
    # returns mono float32 at sr (resampled block by block); an AudioError
    # from one of them ends the decode: the next decoder would read the same header.
    y: np.ndarray | None
    if decoder == "auto":
        sniffed_soundfile = _head(source).startswith(_SOUNDFILE_MAGIC)
        readers = (_read_soundfile, _read_pyav) if sniffed_soundfile else (_read_pyav, _read_soundfile)
        y = readers[0](source, limits, sr)
        if y is None:
            y = readers[1](source, limits, sr)
        if y is None:
            y = _read_ffmpeg(source, limits, sr)
    else:
        y = _ONE_DECODER[decoder](source, limits, sr)
        if y is None:
            raise UndecodableAudioError(_UNREADABLE)
    if y.size == 0:
        raise EmptyAudioError("That file holds no audio samples.")

    if not np.isfinite(y).all():  # the ffmpeg path; the in-process decoders zeroed them per block
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    duration_s = y.size / sr
    if duration_s < limits.min_duration_s:
        raise AudioTooShortError(duration_s, limits.min_duration_s)
    y = y - np.float32(y.mean())
    peak_level = float(frame_levels_dbfs(y, sr=sr).max())
    if peak_level < limits.silence_dbfs:
        raise SilentAudioError(peak_level)
    return np.ascontiguousarray(y, dtype=np.float32)
