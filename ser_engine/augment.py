"""Signal degradations for training-time augmentation and robustness tests.

Each condition maps a clean 16 kHz mono signal to a degraded one of about
the same length, deterministically for a given seed:

``opus24k`` (also ``opus16k``, ``opus32k``)
    Round trip through Ogg/Opus at that bit rate (libopus through PyAV, in
    process, 48 kHz mono as Discord voice notes are, libopus's default
    complexity 10), decoded back to 16 kHz by
    :func:`ser_engine.audio.load_audio`.
``noise20``, ``noise10``
    White Gaussian noise at 20 or 10 dB SNR.
``pink20``, ``pink10``
    Pink (1/f power) noise at 20 or 10 dB SNR.
``pitch+1``, ``pitch-1``
    Pitch shifted by one semitone up or down (``librosa.effects.pitch_shift``).
``tempo0.9``, ``tempo1.1``
    Tempo changed by that factor, pitch kept (``librosa.effects.time_stretch``).
``gain-6``
    6 dB quieter.

Any condition but ``clean`` may carry the suffix ``@active``
(``"opus24k@active"``): it is then applied to the *active region* only
(:func:`active_region`: the speech and 0.2 s around it), the silence before
and after dropped.  Feature extraction analyses that region anyway, so for
signal transformations (codec, pitch) this changes little but costs a
fraction: RAVDESS clips are about 40 % silence.  Noise is better added to
the whole clip, as it would be in a room.

The SNR is measured against the *active speech* level: the mean power of
the 20 ms frames within 40 dB of the loudest one (a simplified version of
the active speech level of ITU-T P.56), so that the leading and trailing
silence of a clip does not make the noise look quieter than it sounds.
Pink noise is white noise shaped by ``1/sqrt(f)`` in the frequency domain
(no DC); either noise is scaled so that its mean power gives the SNR exactly.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Final

import numpy as np

from .audio import TARGET_SR, AudioLimits, load_audio

__all__ = ["ACTIVE", "CONDITIONS", "CONDITIONS_VERSION", "active_region", "is_condition", "condition_parts", "active_power", "add_noise", "apply_condition", "opus_round_trip"]


ACTIVE: Final[str] = "@active"
"""Suffix of a condition applied to the active region only (:func:`active_region`): ``"opus24k@active"``."""

CONDITIONS_VERSION: Final[int] = 2
"""Version of the degradation code, part of cached condition features' keys (2: Opus through PyAV in process)."""


def active_power(y: np.ndarray, *, sr: int = TARGET_SR, frame_s: float = 0.02, range_db: float = 40.0) -> float:
    """Mean power of the frames within ``range_db`` of the loudest frame.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal, full scale 1.0.
    sr : int, default 16000
        Sample rate in Hz.
    frame_s : float, default 0.02
        Frame length in seconds (non-overlapping frames).
    range_db : float, default 40.0
        Frames quieter than the loudest by more than this are ignored.

    Returns
    -------
    float
        Mean square amplitude of the active frames; 0.0 for a silent signal.
    """
    y = np.asarray(y, dtype=np.float64)
    n = max(1, round(frame_s * sr))
    usable = (y.size // n) * n
    if usable == 0:
        return float(np.mean(y**2)) if y.size else 0.0
    power = np.mean(y[:usable].reshape(-1, n) ** 2, axis=1)
    peak = float(power.max())
    if peak <= 0.0:
        return 0.0
    return float(power[power >= peak * 10 ** (-range_db / 10)].mean())


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum = spectrum / np.sqrt(f)
    spectrum[0] = 0.0  # no DC offset
    return np.fft.irfft(spectrum, n)


def add_noise(y: np.ndarray, snr_db: float, *, color: str = "white", seed: int = 0, sr: int = TARGET_SR) -> np.ndarray:
    """Add white or pink noise at a given SNR to the active speech level.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal.
    snr_db : float
        Signal-to-noise ratio in dB (active speech power over noise power).
    color : {"white", "pink"}, default "white"
    seed : int, default 0
        Seed of the noise.
    sr : int, default 16000
        Sample rate in Hz (for the active-level frames).

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Clipped to [-1, 1].

    Raises
    ------
    ValueError
        If ``color`` is unknown.
    """
    rng = np.random.default_rng(seed)
    if color == "white":
        noise = rng.standard_normal(y.size)
    elif color == "pink":
        noise = _pink(y.size, rng)
    else:
        raise ValueError(f"add_noise: unknown colour {color!r}")
    power = active_power(y, sr=sr)
    noise = noise * np.sqrt(power / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-30))
    return np.clip(np.asarray(y, dtype=np.float64) + noise, -1.0, 1.0).astype(np.float32)


