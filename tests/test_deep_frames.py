"""Log-mel frames, the CRNN's input (no PyTorch needed)."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from ser_engine.audio import load_audio
from ser_engine.deep.frames import FrameConfig, clip_frames, log_mel_frames


def test_frames_are_librosa_log_mel_of_the_trimmed_clip_mean_normalised(angry_clip: Path) -> None:
    y = load_audio(angry_clip)
    F = log_mel_frames(y)
    assert F.dtype == np.float32 and F.shape[1] == 64
    np.testing.assert_allclose(F.mean(axis=0), 0.0, atol=1e-3)
    # librosa's mel power spectrogram of the same signal, in dB, band means removed, over the kept span.
    M = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=64,
                                       center=True, pad_mode="constant", power=2.0)  # fmt: skip
    L = 10.0 * np.log10(np.maximum(M, 1e-10))
    power_db = 10.0 * np.log10(np.maximum((np.abs(librosa.stft(y, n_fft=512, win_length=400, hop_length=160,
                                                                center=True, pad_mode="constant")) ** 2).sum(axis=0),
                                          1e-10))  # fmt: skip
    active = np.flatnonzero(power_db >= power_db.max() - 40.0)
    L = L[:, active[0] : active[-1] + 1]
    assert F.shape[0] == L.shape[1] < M.shape[1]  # silence at the ends was trimmed
    np.testing.assert_allclose(F, (L - L.mean(axis=1, keepdims=True)).T, atol=0.05)


def test_frames_ignore_the_level_and_keep_short_clips(angry_clip: Path) -> None:
    y = load_audio(angry_clip)
    np.testing.assert_allclose(log_mel_frames(0.1 * y), log_mel_frames(y), atol=1e-3)
    short = log_mel_frames(y[:300])  # shorter than one FFT
    assert short.shape[0] >= 1 and np.isfinite(short).all()
    assert log_mel_frames(y, FrameConfig(max_frames=50)).shape == (50, 64)
    with pytest.raises(ValueError):
        FrameConfig(win_length=1024)


def test_clip_frames_decodes_once_per_condition(fixture_clips: list[Path]) -> None:
    out = clip_frames(fixture_clips[:2], ["clean", "noise20"])
    assert set(out) == {"clean", "noise20"} and len(out["clean"]) == 2
    clean = log_mel_frames(load_audio(fixture_clips[0]))
    np.testing.assert_array_equal(out["clean"][0], clean)
    assert not np.allclose(out["noise20"][0][: clean.shape[0]], clean[: out["noise20"][0].shape[0]])
