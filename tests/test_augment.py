"""Degradations for augmentation and robustness tests, on a real RAVDESS clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_engine.audio import load_audio
from ser_engine.augment import (
    CONDITIONS,
    active_power,
    active_region,
    add_noise,
    apply_condition,
    condition_parts,
    is_condition,
    opus_round_trip,
)

CLIP = Path(__file__).resolve().parent / "data" / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(CLIP)


@pytest.mark.parametrize("snr", [20.0, 10.0])
@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_has_the_requested_snr(speech: np.ndarray, snr: float, color: str) -> None:
    noisy = add_noise(speech, snr, color=color, seed=3)
    assert noisy.shape == speech.shape and noisy.dtype == np.float32
    noise = noisy.astype(np.float64) - speech
    measured = 10 * np.log10(active_power(speech) / np.mean(noise**2))
    assert measured == pytest.approx(snr, abs=0.3)
    # Active level is above the whole-clip level: the clip has leading and trailing silence.
    assert active_power(speech) > np.mean(speech.astype(np.float64) ** 2)
    np.testing.assert_array_equal(noisy, add_noise(speech, snr, color=color, seed=3))


def test_pink_noise_falls_by_about_3_db_per_octave() -> None:
    noise = add_noise(np.full(2**16, 0.1, np.float32), 0.0, color="pink", seed=0) - 0.1
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(noise.size, 1 / 16000)
    band = lambda lo: spectrum[(f >= lo) & (f < 2 * lo)].mean()
    drops = [10 * np.log10(band(lo) / band(2 * lo)) for lo in (125, 250, 500, 1000, 2000)]
    assert np.mean(drops) == pytest.approx(3.0, abs=0.5)


def test_opus_round_trip_keeps_the_speech(speech: np.ndarray) -> None:
    out = apply_condition(speech, "opus24k")
    assert abs(out.size - speech.size) <= 0.01 * speech.size
    n = min(out.size, speech.size)
    err = out[:n].astype(np.float64) - speech[:n]
    snr = 10 * np.log10(np.mean(speech[:n].astype(np.float64) ** 2) / np.mean(err**2))
    assert snr > 5.0  # lossy but aligned: same waveform, not a shifted or silent one
    assert not np.array_equal(out[:n], speech[:n])


def test_opus_encoder_settings_change_the_coding_and_bad_ones_are_refused(speech: np.ndarray) -> None:
    short = speech[:32000]
    default = opus_round_trip(short, bitrate="24k")
    np.testing.assert_array_equal(default, opus_round_trip(short, bitrate="24k", complexity=10))
    cheap = opus_round_trip(short, bitrate="24k", complexity=0, encoder_sr=16000)
    assert cheap.size == default.size and not np.array_equal(cheap, default)
    for kwargs, message in [({"complexity": 11}, "complexity"), ({"encoder_sr": 44100}, "44100"),
                            ({"bitrate": "-8k"}, "positive"), ({"bitrate": "fast"}, "number")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            opus_round_trip(short, **kwargs)


def test_every_condition_runs_and_unknown_is_refused(speech: np.ndarray) -> None:
    short = speech[: 16000]
    for name in CONDITIONS:
        if name.startswith("opus"):
            continue  # covered above; ffmpeg is slow
        out = apply_condition(short, name, seed=1)
        assert out.dtype == np.float32 and 0.8 * short.size <= out.size <= 1.2 * short.size
        assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown condition"):
        apply_condition(short, "underwater")


def test_a_rotation_gives_each_clip_one_of_its_conditions_in_turn(speech: np.ndarray) -> None:
    rotation = "noise20|gain-6|pitch+1"
    assert condition_parts(rotation) == ("noise20", "gain-6", "pitch+1") and is_condition(rotation)
    for seed in range(6):
        part = ("noise20", "gain-6", "pitch+1")[seed % 3]
        np.testing.assert_array_equal(apply_condition(speech, rotation, seed=seed),
                                      apply_condition(speech, part, seed=seed))  # fmt: skip
    for bad in ("noise20|nope", "noise20|noise20", "clean|noise20", "", "noise20|"):
        assert not is_condition(bad)
        with pytest.raises(ValueError):
            apply_condition(speech, bad)


def test_active_region_drops_the_silence_around_the_speech(speech: np.ndarray) -> None:
    region = active_region(speech)
    kept = speech[region]
    # The RAVDESS clip starts and ends with silence: the region is shorter but keeps all the speech power.
    assert 0.3 * speech.size < kept.size < 0.9 * speech.size
    assert np.sum(kept.astype(np.float64) ** 2) > 0.999 * np.sum(speech.astype(np.float64) ** 2)
    assert active_region(np.zeros(16000, np.float32)) == slice(0, 16000)
    # A condition with '@active' is the condition applied to that region.
    np.testing.assert_array_equal(apply_condition(speech, "gain-6@active"), apply_condition(kept, "gain-6"))
    assert apply_condition(speech, "noise20@active", seed=2).size == kept.size
    assert condition_parts("noise20|pitch+1@active") == ("noise20", "pitch+1@active")
    for bad in ("clean@active", "vinyl@active", "opus24k@active@active"):
        assert not is_condition(bad)

