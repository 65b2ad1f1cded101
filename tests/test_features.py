"""Feature extraction on real clips: layout, determinism, invariances, one STFT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fft
import soxr

from ser_engine import features as F
from ser_engine.audio import load_audio
from ser_engine.features import FeatureConfig, extract_features, extract_many, stft_magnitude


@pytest.fixture(scope="module")
def clips(fixture_clips):
    return [load_audio(p) for p in fixture_clips]


@pytest.mark.parametrize("config", [FeatureConfig(), FeatureConfig.tutorial()], ids=["default", "tutorial"])
def test_vector_layout_and_finiteness(config, clips):
    for y in clips:
        x = extract_features(y=y, config=config)
        assert x.shape == (config.n_features,) and x.dtype == np.float32
        assert np.isfinite(x).all()
    assert len(set(config.feature_names())) == config.n_features


def test_tutorial_is_the_classic_180_means():
    cfg = FeatureConfig.tutorial()
    assert cfg.n_features == 40 + 12 + 128
    assert all(name.endswith("_mean") for name in cfg.feature_names())


def test_config_round_trips_through_json():
    for cfg in (FeatureConfig(), FeatureConfig.tutorial(), FeatureConfig(groups=("mfcc", "prosody"), stats=("mean",))):
        again = FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg and again.feature_names() == cfg.feature_names()
    with pytest.raises(ValueError):
        FeatureConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        FeatureConfig(version=F.FEATURE_VERSION + 1)
    with pytest.raises(ValueError):
        FeatureConfig(groups=("mfcc", "wavelets"))


def test_precomputed_spectrogram_gives_the_same_vector(clips):
    cfg = FeatureConfig()
    y = clips[0]
    S = stft_magnitude(y=y, config=cfg)
    np.testing.assert_allclose(extract_features(y=y, S=S, config=cfg), extract_features(y=y, config=cfg), rtol=1e-6)
    # Without y, only the groups that need the signal are refused.
    spectral_only = FeatureConfig(groups=("mfcc", "mel", "chroma", "contrast", "tonnetz"))
    assert extract_features(S=stft_magnitude(y=y, config=spectral_only), config=spectral_only).shape == (
        spectral_only.n_features,
    )
    with pytest.raises(ValueError):
        extract_features(S=S, config=cfg)


def test_wrong_rate_or_shape_is_refused(clips):
    with pytest.raises(ValueError):
        extract_features(y=clips[0], sr=22050)
    with pytest.raises(ValueError):
        extract_features(S=np.ones((100, 50), dtype=np.float32), config=FeatureConfig(groups=("mfcc",)))


def test_level_normalisation_makes_features_gain_invariant(clips):
    y = clips[0]
    cfg = FeatureConfig()
    a = extract_features(y=y, config=cfg)
    b = extract_features(y=0.1 * y, config=cfg)  # the same voice, 20 dB quieter
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    raw = FeatureConfig(level_dbfs=None)
    assert not np.allclose(extract_features(y=y, config=raw), extract_features(y=0.1 * y, config=raw), atol=1e-2)


def test_trimming_ignores_added_silence(clips):
    y = clips[1]
    padded = np.concatenate([np.zeros(16000, np.float32), y, np.zeros(8000, np.float32)])
    cfg = FeatureConfig(groups=("mfcc", "chroma", "contrast"), stats=("mean", "std"))
    np.testing.assert_allclose(extract_features(y=padded, config=cfg), extract_features(y=y, config=cfg), rtol=0.05, atol=0.05)


def test_pitch_follows_a_synthetic_voice():
    sr = 16000
    t = np.arange(2 * sr) / sr
    for f0 in (110.0, 220.0):
        phase = 2 * np.pi * f0 * t
        y = (0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))).astype(np.float32)
        cfg = FeatureConfig(groups=("prosody",), stats=("mean", "std"))
        x = dict(zip(cfg.feature_names(), extract_features(y=y, config=cfg)))
        assert x["f0_semitones_mean"] == pytest.approx(12 * np.log2(f0 / 100), abs=0.3)
        assert x["voiced_ratio"] > 0.9


def test_emotions_differ_more_than_repetitions(ravdess_dir):
    """Angry vs calm of one actor differ more than two takes of the same angry line."""
    cfg = FeatureConfig()
    actor = ravdess_dir / "Actor_05"
    angry1, angry2, calm = (actor / f"03-01-{e}-02-01-{r}-05.flac" for e, r in (("05", "01"), ("05", "02"), ("02", "01")))
    X = extract_many([angry1, angry2, calm], config=cfg)
    scale = X.std(axis=0) + 1e-3
    Z = X / scale
    assert np.linalg.norm(Z[0] - Z[1]) < np.linalg.norm(Z[0] - Z[2])


def test_extract_many_matches_single_and_parallel(fixture_clips):
    cfg = FeatureConfig(stats=("mean", "std"))
    serial = extract_many(fixture_clips, config=cfg)
    parallel = extract_many(fixture_clips, config=cfg, n_jobs=2)
    assert serial.shape == (len(fixture_clips), cfg.n_features)
    np.testing.assert_allclose(serial, parallel, rtol=1e-6)
    single = extract_features(y=load_audio(fixture_clips[2]), config=cfg)
    np.testing.assert_allclose(serial[2], single, rtol=1e-6)


def test_filter_banks_are_built_once():
    F._mel_basis.cache_clear()
    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for _ in range(3):
        extract_features(y=y, config=FeatureConfig())
    info = F._mel_basis.cache_info()
    assert info.misses == 1 and info.hits == 2


# --------------------------------------------------------------------------------------------------
# Frozen reference vectors.  tests/fixtures/features_ref_*.npy were computed at commit 38d3e34 (the
# librosa-based extractor the shipped model was trained with, FEATURE_VERSION 1) on the fixture clips
# in sorted order; "short" holds clip 0 cut to 800, 1440 and 8000 samples (a few STFT frames: the delta
# width falls below 9).  Any faster implementation must reproduce them.
#
# Tolerance: the vectors are float32 (eps 1.2e-7).  A re-implementation may change the order of
# floating-point operations (another FFT library, float32 instead of float64 intermediates), which
# moves entries by a few float32 ulps of the values they are computed from: relative differences of
# ~1e-6.  rtol=1e-4 keeps a 100x margin above that and is still far below anything that would change
# a prediction (the model's StandardScaler divides by per-feature spreads of order 1e-2..1e2 of the
# values).  atol covers entries that are means/slopes of signed quantities and sit near zero,
# where the cancellation error is relative to the summed magnitudes, not to the result.
_REF_DIR = Path(__file__).resolve().parent / "fixtures"
_REF_SHORT_CUTS = (slice(8000, 8800), slice(8000, 9440), slice(8000, 16000))


def _assert_same_features(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# The frozen "default" vectors were computed when the default statistics were BASIC_STATISTICS.
_FROZEN_DEFAULT = FeatureConfig(stats=F.BASIC_STATISTICS)


@pytest.mark.parametrize("config_name", ["default", "tutorial"])
def test_features_match_the_frozen_reference(config_name, clips):
    config = _FROZEN_DEFAULT if config_name == "default" else FeatureConfig.tutorial()
    want = np.load(_REF_DIR / f"features_ref_{config_name}.npy")
    got = np.stack([extract_features(y=y, config=config) for y in clips])
    _assert_same_features(got, want)


def test_short_clips_match_the_frozen_reference(clips):
    want = np.load(_REF_DIR / "features_ref_short.npy")
    got = np.stack([extract_features(y=clips[0][cut], config=_FROZEN_DEFAULT) for cut in _REF_SHORT_CUTS])
    _assert_same_features(got, want)


def test_extra_statistics_match_scipy_and_extend_the_basic_vector(clips):
    import scipy.stats

    full = FeatureConfig()
    assert full.stats == F.STATISTICS and full.n_features == 2378
    y = clips[0]
    basic, rich = extract_features(y=y, config=_FROZEN_DEFAULT), extract_features(y=y, config=full)
    names = np.array(full.feature_names())
    keep = np.isin(names, _FROZEN_DEFAULT.feature_names())
    np.testing.assert_array_equal(rich[keep], basic)  # the first six statistics are unchanged
    # Every statistic of the MFCC rows against numpy/scipy on the same frames.
    S = stft_magnitude(y=y, config=full)
    rows = F._summarise(np.vstack([S[:5], np.full((1, S.shape[1]), 2.0)]), F.STATISTICS).reshape(6, -1)
    M = S[:5].astype(np.float64)
    k = {name: i for i, name in enumerate(F.STATISTICS)}
    np.testing.assert_allclose(rows[:5, k["min"]], M.min(axis=1))
    np.testing.assert_allclose(rows[:5, k["max"]], M.max(axis=1))
    np.testing.assert_allclose(rows[:5, k["skew"]], scipy.stats.skew(M, axis=1), rtol=1e-9)
    np.testing.assert_allclose(rows[:5, k["kurtosis"]], scipy.stats.kurtosis(M, axis=1), rtol=1e-9)
    np.testing.assert_allclose(rows[:5, k["absdiff"]], np.abs(np.diff(M, axis=1)).mean(axis=1))
    assert rows[5, k["skew"]] == 0.0 and rows[5, k["kurtosis"]] == 0.0  # a constant row has no shape


# --------------------------------------------------------------------------------------------------
# The numpy re-implementations against the librosa functions they replace, on real speech.


@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "fmin", "fmax"),
                         [(16000, 512, 64, 0.0, None), (16000, 2048, 128, 0.0, None), (22050, 1024, 40, 50.0, 7000.0)])  # fmt: skip
def test_filter_banks_equal_librosa(sr, n_fft, n_mels, fmin, fmax):
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    chroma = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, dtype=np.float32)
    np.testing.assert_array_equal(F._mel_basis(sr, n_fft, n_mels, fmin, fmax), mel)
    np.testing.assert_array_equal(F._chroma_basis(sr, n_fft), chroma)
    np.testing.assert_array_equal(F._fft_freqs(sr, n_fft), librosa.fft_frequencies(sr=sr, n_fft=n_fft).astype(np.float32))


@pytest.mark.filterwarnings("ignore:n_fft=.* is too large")
@pytest.mark.parametrize("config", [FeatureConfig(), FeatureConfig.tutorial()], ids=["default", "tutorial"])
def test_stft_equals_librosa(config, clips):
    for y in (*clips, clips[0][:100], clips[0].astype(np.float64)):
        want = np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length, win_length=config.win_length,
                                   window="hann", center=True, pad_mode="constant")).astype(np.float32)  # fmt: skip
        np.testing.assert_array_equal(stft_magnitude(y=y, config=config), want)


def test_bad_signals_are_refused_by_the_stft():
    cfg = FeatureConfig()
    for y in (np.array([0.0, np.nan, 0.1]), np.full(400, np.inf), np.zeros((2, 400)), np.arange(400)):
        with pytest.raises(ValueError):
            extract_features(y=y, config=cfg)


def test_descriptors_equal_librosa(clips):
    cfg = FeatureConfig()
    freqs = F._fft_freqs(cfg.sr, cfg.n_fft)
    for y in clips:
        S = stft_magnitude(y=y, config=cfg) * np.float32(1.7)  # as extract_features: a gained copy
        np.testing.assert_array_equal(
            F._spectral_contrast(S, cfg), librosa.feature.spectral_contrast(S=S, sr=cfg.sr, n_fft=cfg.n_fft, freq=freqs)
        )
        P = np.square(S)
        mel = F._mel_basis(cfg.sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ P
        log_mel = F._power_to_db(mel, top_db=None)
        np.testing.assert_array_equal(log_mel, librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None))
        chroma = librosa.util.normalize(F._chroma_basis(cfg.sr, cfg.n_fft) @ P, norm=np.inf, axis=0)
        np.testing.assert_array_equal(F._tonnetz(chroma), librosa.feature.tonnetz(chroma=chroma, sr=cfg.sr))
        mfcc = scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[: cfg.n_mfcc]
        for width in (9, 5, 3):
            for order in (1, 2):
                got = F._delta(mfcc, width=width, order=order)
                want = librosa.feature.delta(mfcc, width=width, order=order, axis=-1)
                assert got.dtype == want.dtype
                half = width // 2
                # Inside: the same convolution, bit for bit.  The first and last width // 2 frames come from a
                # cached linear map instead of numpy.polyfit per call: equal up to float rounding of the fit
                # (polyfit's own error is ~1e-8 of the values it fits, float32 output).
                np.testing.assert_array_equal(got[:, half:-half], want[:, half:-half])
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(mfcc).max())


def test_yin_equals_librosa(clips):
    for y in (*clips, clips[1][:300]):
        y8 = soxr.resample(y, 16000, 8000, quality="LQ")
        for fmin, fmax, frame_length, hop in ((60.0, 500.0, 270, 80), (80.0, 400.0, 204, 40)):
            want = librosa.yin(y8, fmin=fmin, fmax=fmax, sr=8000, frame_length=frame_length, hop_length=hop,
                               center=True, trough_threshold=0.1)  # fmt: skip
            got = F._yin(y8, fmin=fmin, fmax=fmax, sr=8000, frame_length=frame_length, hop_length=hop, trough_threshold=0.1)
            np.testing.assert_array_equal(got, want)
            # Only the frames of a span (extraction analyses the active span only): that slice of the track.
            span = slice(want.size // 4, want.size - want.size // 5)
            part = F._yin(y8, fmin=fmin, fmax=fmax, sr=8000, frame_length=frame_length, hop_length=hop,
                          trough_threshold=0.1, span=span)  # fmt: skip
            np.testing.assert_allclose(part, want[span], rtol=1e-6)


_NO_LIBROSA = """
import sys
import numpy as np
from ser_engine.features import FeatureConfig, extract_features
y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
extract_features(y=y, config=FeatureConfig())
extract_features(y=y, config=FeatureConfig.tutorial())
print(sorted(m for m in ("librosa", "numba", "llvmlite") if m in sys.modules))
"""


def test_extraction_loads_neither_librosa_nor_numba():
    """librosa's import brings numba and LLVM (~120 MB per process); extraction must not need them."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _NO_LIBROSA], capture_output=True, text=True, cwd=root, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"
