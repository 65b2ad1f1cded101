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
``phone``
    A telephone channel (:func:`phone_channel`): resampled to 8 kHz,
    band-limited to 300-3400 Hz (ITU-T G.712's channel band), G.711
    mu-law coded and decoded, band-limited again and resampled back.
``reverb``
    A synthetic shoebox room (:func:`room_impulse_response`, image-source
    method of pyroomacoustics), RT60 0.3-0.8 s; the room is one of a bank of
    64 drawn from the seed (``seed % 64``, :func:`reverberate`).
``agc``
    Dynamic-range compression with make-up gain to -20 dBFS active level
    (:func:`compress`), as a phone's or a headset's automatic gain control.
``mic``
    A random microphone response (:func:`mic_response_db`): spectral tilt,
    low cut and resonances, drawn from the seed.
``short1.5``
    Only the first 1.5 s of speech (:func:`first_speech`: from the speech
    detector's first segment).

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

import functools
import io
import warnings
from collections.abc import Callable
from typing import Final

import numpy as np

from .audio import TARGET_SR, AudioLimits, load_audio

__all__ = [
    "ACTIVE", "CONDITIONS", "CONDITIONS_VERSION", "PHONE_BAND_HZ", "RT60_RANGE_S", "active_power", "active_region",
    "add_noise", "apply_condition", "compress", "condition_parts", "first_speech", "is_condition", "mic_response_db",
    "opus_round_trip", "phone_channel", "reverberate", "room_impulse_response",
]  # fmt: skip


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


# ---------------------------------------------------------- channel conditions
PHONE_BAND_HZ: Final[tuple[float, float]] = (300.0, 3400.0)
"""Pass band of a telephone channel in Hz (ITU-T G.712, the PCM channel's transmission band)."""

RT60_RANGE_S: Final[tuple[float, float]] = (0.3, 0.8)
"""Reverberation times of the ``reverb`` rooms in seconds: living rooms and offices (the issue's range)."""


@functools.lru_cache(maxsize=4)
def _phone_filter(sr: int) -> np.ndarray:
    from scipy.signal import firwin, kaiserord

    # A linear-phase FIR (Kaiser window, 60 dB stop band, 50 Hz transitions centred 25 Hz outside the band):
    # speech carries much of its energy just below 300 Hz (F0 and its first harmonics), so a gentle IIR edge
    # (5th-order elliptic: -17 dB at 250 Hz) left 90 % of it, measured on the angry fixture clip.
    transition = 50.0
    numtaps, beta = kaiserord(60.0, transition / (0.5 * sr))
    lo, hi = PHONE_BAND_HZ
    edges = [lo - transition / 2, hi + transition / 2]
    return firwin(numtaps | 1, edges, window=("kaiser", beta), pass_zero=False, fs=sr)


def _band(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, taps, mode="same")  # odd, symmetric taps: zero delay


def phone_channel(y: np.ndarray, *, sr: int = TARGET_SR, mulaw: bool = True) -> np.ndarray:
    """Send a signal through a narrow-band telephone channel.

    The signal is resampled to 8 kHz (soxr, HQ), band-limited to
    :data:`PHONE_BAND_HZ` by a steep linear-phase band-pass (the sender's
    channel filter: Kaiser-window FIR, 60 dB stop band from 250 Hz down and
    3450 Hz up), optionally coded as G.711 mu-law (8 bit, ITU-T G.711 through
    the standard library's ``audioop``), band-limited again (the receiver's
    filter, which also removes the quantisation noise outside the band) and
    resampled back to ``sr``.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``sr``, full scale 1.0.
    sr : int, default 16000
        Sample rate of ``y`` and of the result, in Hz.
    mulaw : bool, default True
        Code the 8 kHz signal as G.711 mu-law.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Clipped to [-1, 1].
    """
    import soxr

    x = np.asarray(y, dtype=np.float32)
    narrow = soxr.resample(x, sr, 8000, quality="HQ").astype(np.float64)
    taps = _phone_filter(8000)
    narrow = np.clip(_band(narrow, taps), -1.0, 1.0)
    if mulaw:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # audioop: stdlib to 3.12, audioop-lts after
            import audioop
        pcm = np.round(narrow * 32767).astype("<i2").tobytes()
        decoded = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
        narrow = _band(np.frombuffer(decoded, dtype="<i2") / 32768.0, taps)
    out = soxr.resample(narrow.astype(np.float32), 8000, sr, quality="HQ")
    out = np.pad(out, (0, max(0, x.size - out.size)))[: x.size]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=64)
def room_impulse_response(seed: int, sr: int = TARGET_SR) -> tuple[np.ndarray, float]:
    """The impulse response of a synthetic shoebox room drawn from a seed.

    The room (length 3-8 m, width 2.5-6 m, height 2.4-3.2 m), the target
    reverberation time (uniform in :data:`RT60_RANGE_S`) and the positions of
    talker and microphone (at least 0.5 m from every wall) come from
    ``numpy.random.default_rng(seed)``.  pyroomacoustics's image-source
    method computes the response, with the wall absorption of Sabine's
    formula for that RT60 (``pyroomacoustics.inverse_sabine``).  In a
    shoebox of uniform absorption the image-source decay is slower than
    Sabine's (measured here: 0.97-1.49 times the target for targets of
    0.38-0.79 s), so the response's envelope is then corrected by
    ``exp(-a t)`` until its T30 (Schroeder backward integration,
    ``pyroomacoustics.experimental.measure_rt60``) equals the target.

    Cached per process: a room costs 0.05-2 s to compute.

    Parameters
    ----------
    seed : int
        Selects the room.
    sr : int, default 16000
        Sample rate in Hz.

    Returns
    -------
    rir : np.ndarray, shape (n_taps,), float32, read-only
        The impulse response, direct path first (leading delay removed),
        peak 1.
    rt60_s : float
        The target reverberation time in seconds.
    """
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    dims = np.array([rng.uniform(3.0, 8.0), rng.uniform(2.5, 6.0), rng.uniform(2.4, 3.2)])
    rt60 = float(rng.uniform(*RT60_RANGE_S))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    rir = rir[max(0, int(np.argmax(np.abs(rir))) - round(0.001 * sr)) :]  # keep 1 ms before the direct path
    measured = float(pra.experimental.measure_rt60(rir, fs=sr, decay_db=30))
    t = np.arange(rir.size) / sr
    # Amplitude falls by 60 dB (a factor e^-6.91) in one RT60: re-time the decay from `measured` to `rt60`.
    rir = rir * np.exp(-6.9078 * (1.0 / rt60 - 1.0 / measured) * t)
    rir = rir[: max(1, round(1.2 * rt60 * sr))]  # past 1.2 RT60 the tail is > 70 dB down
    rir = (rir / np.max(np.abs(rir))).astype(np.float32)
    rir.setflags(write=False)
    return rir, rt60


def reverberate(y: np.ndarray, *, seed: int = 0, sr: int = TARGET_SR, rooms: int = 64) -> np.ndarray:
    """Play a signal in one of ``rooms`` synthetic rooms (:func:`room_impulse_response`).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``sr``.
    seed : int, default 0
        Clip seed; the room is ``room_impulse_response(seed % rooms)``.
    sr : int, default 16000
        Sample rate in Hz.
    rooms : int, default 64
        Size of the room bank: a bounded set keeps the per-process cost of
        computing rooms (0.05-2 s each) bounded over a corpus.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Same length (the reverberant tail past the end is cut), same active
        speech level (:func:`active_power`) as ``y``, clipped to [-1, 1].
    """
    from scipy.signal import fftconvolve

    x = np.asarray(y, dtype=np.float64)
    rir, _ = room_impulse_response(seed % rooms, sr)
    wet = fftconvolve(x, rir.astype(np.float64))[: x.size]
    before, after = active_power(x, sr=sr), active_power(wet, sr=sr)
    if after > 0.0:
        wet *= np.sqrt(before / after)
    return np.clip(wet, -1.0, 1.0).astype(np.float32)


def compress(
    y: np.ndarray,
    *,
    sr: int = TARGET_SR,
    threshold_db: float = -10.0,
    ratio: float = 4.0,
    attack_s: float = 0.002,
    release_s: float = 0.06,
    target_dbfs: float = -20.0,
) -> np.ndarray:
    """Dynamic-range compression with make-up gain, as an automatic gain control.

    A feed-forward compressor (Zoelzer U (2011) DAFX, 2nd ed., ch. 4.2,
    Wiley): the level detector follows the signal's power with a one-pole
    filter of ``attack_s`` and lets its level in dB fall no faster than a
    one-pole release of ``release_s`` (8.69 dB per ``release_s``; computed
    exactly, without a loop, as a running maximum).  Above the threshold the
    output level rises by ``1/ratio`` dB per dB.  A make-up gain then sets
    the active speech level (:func:`active_power`) to ``target_dbfs``,
    lowered if needed so that the peak stays below full scale.  A detector
    of one symmetric 10 ms time constant, tried first, let syllable onsets
    through and *raised* the crest factor of two of the four fixture clips.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal, full scale 1.0.
    sr : int, default 16000
        Sample rate in Hz.
    threshold_db : float, default -10.0
        Threshold in dB relative to the active speech level of ``y`` (so
        the same setting compresses a quiet and a loud recording alike).
    ratio : float, default 4.0
        Compression ratio above the threshold, >= 1.
    attack_s, release_s : float, default 0.002, 0.06
        Time constants of the level detector in seconds, > 0.
    target_dbfs : float, default -20.0
        Active speech level of the output in dBFS.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Peak at most 0.99; ``y`` as it is if silent.

    Raises
    ------
    ValueError
        If ``ratio < 1`` or a time constant is not positive.
    """
    from scipy.signal import lfilter

    if ratio < 1.0 or attack_s <= 0.0 or release_s <= 0.0:
        raise ValueError(f"compress: need ratio >= 1 and positive time constants, got {ratio}, {attack_s}, {release_s}")
    x = np.asarray(y, dtype=np.float64)
    reference = active_power(x, sr=sr)
    if reference <= 0.0:
        return x.astype(np.float32)
    a = 1.0 - np.exp(-1.0 / (attack_s * sr))
    level_db = 10 * np.log10(lfilter([a], [1.0, a - 1.0], x**2) + 1e-12)
    # e[n] = max(l[n], e[n-1] - d) unrolls to max_k(l[k] + d k) - d n: a running maximum.
    ramp = np.arange(x.size) * (20 * np.log10(np.e) / (release_s * sr))
    level_db = np.maximum.accumulate(level_db + ramp) - ramp
    threshold = 10 * np.log10(reference) + threshold_db
    gain_db = -np.maximum(level_db - threshold, 0.0) * (1.0 - 1.0 / ratio)
    out = x * 10 ** (gain_db / 20)
    makeup = np.sqrt(10 ** (target_dbfs / 10) / max(active_power(out, sr=sr), 1e-30))
    peak = float(np.max(np.abs(out))) * makeup
    if peak > 0.99:
        makeup *= 0.99 / peak
    return (out * makeup).astype(np.float32)


def mic_response_db(freqs_hz: np.ndarray, seed: int) -> np.ndarray:
    """Magnitude response in dB of a random microphone drawn from a seed.

    Three parts, drawn from ``numpy.random.default_rng(seed)``: a spectral
    tilt of -3 to +3 dB per octave about 1 kHz; a second-order low cut
    (Butterworth magnitude) at 60-200 Hz; and 1-3 resonances or dips of
    -6 to +6 dB, Gaussian in log frequency, centred at 200-6000 Hz
    (log-uniform), 0.3-1.5 octaves wide.  The ranges are assumptions meant
    to span headsets, laptops and phones, not measurements of devices.

    Parameters
    ----------
    freqs_hz : np.ndarray, shape (n_freqs,)
        Frequencies in Hz (>= 0).
    seed : int
        Selects the microphone.

    Returns
    -------
    np.ndarray, shape (n_freqs,), float64
        Gain in dB at each frequency.
    """
    rng = np.random.default_rng(seed)
    f = np.maximum(np.asarray(freqs_hz, dtype=np.float64), 1.0)
    octaves = np.log2(f / 1000.0)
    tilt = rng.uniform(-3.0, 3.0)
    cut = rng.uniform(60.0, 200.0)
    db = tilt * np.clip(octaves, np.log2(50.0 / 1000.0), None) - 10 * np.log10(1.0 + (cut / f) ** 4)
    for _ in range(int(rng.integers(1, 4))):
        centre = np.exp(rng.uniform(np.log(200.0), np.log(6000.0)))
        gain, width = rng.uniform(-6.0, 6.0), rng.uniform(0.3, 1.5)
        db += gain * np.exp(-0.5 * (np.log2(f / centre) / (width / 2.355)) ** 2)  # width = FWHM in octaves
    return db


def _mic(y: np.ndarray, seed: int, sr: int = TARGET_SR) -> np.ndarray:
    x = np.asarray(y, dtype=np.float64)
    n = x.size + 2048  # zero padding: the response's impulse response is short, so no wrap-around
    spectrum = np.fft.rfft(x, n)
    spectrum *= 10 ** (mic_response_db(np.fft.rfftfreq(n, 1.0 / sr), seed) / 20)
    out = np.fft.irfft(spectrum, n)[: x.size]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def first_speech(y: np.ndarray, seconds: float = 1.5, *, sr: int = TARGET_SR, use_vad: bool = True) -> np.ndarray:
    """The first ``seconds`` of speech.

    The speech starts 0.1 s before the first segment of the speech detector
    (:func:`ser_engine.vad.default_detector`; Silero's probability rises a
    frame or more after the onset: 0.01-0.25 s after the energy onset on the
    fixture clips), or, without a detector or when it finds no speech, at the
    first frame of :func:`active_region` (no margin).  The detector also
    finds the onset in noise, where every frame of the clip is within
    :func:`active_region`'s 40 dB and the region starts at the first sample.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``sr``.
    seconds : float, default 1.5
        Duration kept, in seconds.
    sr : int, default 16000
        Sample rate in Hz (the detector needs 16000).
    use_vad : bool, default True
        Use the speech detector; False uses :func:`active_region` only.

    Returns
    -------
    np.ndarray, shape (min(round(seconds * sr), samples left),), float32
        A view of ``y`` when it is float32.
    """
    x = np.asarray(y, dtype=np.float32)
    start = active_region(x, sr=sr, margin_s=0.0).start
    if use_vad and sr == TARGET_SR:
        from .vad import default_detector

        segments = default_detector().speech_segments(x)
        if segments:
            start = max(0, round((segments[0][0] - 0.1) * sr))
    return x[start : start + round(seconds * sr)]


def _agc(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Per-clip settings, so the augmented copies do not all share one compression curve.
    return compress(y, threshold_db=rng.uniform(-15.0, -5.0), ratio=rng.uniform(3.0, 6.0))


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
    "phone": lambda y, seed: phone_channel(y),
    "reverb": lambda y, seed: reverberate(y, seed=seed),
    "agc": _agc,
    "mic": _mic,
    "short1.5": lambda y, seed: first_speech(y, 1.5),
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