def opus_round_trip(
    y: np.ndarray, *, bitrate: str = "24k", sr: int = TARGET_SR, complexity: int = 10, encoder_sr: int = 48_000
) -> np.ndarray:
    """Encode to Ogg/Opus and decode back, in process.

    The signal is resampled to ``encoder_sr`` with soxr (48 kHz: what a
    Discord client records), encoded by libopus through PyAV into an
    in-memory Ogg file (VBR, 20 ms frames, libopus's defaults but the bit
    rate and ``complexity``) and decoded back by
    :func:`ser_engine.audio.load_audio` (48 kHz Opus, resampled to ``sr``).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``sr``.
    bitrate : str, default "24k"
        Bit rate in bit/s, with an optional ``k`` suffix (kbit/s), as
        ffmpeg's ``-b:a``.
    sr : int, default 16000
        Sample rate of ``y`` and of the result, in Hz.
    complexity : int, default 10
        libopus's encoder complexity, 0 (cheapest, about 4x faster here) to
        10 (libopus's default).  Training on complexity-0 copies instead of
        the default's cost 1-2 points of speaker-independent accuracy on
        RAVDESS (models/README.md), so the conditions keep the default.
    encoder_sr : int, default 48000
        Sample rate fed to the encoder, in Hz: one that Opus accepts (8000,
        12000, 16000, 24000, 48000).  ``encoder_sr == sr`` skips the
        resampling; a 16 kHz signal holds nothing above 8 kHz, which libopus
        codes as wideband either way.

    Returns
    -------
    np.ndarray, shape (about n_samples,), float32

    Raises
    ------
    ValueError
        If ``bitrate`` is not a positive number of bit/s, ``complexity`` is
        outside 0-10 or ``encoder_sr`` is not an Opus rate.
    RuntimeError
        If this build of PyAV has no libopus encoder.
    ser_engine.errors.AudioError
        If the encoded file cannot be decoded.
    """
    import av

    text = bitrate.strip().lower()
    try:
        bps = int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)
    except ValueError:
        raise ValueError(f"opus_round_trip: bit rate {bitrate!r} is not a number of bit/s") from None
    if bps <= 0:
        raise ValueError(f"opus_round_trip: bit rate {bitrate!r} must be positive")
    if not 0 <= complexity <= 10:
        raise ValueError(f"opus_round_trip: complexity {complexity} is outside 0-10")
    if encoder_sr not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(f"opus_round_trip: Opus does not take {encoder_sr} Hz")
    x = np.asarray(y, dtype=np.float32)
    if encoder_sr != sr:
        import soxr

        x = soxr.resample(x, sr, encoder_sr, quality="HQ").astype(np.float32, copy=False)
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="ogg") as container:
            stream = container.add_stream("libopus", rate=encoder_sr, layout="mono")
            stream.bit_rate = bps
            stream.codec_context.options = {"compression_level": str(complexity)}
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, :]), format="flt", layout="mono")
            frame.sample_rate = encoder_sr
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except av.FFmpegError as exc:
        raise RuntimeError(f"libopus could not encode the signal ({exc})") from exc
    return load_audio(buf.getvalue(), sr=sr, limits=AudioLimits(min_duration_s=0.0, silence_dbfs=-200.0))


