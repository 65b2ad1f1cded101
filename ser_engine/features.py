"""Feature extraction: one STFT per clip, many descriptors, summarised over time.

Every descriptor is derived from a **single** short-time Fourier transform
of the clip (plus the time-domain zero-crossing rate and, optionally, a YIN
pitch track): MFCC and their deltas, mel bands, chroma, spectral contrast,
tonnetz (from that chroma, not from a harmonic/CQT pass), spectral shape and
prosody.  The frame-level descriptors are summarised over time by a fixed set
of statistics, giving one fixed-length vector per clip.

What is computed is fixed by a frozen, versioned :class:`FeatureConfig`,
saved in every model bundle so that training and prediction always agree.
Filter banks depend only on the configuration, so they are built once per
process and cached, not rebuilt per call as ``librosa.feature.chroma_stft``
does.

The descriptors are librosa 0.11's (the model was trained on them), computed
with numpy/scipy directly: the same numbers (bit for bit except the two
edge frames of each delta, which differ by float rounding), without
librosa's per-call rebuilds and without importing librosa at all, whose
numba kernels hold the GIL and whose import costs about 120 MB per process.
Nearly all the work is in large numpy/scipy calls that release the GIL, so
several threads can extract features at once.  ``tests/test_features.py``
checks every piece against librosa and whole vectors against frozen ones.

References
----------
The "tutorial" configuration reproduces the feature set of the widely copied
RAVDESS tutorial recipe (per-file means of 40 MFCC, 12 chroma and 128 mel
bands; e.g. the "Speech Emotion Recognition" project of DataFlair, 2019).
Spectral contrast: Jiang et al., "Music type classification by spectral
contrast feature", ICME 2002.  Tonnetz: Harte, Sandler & Gasser, "Detecting
harmonic change in musical audio", ACM MM workshop 2006.  YIN: de Cheveigné &
Kawahara, JASA 111(4), 2002.  Deltas: Furui, IEEE TASSP 34(1), 1986.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import soxr
from numpy.lib.stride_tricks import sliding_window_view

from .audio import TARGET_SR, AudioLimits, load_audio

__all__ = [
    "FEATURE_VERSION",
    "FeatureConfig",
    "STATISTICS",
    "BASIC_STATISTICS",
    "DESCRIPTOR_GROUPS",
    "stft_magnitude",
    "extract_features",
    "extract_many",
]

FEATURE_VERSION: Final[int] = 1
"""Version of the extraction code; bump whenever the numbers it gives change."""

STATISTICS: Final[tuple[str, ...]] = (
    "mean", "std", "p10", "p50", "p90", "slope", "min", "max", "skew", "kurtosis", "absdiff",
)  # fmt: skip
"""Summary statistics known to :class:`FeatureConfig`, in vector order.