def active_region(
    y: np.ndarray, *, sr: int = TARGET_SR, frame_s: float = 0.02, range_db: float = 40.0, margin_s: float = 0.2
) -> slice:
    """Samples from the first to the last active frame (as :func:`active_power`), with a margin.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
    sr : int, default 16000
        Sample rate in Hz.
    frame_s : float, default 0.02
        Frame length in seconds.
    range_db : float, default 40.0
        Frames within this many dB of the loudest are active.
    margin_s : float, default 0.2
        Seconds kept before the first and after the last active frame.

    Returns
    -------
    slice
        Into ``y``; all of it for a silent or very short signal.
    """
    x = np.asarray(y, dtype=np.float32)
    n = max(1, round(frame_s * sr))
    usable = (x.size // n) * n
    if usable == 0:
        return slice(0, x.size)
    power = np.einsum("ij,ij->i", x[:usable].reshape(-1, n), x[:usable].reshape(-1, n))
    peak = float(power.max())
    if peak <= 0.0:
        return slice(0, x.size)
    active = np.flatnonzero(power >= peak * 10 ** (-range_db / 10))
    margin = round(margin_s * sr)
    return slice(max(0, int(active[0]) * n - margin), min(x.size, (int(active[-1]) + 1) * n + margin))


def _pitch(steps: float) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(y: np.ndarray, seed: int) -> np.ndarray:
        import librosa

        return librosa.effects.pitch_shift(y, sr=TARGET_SR, n_steps=steps).astype(np.float32)

    return run


def _tempo(rate: float) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(y: np.ndarray, seed: int) -> np.ndarray:
        import librosa

        return librosa.effects.time_stretch(y, rate=rate).astype(np.float32)

    return run


CONDITIONS: Final[dict[str, Callable[[np.ndarray, int], np.ndarray]]] = {
    "clean": lambda y, seed: np.asarray(y, dtype=np.float32),
    "opus16k": lambda y, seed: opus_round_trip(y, bitrate="16k"),
    "opus24k": lambda y, seed: opus_round_trip(y, bitrate="24k"),
    "opus32k": lambda y, seed: opus_round_trip(y, bitrate="32k"),
    "noise20": lambda y, seed: add_noise(y, 20.0, color="white", seed=seed),
    "noise10": lambda y, seed: add_noise(y, 10.0, color="white", seed=seed),
    "pink20": lambda y, seed: add_noise(y, 20.0, color="pink", seed=seed),
    "pink10": lambda y, seed: add_noise(y, 10.0, color="pink", seed=seed),
    "pitch+1": _pitch(1.0),
    "pitch-1": _pitch(-1.0),
    "tempo0.9": _tempo(0.9),
    "tempo1.1": _tempo(1.1),
    "gain-6": lambda y, seed: (np.asarray(y, dtype=np.float32) * np.float32(10 ** (-6 / 20))),
}
"""Condition name -> ``f(y, seed) -> degraded y`` on 16 kHz mono signals."""


def condition_parts(condition: str) -> tuple[str, ...]:
    """The conditions of a name: ``"noise20"`` -> ``("noise20",)``; ``"opus24k|noise20"`` -> both.

    A name joining conditions with ``|`` is a *rotation*: clip ``seed``
    gets ``parts[seed % len(parts)]``, so that one degraded copy of a corpus
    holds each condition on an equal share of its clips (one augmented copy
    instead of one per condition: the same variety for a third of the
    extraction time with three conditions).

    Raises
    ------
    ValueError
        If a part is unknown, repeated or ``"clean"`` inside a rotation.
    """
    parts = tuple(part.strip() for part in condition.split("|"))
    bases = [part.removesuffix(ACTIVE) for part in parts]
    unknown = [
        part for part, base in zip(parts, bases, strict=True)
        if base not in CONDITIONS or (base == "clean" and (len(parts) > 1 or part != base))
    ]  # fmt: skip
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(
            f"unknown condition {condition!r}; choose from {sorted(CONDITIONS)}, each optionally with "
            f"'{ACTIVE}' (applied to the speech only), or join several with '|'"
        )
    return parts


def is_condition(condition: str) -> bool:
    """Whether :func:`apply_condition` accepts ``condition`` (a name of :data:`CONDITIONS` or a ``|`` rotation)."""
    try:
        condition_parts(condition)
    except ValueError:
        return False
    return True


def apply_condition(y: np.ndarray, condition: str, *, seed: int = 0) -> np.ndarray:
    """Degrade a 16 kHz mono signal by a named condition of :data:`CONDITIONS`.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at 16 kHz.
    condition : str
        A key of :data:`CONDITIONS`, or several joined by ``|`` (a rotation:
        :func:`condition_parts`).
    seed : int, default 0
        Seed of random conditions (noise); in a rotation also which part applies.

    Returns
    -------
    np.ndarray, shape (about n_samples,), float32

    Raises
    ------
    ValueError
        If ``condition`` is unknown.
    RuntimeError
        If libopus is missing (Opus conditions).
    """
    parts = condition_parts(condition)
    part = parts[seed % len(parts)]
    x = np.asarray(y, dtype=np.float32)
    if part.endswith(ACTIVE):
        x = x[active_region(x)]
    return CONDITIONS[part.removesuffix(ACTIVE)](x, seed)