``slope``: least-squares slope against time normalised to [-0.5, 0.5], i.e.
the change over the clip; ``skew`` and ``kurtosis``: population skewness and
excess kurtosis (``scipy.stats.skew`` / ``scipy.stats.kurtosis`` with
``bias=True``; 0 for a constant row); ``absdiff``: mean absolute difference
between consecutive frames (how fast the descriptor moves, per 10 ms hop),
the functionals of openSMILE's large feature sets (Eyben et al., "openSMILE:
the Munich versatile and fast open-source audio feature extractor", ACM MM
2010) that add to the first six.
"""

BASIC_STATISTICS: Final[tuple[str, ...]] = STATISTICS[:6]
"""Mean, std, 10/50/90th percentiles and slope: the default statistics of models before December 2026."""

DESCRIPTOR_GROUPS: Final[tuple[str, ...]] = (
    "mfcc", "mfcc_delta", "mfcc_delta2", "mel", "chroma", "contrast", "tonnetz", "spectral", "prosody",
)  # fmt: skip
"""Frame-level descriptor groups, in the order they appear in the vector."""

_AMIN: Final[float] = 1e-10
_SPECTRAL_NAMES: Final[tuple[str, ...]] = ("centroid", "bandwidth", "rolloff", "flatness", "zcr", "rms_db")


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """What :func:`extract_features` computes; frozen and versioned.

    Parameters
    ----------
    sr : int
        Sample rate in Hz the signal must have.
    n_fft, win_length, hop_length : int
        STFT size, window length and hop in samples (defaults 512 / 400 / 160:
        25 ms Hann windows every 10 ms at 16 kHz, the usual speech framing).
    n_mfcc : int
        Number of MFCC (type-II orthonormal DCT of the log-mel spectrum).
    n_mels : int
        Number of mel bands (Slaney mel scale, as librosa).
    fmin, fmax : float
        Frequency range of the mel filter bank in Hz (``fmax=None``: sr / 2).
    groups : tuple of str
        Descriptor groups to include, a subset of :data:`DESCRIPTOR_GROUPS`.
    stats : tuple of str
        Statistics over time, a subset of :data:`STATISTICS` (default: all
        eleven; :data:`BASIC_STATISTICS`, the first six, were the default
        until the extra five, measured speaker-independently on RAVDESS,
        added 3 points of accuracy: ``models/README.md``).
    log_mel : bool
        Summarise log-mel (dB) bands instead of raw mel power.
    level_dbfs : float or None
        Scale each clip so its active frames have this RMS level in dBFS
        (``None``: keep the recorded level).
    trim_db : float or None
        Drop leading and trailing frames quieter than the loudest frame by
        more than this many dB (``None``: keep all frames).
    fmin_f0, fmax_f0 : float
        Pitch search range of YIN in Hz (prosody group).
    version : int
        Extraction code version the configuration was written with.
    """

    sr: int = TARGET_SR
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mfcc: int = 40
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    groups: tuple[str, ...] = DESCRIPTOR_GROUPS
    stats: tuple[str, ...] = STATISTICS
    log_mel: bool = True
    level_dbfs: float | None = -23.0
    trim_db: float | None = 40.0
    fmin_f0: float = 60.0
    fmax_f0: float = 500.0
    version: int = FEATURE_VERSION
    _names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bad_groups = set(self.groups) - set(DESCRIPTOR_GROUPS)
        bad_stats = set(self.stats) - set(STATISTICS)
        if bad_groups or bad_stats or not self.groups or not self.stats:
            raise ValueError(f"FeatureConfig: unknown or empty groups {sorted(bad_groups)} / stats {sorted(bad_stats)}")
        if not (0 < self.win_length <= self.n_fft and 0 < self.hop_length):
            raise ValueError("FeatureConfig: need 0 < win_length <= n_fft and hop_length > 0")
        if self.version > FEATURE_VERSION:
            raise ValueError(f"FeatureConfig version {self.version} is newer than this engine ({FEATURE_VERSION})")
        # Keep the canonical group order whatever order the caller gave.
        object.__setattr__(self, "groups", tuple(g for g in DESCRIPTOR_GROUPS if g in self.groups))
        object.__setattr__(self, "stats", tuple(s for s in STATISTICS if s in self.stats))
        object.__setattr__(self, "_names", tuple(self._build_names()))

    # ------------------------------------------------------------ presets
    @classmethod
    def tutorial(cls) -> FeatureConfig:
        """The classic tutorial recipe: per-file means of 40 MFCC, chroma, mel.

        librosa's defaults of that recipe (2048-point FFT, 512 hop, 128 raw
        mel power bands, no trimming or level normalisation), 180 features.
        """
        return cls(
            n_fft=2048, win_length=2048, hop_length=512, n_mels=128,
            groups=("mfcc", "chroma", "mel"), stats=("mean",),
            log_mel=False, level_dbfs=None, trim_db=None,
        )  # fmt: skip

    # ------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``from_dict`` inverts it)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self) if f.init}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build a config from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            Unknown keys, or a version newer than this engine.
        """
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"FeatureConfig: unknown keys {sorted(unknown)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)

    # ------------------------------------------------------------- layout
    @property
    def n_features(self) -> int:
        """Length of the feature vector."""
        return len(self._names)

    def feature_names(self) -> tuple[str, ...]:
        """Name of every entry of the vector, e.g. ``"mfcc_3_std"``."""
        return self._names

    def group_rows(self, group: str) -> tuple[str, ...]:
        """Row names of one frame-level descriptor group."""
        if group in ("mfcc", "mfcc_delta", "mfcc_delta2"):
            return tuple(f"{group}_{i}" for i in range(self.n_mfcc))
        if group == "mel":
            return tuple(f"mel_{i}" for i in range(self.n_mels))
        if group == "chroma":
            return tuple(f"chroma_{i}" for i in range(12))
        if group == "contrast":
            return tuple(f"contrast_{i}" for i in range(7))
        if group == "tonnetz":
            return tuple(f"tonnetz_{i}" for i in range(6))
        if group == "spectral":
            return _SPECTRAL_NAMES
        if group == "prosody":
            return ("f0_semitones",)
        raise ValueError(group)

    def _build_names(self) -> list[str]:
        names = [f"{row}_{s}" for g in self.groups for row in self.group_rows(g) for s in self.stats]
        if "prosody" in self.groups:
            names += ["voiced_ratio", "voicing_onsets_per_s"]
        return names


# ----------------------------------------------------------------- caches
# Everything that depends only on the configuration is built once per process.
# librosa 0.11 is the definition of every descriptor here, but extraction does
# not import it: librosa loads numba and LLVM (about 120 MB per process, and a
# fresh install compiles its kernels on first use, ~30 s), and its numba
# kernels hold the GIL.  tests/test_features.py checks each numpy version
# below against its librosa function, on real speech.
@functools.lru_cache(maxsize=16)
def _window_energy(win_length: int) -> float:
    """Sum of squares of the periodic Hann window of ``win_length`` samples."""
    return float(np.sum(scipy.signal.get_window("hann", win_length, fftbins=True) ** 2))


@functools.lru_cache(maxsize=16)
def _stft_window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` zeros, float64.

    As ``librosa.stft(window="hann")``: ``scipy.signal.get_window(fftbins=True)``
    padded on both sides (``librosa.util.pad_center``).
    """
    win = np.zeros(n_fft)
    lpad = (n_fft - win_length) // 2
    win[lpad : lpad + win_length] = scipy.signal.get_window("hann", win_length, fftbins=True)
    win.flags.writeable = False
    return win


# Slaney's mel scale (Auditory Toolbox, 1998), as librosa's default (htk=False):
# linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_MEL_F_SP: Final[float] = 200.0 / 3
_MEL_MIN_LOG_HZ: Final[float] = 1000.0
_MEL_MIN_LOG_MEL: Final[float] = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP: Final[float] = float(np.log(6.4) / 27.0)


def _hz_to_mel(hz: float) -> np.float64:
    """Slaney mel of a frequency in Hz (``librosa.hz_to_mel(htk=False)`` of a scalar)."""
    f = np.float64(hz)
    if f >= _MEL_MIN_LOG_HZ:
        return _MEL_MIN_LOG_MEL + np.log(f / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return f / _MEL_F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Frequencies in Hz of Slaney mels (``librosa.mel_to_hz(htk=False)``)."""
    hz = _MEL_F_SP * mels
    log = mels >= _MEL_MIN_LOG_MEL
    hz[log] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log] - _MEL_MIN_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney-normalised triangular mel filter bank: (n_mels, 1 + n_fft // 2), float32.

    The same numbers as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
    fmin=fmin, fmax=fmax, dtype=np.float32)`` (librosa 0.11: triangles between
    mel-spaced edge frequencies, each scaled by 2 / its width in Hz for equal
    area; the float64 triangles are rounded to float32 before that scaling),
    built in numpy so that extraction never imports librosa, whose import
    loads numba and LLVM (about 120 MB of memory in a worker process).
    tests/test_features.py checks equality with librosa's.
    """
    fmax = float(sr) / 2 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    dist = np.subtract.outer(edges, fft_hz)  # (n_mels + 2, n_bins): edge minus bin frequency
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=16)
def _chroma_basis(sr: int, n_fft: int) -> np.ndarray:
    """Chroma filter bank of 12 pitch classes, C first: (12, 1 + n_fft // 2), float32.

    The same numbers as ``librosa.filters.chroma(sr=sr, n_fft=n_fft,
    tuning=0.0, dtype=np.float32)`` with its defaults (Ellis's chromagram
    filters: for each FFT bin a Gaussian bump over the pitch classes, of
    width the bin's spacing in semitones, each bin's bumps L2-normalised,
    then weighted by a Gaussian over octaves centred on octave 5 with a
    2-octave half-width), built in numpy for the reason given at
    :func:`_mel_basis`.  tests/test_features.py checks equality with librosa's.
    """
    n_chroma, center_octave, octave_width = 12, 5.0, 2
    bin_hz = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    # Position of each bin in semitones above C0-ish (A440 / 16), tuning 0.
    semis = n_chroma * np.log2(bin_hz / (float(440.0 * 2.0 ** (0.0 / n_chroma)) / 16))
    semis = np.concatenate(([semis[0] - 1.5 * n_chroma], semis))  # 0 Hz: 1.5 octaves below bin 1
    spacing = np.concatenate((np.maximum(semis[1:] - semis[:-1], 1.0), [1]))
    half = np.round(float(n_chroma) / 2)
    # Distance of each bin to each pitch class, wrapped to [-6, 6) semitones.
    dist = np.subtract.outer(semis, np.arange(0, n_chroma, dtype="d")).T
    dist = np.remainder(dist + half + 10 * n_chroma, n_chroma) - half
    w = np.exp(-0.5 * (2 * dist / spacing[None, :]) ** 2)
    norm = np.sum(np.abs(w) ** 2, axis=0, keepdims=True) ** (1.0 / 2)
    norm[norm < np.finfo(w.dtype).tiny] = 1.0
    w = w / norm
    w *= np.exp(-0.5 * (((semis / n_chroma - center_octave) / octave_width) ** 2))[None, :]
    w = np.roll(w, -3 * (n_chroma // 12), axis=0)  # start at C, not A
    out = np.ascontiguousarray(w[:, : int(1 + n_fft / 2)], dtype=np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def _fft_freqs(sr: int, n_fft: int) -> np.ndarray:
    """Centre frequency of each STFT bin in Hz, float32 (``librosa.fft_frequencies``)."""
    return np.fft.rfftfreq(n=n_fft, d=1.0 / sr).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _savgol_delta(width: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Savitzky-Golay filter of ``librosa.feature.delta(width, order, mode="interp")``.

    Returns
    -------
    coeffs : np.ndarray, shape (width,)
        Convolution coefficients (``scipy.signal.savgol_coeffs(width, order,
        deriv=order)``), applied inside the signal.
    edges : np.ndarray, shape (width, width)
        ``edges @ x`` is the filter's output over a window ``x`` of ``width``
        samples with ``mode="interp"`` (a polynomial of degree ``order`` fitted
        to the window, differentiated ``order`` times); its first and last
        ``width // 2`` rows give the outputs near the two ends of a signal.
        Obtained by filtering the identity matrix with
        ``scipy.signal.savgol_filter``, so it is that function's edge fit
        as one linear map instead of two ``numpy.polyfit`` calls per use.
    """
    coeffs = scipy.signal.savgol_coeffs(width, order, deriv=order)
    edges = scipy.signal.savgol_filter(np.eye(width), width, order, deriv=order, axis=0, mode="interp")
    coeffs.flags.writeable = edges.flags.writeable = False
    return coeffs, edges


@functools.lru_cache(maxsize=16)
def _contrast_bands(sr: int, n_fft: int) -> tuple[tuple[int, int, int], ...]:
    """Sub-bands of ``librosa.feature.spectral_contrast`` (defaults: fmin 200 Hz, 6 octave bands, quantile 0.02).

    Returns
    -------
    tuple of (first_bin, stop_bin, n_extreme)
        For each of the 7 bands, the STFT bins it spans and how many of the
        smallest and largest magnitudes its valley and peak average, chosen
        exactly as librosa 0.11 does (one extra bin below each band but the
        first, the last bin of each band but the last dropped, the last band
        running to Nyquist).
    """
    fmin, n_bands, quantile = 200.0, 6, 0.02
    freq = _fft_freqs(sr, n_fft)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    if np.any(octa[:-1] >= 0.5 * sr):
        raise ValueError(f"spectral contrast: the bands exceed the Nyquist frequency of {sr} Hz")
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        current = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(current)
        if idx.size == 0:
            raise ValueError(f"spectral contrast: band {k} has no STFT bin (n_fft={n_fft} is too small)")
        if k > 0:
            current[idx[0] - 1] = True
        if k == n_bands:
            current[idx[-1] + 1 :] = True
        rows = np.flatnonzero(current)
        if k < n_bands:
            rows = rows[:-1]
        n_extreme = int(max(np.rint(quantile * np.sum(current)), 1))
        assert rows.size >= 2 * n_extreme and np.all(np.diff(rows) == 1)
        bands.append((int(rows[0]), int(rows[-1]) + 1, n_extreme))
    return tuple(bands)


@functools.lru_cache(maxsize=4)
def _tonnetz_basis(n_chroma: int = 12) -> np.ndarray:
    """Tonal-centroid projection of ``librosa.feature.tonnetz``: (6, n_chroma), float64."""
    dim_map = np.linspace(0, 12, num=n_chroma, endpoint=False)
    scale = np.asarray([7.0 / 6, 7.0 / 6, 3.0 / 2, 3.0 / 2, 2.0 / 3, 2.0 / 3])
    V = np.multiply.outer(scale, dim_map)
    V[::2] -= 0.5  # even rows: sines
    R = np.array([1, 1, 1, 1, 0.5, 0.5])  # fifths, minor thirds, major thirds
    phi = R[:, np.newaxis] * np.cos(np.pi * V)
    phi.flags.writeable = False
    return phi


# ---------------------------------------------------------------- helpers
def stft_magnitude(*, y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Magnitude STFT as :func:`extract_features` expects it.

    The same numbers as ``np.abs(librosa.stft(y, window="hann", center=True,
    pad_mode="constant"))`` (float64 windowed frames, cast to complex64 as
    librosa does for a float32 signal), computed on a strided view of the
    zero-padded signal with one ``scipy.fft.rfft`` call.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono floating-point signal at ``config.sr`` Hz, finite.
    config : FeatureConfig
        Gives ``n_fft``, ``win_length`` and ``hop_length``.

    Returns
    -------
    np.ndarray, shape (1 + n_fft // 2, 1 + n_samples // hop_length), float32
        ``|STFT|`` with centred, zero-padded Hann frames (Fortran-ordered:
        each frame contiguous, as librosa returns it).

    Raises
    ------
    ValueError
        ``y`` is not a one-dimensional floating-point array, or has
        non-finite samples.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"stft_magnitude: y must be a 1-D floating-point signal, got {y.dtype} {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("stft_magnitude: the signal has NaN or infinite samples")
    half = config.n_fft // 2
    frames = sliding_window_view(np.pad(y, half), config.n_fft)[:: config.hop_length]
    window = _stft_window(config.n_fft, config.win_length)
    out = np.empty((frames.shape[0], 1 + half), dtype=np.float32)
    complex_type = np.result_type(y.dtype, np.complex64)  # librosa's output type: complex64 for float32
    for start in range(0, frames.shape[0], block := _block_frames(config.n_fft)):
        spec = scipy.fft.rfft(frames[start : start + block] * window, axis=-1)
        # Round to librosa's output type first, then take |.|.
        np.abs(spec.astype(complex_type, copy=False), out=out[start : start + block], casting="same_kind")
    return out.T  # Fortran-ordered, like librosa's matrix


def _block_frames(frame_length: int) -> int:
    """Frames per block so that a block of float64 frames is 256 KiB.

    Working in blocks keeps the temporaries of the FFTs in cache and under
    glibc's mmap threshold (whole-clip temporaries of several MB are mapped
    and unmapped, page fault by page fault, on every call); librosa blocks
    its STFT the same way (``librosa.util.MAX_MEM_BLOCK``).  Each frame is
    transformed on its own, so blocking does not change any number.
    """
    return max(1, 2**18 // (8 * frame_length))


def _summarise(M: np.ndarray, stats: Sequence[str], sort_dtype: type = np.float64) -> np.ndarray:
    """Statistics over time of each row: (n_rows, T) -> (n_rows * n_stats,).

    ``sort_dtype=np.float32`` sorts a float32 copy for the percentiles, minimum
    and maximum: about 3.5 times faster (numpy's SIMD sort), the same values
    for float32 rows and within float32 rounding (6e-8 relative) for the
    float64 ones (the timeline's windows, :mod:`ser_engine.timeline`).
    """
    n_rows, T = M.shape
    out = np.empty((n_rows, len(stats)), dtype=np.float64)
    if T == 0:
        out[:] = 0.0
        return out.ravel()
    M64 = np.ascontiguousarray(M, dtype=np.float64)
    pct_idx = [i for i, s in enumerate(stats) if s in ("p10", "p50", "p90")]
    if pct_idx:
        # One sort serves every percentile (linear interpolation, as np.percentile).
        # (A full sort: numpy's vectorised sort beats np.partition with several kth here.)
        srt = np.sort(M64 if sort_dtype is np.float64 else M64.astype(sort_dtype), axis=1).astype(np.float64, copy=False)
        for i in pct_idx:
            pos = float(stats[i][1:]) / 100.0 * (T - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, T - 1)
            out[:, i] = srt[:, lo] + (pos - lo) * (srt[:, hi] - srt[:, lo])
    mean = M64.mean(axis=1)
    wanted = set(stats)
    c = M64 - mean[:, None] if wanted & {"std", "slope", "skew", "kurtosis"} else M64
    c2 = c * c if wanted & {"std", "skew", "kurtosis"} else c
    m2 = c2.mean(axis=1) if c2 is not c else mean
    for i, s in enumerate(stats):
        if s == "mean":
            out[:, i] = mean
        elif s == "std":
            out[:, i] = np.sqrt(m2)
        elif s == "slope":
            if T < 2:
                out[:, i] = 0.0
            else:
                t = np.linspace(-0.5, 0.5, T)
                out[:, i] = c @ t / float(t @ t)
        elif s == "min":
            out[:, i] = srt[:, 0] if pct_idx else M64.min(axis=1)
        elif s == "max":
            out[:, i] = srt[:, -1] if pct_idx else M64.max(axis=1)
        elif s == "absdiff":
            out[:, i] = np.abs(np.diff(M64, axis=1)).mean(axis=1) if T > 1 else 0.0
        elif s in ("skew", "kurtosis"):
            # Rows with (numerically) no variance, scipy's test: m2 <= (eps * mean)^2.
            flat = m2 <= (np.finfo(np.float64).eps * mean) ** 2
            var = np.where(flat, 1.0, m2)
            if s == "skew":
                value = np.einsum("ij,ij->i", c2, c) / T / var**1.5
            else:
                value = np.einsum("ij,ij->i", c2, c2) / T / var**2 - 3.0
            out[:, i] = np.where(flat, 0.0, value)
    return out.ravel()


def _power_to_db(x: np.ndarray, *, top_db: float | None) -> np.ndarray:
    """``librosa.power_to_db(x, ref=1.0, amin=1e-10, top_db=top_db)``: 10 log10(max(x, 1e-10)), floored."""
    log_spec = 10.0 * np.log10(np.maximum(_AMIN, x))
    if top_db is not None and log_spec.size:
        log_spec = np.maximum(log_spec, log_spec.max() - top_db)
    return log_spec


def _delta(x: np.ndarray, *, width: int, order: int) -> np.ndarray:
    """``librosa.feature.delta(x, width=width, order=order, axis=-1, mode="interp")``: (n, T) -> (n, T).

    The same Savitzky-Golay filter (``scipy.signal.savgol_filter``: interior
    by ``scipy.ndimage.convolve1d``, the ``width // 2`` frames at each end by
    the fitted polynomial), with the coefficients cached instead of refitted
    on every call.  Requires ``3 <= width <= T``, ``width`` odd.
    """
    coeffs, edges = _savgol_delta(width, order)
    half = width // 2
    out = scipy.ndimage.convolve1d(x, coeffs, axis=-1, mode="constant")
    out[:, :half] = x[:, :width] @ edges[:half].T
    out[:, -half:] = x[:, -width:] @ edges[width - half :].T
    return out


def _spectral_contrast(S: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """``librosa.feature.spectral_contrast(S=S, sr, n_fft, freq)`` with default bands: (7, T), dB.

    Per band, the mean of the ``n`` smallest and of the ``n`` largest
    magnitudes (``n`` = 2 % of the band, at least 1): a minimum and a
    maximum where ``n`` is 1 (all bands but one at the default framing)
    instead of a sort, otherwise librosa's sort, so the numbers are the same.
    """
    peak, valley = _contrast_extremes(S, config)
    return _power_to_db(peak, top_db=80.0) - _power_to_db(valley, top_db=80.0)


def _contrast_extremes(S: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Peak and valley magnitude of each contrast band and frame: two (7, T) float64 arrays (see above)."""
    bands = _contrast_bands(config.sr, config.n_fft)
    starts = [first for first, _, _ in bands]
    if all(stop == nxt for (_, stop, _), nxt in zip(bands, [*starts[1:], S.shape[0]])):
        # The bands tile the spectrum from starts[0] up: every band's extremes in one reduction.
        valley = np.minimum.reduceat(S, starts, axis=0).astype(np.float64)
        peak = np.maximum.reduceat(S, starts, axis=0).astype(np.float64)
    else:
        valley = np.stack([S[first:stop].min(axis=0) for first, stop, _ in bands]).astype(np.float64)
        peak = np.stack([S[first:stop].max(axis=0) for first, stop, _ in bands]).astype(np.float64)
    for k, (first, stop, n) in enumerate(bands):
        if n > 1:
            # C order, as librosa's boolean-mask copy: np.mean then adds the rows in the same order.
            srt = np.sort(np.ascontiguousarray(S[first:stop]), axis=0)
            valley[k] = np.mean(srt[:n], axis=0)
            peak[k] = np.mean(srt[-n:], axis=0)
    return peak, valley


def _tonnetz(chroma: np.ndarray) -> np.ndarray:
    """``librosa.feature.tonnetz(chroma=chroma)``: (12, T) -> (6, T), float64."""
    length = np.abs(chroma).astype(np.float64).sum(axis=0, keepdims=True)  # L1 norm (librosa.util.normalize)
    length[length < np.finfo(chroma.dtype).tiny] = 1.0
    normed = np.empty_like(chroma)
    normed[:] = chroma / length
    return np.einsum("pc,...ci->...pi", _tonnetz_basis(chroma.shape[0]), normed, optimize=True)


def _active_span(power_db: np.ndarray, trim_db: float | None) -> slice:
    """Frames from the first to the last one within ``trim_db`` of the loudest."""
    if trim_db is None or power_db.size == 0:
        return slice(0, power_db.size)
    active = np.flatnonzero(power_db >= power_db.max() - trim_db)
    return slice(int(active[0]), int(active[-1]) + 1)


# ------------------------------------------------------------- extraction
def extract_features(
    *,
    y: np.ndarray | None = None,
    sr: int = TARGET_SR,
    S: np.ndarray | None = None,
    config: FeatureConfig | None = None,
) -> np.ndarray:
    """Summarise one clip as a fixed-length feature vector.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,), optional
        Mono signal at ``sr`` Hz.  Needed for the ``spectral`` (zero-crossing
        rate) and ``prosody`` (YIN) groups and for ``level_dbfs``.
    sr : int
        Sample rate of ``y`` in Hz; must equal ``config.sr``.
    S : np.ndarray, shape (1 + n_fft // 2, n_frames), optional
        Precomputed magnitude STFT of ``y`` from :func:`stft_magnitude`.
        Computed from ``y`` when omitted.
    config : FeatureConfig, optional
        What to compute (default ``FeatureConfig()``).

    Returns
    -------
    np.ndarray, shape (config.n_features,), float32
        Finite values, laid out as ``config.feature_names()``.

    Raises
    ------
    ValueError
        Neither ``y`` nor ``S`` given, ``sr`` differs from ``config.sr``,
        ``S`` has the wrong number of bins, ``y`` is needed but missing, or
        ``y`` is not a finite one-dimensional floating-point signal.
    """
    config = config or FeatureConfig()
    if sr != config.sr:
        raise ValueError(f"extract_features: sr={sr} but the config expects {config.sr} Hz")
    if y is None and S is None:
        raise ValueError("extract_features: give y, S or both")
    needs_y = "prosody" in config.groups or "spectral" in config.groups
    if y is None and needs_y:
        raise ValueError("extract_features: groups 'spectral' and 'prosody' need the signal y")

    gain = 1.0
    if S is None:
        assert y is not None
        S = stft_magnitude(y=y, config=config)
    if S.shape[0] != 1 + config.n_fft // 2:
        raise ValueError(f"extract_features: S has {S.shape[0]} bins, expected {1 + config.n_fft // 2}")

    P = np.square(S, dtype=np.float32)
    frame_power = P.sum(axis=0)
    frame_db = 10.0 * np.log10(np.maximum(frame_power, _AMIN))
    span = _active_span(frame_db, config.trim_db)
    if config.level_dbfs is not None and frame_db.size:
        # Level of the loud frames (within 30 dB of the loudest kept one), as
        # RMS re full scale: by Parseval, a frame of RMS r gives a one-sided
        # power sum of about r^2 * n_fft * sum(w^2) / 2.
        kept = frame_db[span]
        loud = kept[kept >= kept.max() - 30.0]
        power = float(np.mean(10.0 ** (loud / 10.0)))
        level = 10.0 * np.log10(max(2.0 * power / (config.n_fft * _window_energy(config.win_length)), _AMIN))
        gain = 10.0 ** ((config.level_dbfs - level) / 20.0)
    S = S[:, span] * np.float32(gain)
    P = P[:, span] * np.float32(gain * gain)
    T = S.shape[1]

    need_mel = any(g in config.groups for g in ("mfcc", "mfcc_delta", "mfcc_delta2", "mel"))
    log_mel = mel = mfcc = chroma = None
    if need_mel:
        mel = _mel_basis(config.sr, config.n_fft, config.n_mels, config.fmin, config.fmax) @ P
        log_mel = _power_to_db(mel, top_db=None)
    if any(g in config.groups for g in ("mfcc", "mfcc_delta", "mfcc_delta2")):
        mfcc = scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[: config.n_mfcc]
    if "chroma" in config.groups or "tonnetz" in config.groups:
        raw = _chroma_basis(config.sr, config.n_fft) @ P
        length = raw.max(axis=0, initial=0.0)  # inf-norm per frame (librosa.util.normalize); raw >= 0
        length[length < np.finfo(raw.dtype).tiny] = 1.0
        chroma = raw / length
    freqs = _fft_freqs(config.sr, config.n_fft)
    width = 9 if T >= 9 else (T if T % 2 == 1 else T - 1)

    # Every frame-level descriptor has T columns: stacked, they are summarised
    # in one pass, in group order (prosody, whose pitch row covers only the
    # voiced frames, is last in DESCRIPTOR_GROUPS and summarised on its own).
    rows: list[np.ndarray] = []
    for group in config.groups:
        if group == "mfcc":
            rows.append(mfcc)
        elif group in ("mfcc_delta", "mfcc_delta2"):
            order = 1 if group == "mfcc_delta" else 2
            rows.append(_delta(mfcc, width=width, order=order) if width >= 3 else np.zeros_like(mfcc))
        elif group == "mel":
            rows.append(log_mel if config.log_mel else mel)
        elif group == "chroma":
            rows.append(chroma)
        elif group == "contrast":
            rows.append(_spectral_contrast(S, config) if T else np.zeros((7, 0)))
        elif group == "tonnetz":
            rows.append(_tonnetz(chroma) if T else np.zeros((6, 0)))
        elif group == "spectral":
            rows.append(_spectral_shape(S, P, freqs, y, gain, span, config))
    parts = [_summarise(np.vstack(rows), config.stats)] if rows else []
    if "prosody" in config.groups:
        f0_row, voiced_ratio, onsets_per_s = _prosody(y, gain, span, frame_db[span], config)
        parts += [_summarise(f0_row, config.stats), np.array([voiced_ratio, onsets_per_s])]
    out = np.concatenate(parts).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _zero_crossing_rate(y: np.ndarray, *, frame_length: int, hop_length: int) -> np.ndarray:
    """Fraction of sign changes in centred frames: (n_samples,) -> (1 + n_samples // hop,).

    Frames are centred on multiples of ``hop_length`` and zero-padded at the
    edges, like ``librosa.feature.zero_crossing_rate(center=True)``, but
    computed with one cumulative sum instead of a framed copy of the signal.
    """
    crossings = np.concatenate(([0], np.cumsum(np.signbit(y[1:]) != np.signbit(y[:-1]), dtype=np.int64)))
    n_frames = 1 + len(y) // hop_length
    centres = np.arange(n_frames) * hop_length
    start = np.clip(centres - frame_length // 2, 0, len(y) - 1)
    stop = np.clip(centres + frame_length // 2 - 1, 0, len(y) - 1)
    return (crossings[stop] - crossings[start]) / float(frame_length)


def _spectral_shape(
    S: np.ndarray, P: np.ndarray, freqs: np.ndarray, y: np.ndarray | None, gain: float, span: slice, config: FeatureConfig
) -> np.ndarray:
    """Centroid, bandwidth, 85 % roll-off (kHz), flatness, ZCR, RMS (dB): (6, T)."""
    T = S.shape[1]
    out = np.zeros((6, T), dtype=np.float64)
    if T == 0:
        return out
    total = S.sum(axis=0) + _AMIN
    centroid = (freqs[:, None] * S).sum(axis=0) / total
    bandwidth = np.sqrt(((freqs[:, None] - centroid) ** 2 * S).sum(axis=0) / total)
    cum = np.cumsum(P, axis=0)
    rolloff = freqs[np.argmax(cum >= 0.85 * cum[-1:], axis=0)]
    logP = np.log(np.maximum(P, _AMIN))
    flatness = np.exp(logP.mean(axis=0)) / np.maximum(P.mean(axis=0), _AMIN)
    assert y is not None
    zcr = _zero_crossing_rate(y, frame_length=config.n_fft, hop_length=config.hop_length)[span]
    rms_db = 10.0 * np.log10(np.maximum(P.sum(axis=0), _AMIN))
    out[0], out[1], out[2] = centroid / 1000.0, bandwidth / 1000.0, rolloff / 1000.0
    out[3], out[4], out[5] = flatness, zcr[:T] if zcr.size >= T else np.pad(zcr, (0, T - zcr.size)), rms_db
    return out


def _yin(
    y: np.ndarray,
    *,
    fmin: float,
    fmax: float,
    sr: int,
    frame_length: int,
    hop_length: int,
    trough_threshold: float,
    span: slice = slice(None),
) -> np.ndarray:
    """YIN pitch track: ``librosa.yin(y, center=True, pad_mode="constant", ...)`` in plain numpy.

    The same steps and number types as librosa 0.11 (de Cheveigné & Kawahara
    2002: difference function from the autocorrelation, cumulative mean
    normalisation, first trough below ``trough_threshold`` else the global
    minimum, parabolic refinement), with frames laid out along rows so that
    every FFT, cumulative sum and search runs over contiguous memory, and
    the parabolic shift computed only at the chosen trough instead of at
    every lag.  librosa runs the last two steps in numba kernels, which hold
    the GIL.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Signal at ``sr`` Hz.
    fmin, fmax : float
        Pitch search range in Hz; ``0 < fmin < fmax <= sr / 2``.
    sr : int
        Sample rate in Hz.
    frame_length, hop_length : int
        Frame and hop in samples; frames are centred (zero padding).
    span : slice, default all frames
        The frames to analyse (each frame's pitch depends on its own samples
        only, so a slice gives the values of that slice of the whole track).

    Returns
    -------
    np.ndarray, shape (len(range(1 + n_samples // hop_length)[span]),), float64
        Pitch in Hz of each frame.

    Raises
    ------
    ValueError
        The pitch range does not fit the sample rate or the frame length.
    """
    if not (0 < fmin < fmax <= sr / 2) or sr / fmin >= frame_length - 1:
        raise ValueError(f"YIN: pitch range {fmin}-{fmax} Hz does not fit sr={sr} and frame_length={frame_length}")
    frames = sliding_window_view(np.pad(y, frame_length // 2), frame_length)[::hop_length][span]  # (n_frames, L)
    min_period = int(np.floor(sr / fmax))
    max_period = min(int(np.ceil(sr / fmin)), frame_length - 1)
    # Autocorrelation up to lag max_period (librosa.autocorrelate, whose FFT library is scipy.fft).
    n_pad = scipy.fft.next_fast_len(2 * frame_length - 1, real=True)
    acf = np.empty((frames.shape[0], max_period + 1), dtype=np.result_type(frames.dtype, np.float32))
    for start in range(0, frames.shape[0], block := _block_frames(n_pad)):
        spec = scipy.fft.rfft(frames[start : start + block], n=n_pad, axis=-1)
        acf[start : start + block] = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=n_pad, axis=-1)[:, : max_period + 1]
    # Difference function d(k) = 2 (r(0) - r(k)) - sum_{m<k} y(m)^2 (with librosa's
    # zero energy term at k = 1), then its cumulative mean normalisation.
    energy = np.cumsum(np.square(frames[:, :max_period]), axis=-1)
    energy[:, 0] = 0
    diff = 2 * (acf[:, :1] - acf[:, 1:]) - energy
    cumulative_mean = np.cumsum(diff, axis=-1) / np.arange(1, max_period + 1)
    denominator = cumulative_mean[:, min_period - 1 : max_period]
    cmnd = diff[:, min_period - 1 :] / (denominator + np.finfo(denominator.dtype).tiny)  # lags min..max
    # Troughs (librosa.util.localmin along the lags, first lag against its neighbour only).
    trough = np.empty(cmnd.shape, dtype=bool)
    trough[:, 1:-1] = (cmnd[:, 1:-1] < cmnd[:, :-2]) & (cmnd[:, 1:-1] <= cmnd[:, 2:])
    trough[:, 0] = cmnd[:, 0] < cmnd[:, 1]
    trough[:, -1] = cmnd[:, -1] < cmnd[:, -2]
    trough &= cmnd < trough_threshold
    period = np.argmax(trough, axis=-1)
    none = ~trough.any(axis=-1)
    period[none] = np.argmin(cmnd[none], axis=-1)
    # Parabolic interpolation around the chosen lag (0 at the first and last lag,
    # and where the vertex would move by more than one lag).
    rows = np.arange(cmnd.shape[0])
    inner = (period > 0) & (period < cmnd.shape[1] - 1)
    left = cmnd[rows, np.maximum(period - 1, 0)]
    mid = cmnd[rows, period]
    right = cmnd[rows, np.minimum(period + 1, cmnd.shape[1] - 1)]
    a = right + left - 2 * mid
    b = (right - left) / 2
    ok = inner & (np.abs(b) < np.abs(a))
    shift = np.zeros(cmnd.shape[0])
    shift[ok] = -b[ok] / a[ok]
    return sr / (min_period + period + shift)


def _prosody(
    y: np.ndarray | None, gain: float, span: slice, frame_db: np.ndarray, config: FeatureConfig
) -> tuple[np.ndarray, float, float]:
    """YIN pitch on voiced frames (semitones re 100 Hz), voiced ratio, voicing onsets per second."""
    assert y is not None
    T = frame_db.size
    if T == 0:
        return np.zeros((1, 0)), 0.0, 0.0
    return _voicing(_pitch_track(y, config, span), frame_db, config)


def _pitch_track(y: np.ndarray, config: FeatureConfig, span: slice = slice(None)) -> np.ndarray:
    """YIN pitch in Hz of the STFT frames ``span`` of ``y``, shape (len(range(1 + n // hop)[span]),)."""
    # YIN on a copy decimated to 8 kHz: the pitch range ends far below its
    # 4 kHz Nyquist frequency, and the difference function costs half as much.
    pitch_sr = 8000 if config.sr > 8000 else config.sr
    y_pitch = soxr.resample(y, config.sr, pitch_sr, quality="LQ") if pitch_sr != config.sr else y
    hop = config.hop_length * pitch_sr // config.sr
    frame_length = 2 * int(np.ceil(pitch_sr / config.fmin_f0)) + 2
    return _yin(y_pitch, fmin=config.fmin_f0, fmax=config.fmax_f0, sr=pitch_sr, frame_length=frame_length,
                hop_length=hop, trough_threshold=0.1, span=span)  # fmt: skip


def _voicing(f0: np.ndarray, frame_db: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, float, float]:
    """Semitones of the voiced frames, voiced ratio, voicing onsets per second (the end of :func:`_prosody`)."""
    T = frame_db.size
    if T == 0:
        return np.zeros((1, 0)), 0.0, 0.0
    f0 = f0[:T]
    if f0.size < T:
        f0 = np.pad(f0, (0, T - f0.size), constant_values=config.fmax_f0)
    # Voiced: loud enough, and YIN found a period inside the range (not at a bound).
    loud = frame_db >= frame_db.max() - 30.0
    in_range = (f0 > config.fmin_f0 * 1.05) & (f0 < config.fmax_f0 * 0.95)
    voiced = loud & in_range
    semitones = 12.0 * np.log2(f0[voiced] / 100.0) if voiced.any() else np.zeros(0)
    onsets = int(np.count_nonzero(np.diff(voiced.astype(np.int8)) == 1)) + int(voiced[0])
    duration_s = T * config.hop_length / config.sr
    return semitones[None, :], float(voiced.mean()), onsets / max(duration_s, 1e-3)


def _one(item: np.ndarray | str | Path, config: FeatureConfig, limits: AudioLimits | None) -> np.ndarray:
    y = item if isinstance(item, np.ndarray) else load_audio(item, sr=config.sr, limits=limits)
    return extract_features(y=y, sr=config.sr, config=config)


def extract_many(
    items: Iterable[np.ndarray | str | Path],
    *,
    config: FeatureConfig | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    limits: AudioLimits | None = None,
    desc: str = "features",
) -> np.ndarray:
    """Feature vectors of many clips (signals at ``config.sr`` or audio files).

    Parameters
    ----------
    items : iterable of np.ndarray (n_samples,) or path
        Signals already at ``config.sr`` Hz, or files for :func:`load_audio`.
    config : FeatureConfig, optional
        What to compute (default ``FeatureConfig()``).
    n_jobs : int
        Worker processes (joblib/loky); 1 runs in this process.
    progress : bool
        Show a tqdm progress bar on stderr.
    limits : AudioLimits, optional
        Decoding limits for file items.
    desc : str
        Progress-bar label.

    Returns
    -------
    np.ndarray, shape (n_items, config.n_features), float32

    Raises
    ------
    ser_engine.errors.AudioError
        A file item cannot be decoded (the first such error).
    """
    from tqdm.auto import tqdm

    config = config or FeatureConfig()
    items = list(items)
    it: Iterable[Any] = tqdm(items, desc=desc, unit="clip", disable=not progress)
    if n_jobs == 1 or len(items) < 2:
        rows = [_one(x, config, limits) for x in it]
    else:
        from joblib import Parallel, delayed

        # The first clip runs here, before any worker starts (this once let
        # librosa's numba kernels compile in one process; extraction no longer
        # uses librosa or numba).
        it = iter(it)
        first = _one(next(it), config, limits)
        rows = [first, *Parallel(n_jobs=n_jobs, batch_size=8)(delayed(_one)(x, config, limits) for x in it)]
    if not rows:
        return np.zeros((0, config.n_features), dtype=np.float32)
    return np.vstack(rows).astype(np.float32, copy=False)
