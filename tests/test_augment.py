"""Degradations for augmentation and robustness tests, on a real RAVDESS clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch

from ser_engine.audio import load_audio
from ser_engine.augment import (
    CONDITIONS,
    PHONE_BAND_HZ,
    RT60_RANGE_S,
    active_power,
    active_region,
    add_noise,
    apply_condition,
    compress,
    condition_parts,
    first_speech,
    is_condition,
    mic_response_db,
    opus_round_trip,
    phone_channel,
    reverberate,
    room_impulse_response,
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
        low = 0.2 if name.startswith("short") else 0.8  # the speech starts 0.6 s into the clip
        assert out.dtype == np.float32 and low * short.size <= out.size <= 1.2 * short.size
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



# ------------------------------------------------------- channel conditions
FIXTURES = sorted(CLIP.parent.glob("*.flac"))


def _band_db(x: np.ndarray, bands: list[tuple[float, float]]) -> float:
    """Power in dB of ``x`` in the given bands (Welch PSD, 2048-point Hann)."""
    f, psd = welch(x.astype(np.float64), 16000, nperseg=2048)
    mask = np.zeros(f.size, bool)
    for lo, hi in bands:
        mask |= (f >= lo) & (f < hi)
    return float(10 * np.log10(psd[mask].sum()))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_phone_keeps_only_the_telephone_band(path: Path) -> None:
    y = load_audio(path)
    out = apply_condition(y, "phone")
    assert out.shape == y.shape and out.dtype == np.float32
    lo, hi = PHONE_BAND_HZ
    # Outside the band, past the filter's 50 Hz transitions (250-300 and 3400-3450 Hz): > 30 dB down
    # (measured 60-74 dB on these clips).  From 20 Hz: Welch's per-segment mean removal leaves DC bins.
    outside = [(20.0, lo - 50.0), (hi + 50.0, 8000.0)]
    assert _band_db(y, outside) - _band_db(out, outside) > 30.0
    assert abs(_band_db(y, [(lo, hi)]) - _band_db(out, [(lo, hi)])) < 1.0
    # G.711 mu-law: 8-bit log quantisation noise (measured 24-32 dB below these clips' speech; a full-scale
    # sine gets about 38 dB): present, but far below the speech.
    linear = phone_channel(y, mulaw=False)
    region = active_region(y)
    clean, coded = linear[region].astype(np.float64), out[region].astype(np.float64)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((coded - clean) ** 2))
    assert 20.0 < snr < 40.0


def _t30(h: np.ndarray, sr: int = 16000) -> float:
    """Reverberation time from the -5 to -35 dB span of Schroeder's backward-integrated decay (ISO 3382-1)."""
    energy = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0])
    i5, i35 = int(np.argmax(db <= -5)), int(np.argmax(db <= -35))
    slope = np.polyfit(np.arange(i5, i35) / sr, db[i5:i35], 1)[0]
    return -60.0 / slope


def _tail_rt60(x: np.ndarray, end: int) -> float:
    """Reverberation time from the decay of 10 ms frame levels after the speech ends, over 25 dB."""
    n = 160
    levels = 10 * np.log10(np.mean(x[: x.size // n * n].astype(np.float64).reshape(-1, n) ** 2, axis=1) + 1e-20)
    tail = levels[end // n + 2 :]
    stop = int(np.argmax(tail < tail[0] - 25.0))
    return -60.0 / np.polyfit(np.arange(stop) * n / 16000, tail[:stop], 1)[0]


@pytest.mark.parametrize("seed", [0, 3, 1])  # rooms of RT60 0.31, 0.59 and 0.77 s
def test_reverb_rooms_have_the_drawn_rt60_and_the_speech_decays_at_it(speech: np.ndarray, seed: int) -> None:
    rir, rt60 = room_impulse_response(seed)
    assert RT60_RANGE_S[0] <= rt60 <= RT60_RANGE_S[1]
    assert _t30(rir) == pytest.approx(rt60, rel=0.15)
    out = reverberate(speech, seed=seed)
    np.testing.assert_array_equal(out, apply_condition(speech, "reverb", seed=seed))
    assert out.shape == speech.shape
    assert 10 * np.log10(active_power(out) / active_power(speech)) == pytest.approx(0.0, abs=0.1)
    # After the last word the room keeps sounding, decaying at its RT60 (measured 0.31, 0.61, 0.88 s here);
    # 0.1-0.2 s after it the dry clip is quieter (by 7 dB in the 0.31 s room).
    end = active_region(speech, margin_s=0.0).stop
    assert _tail_rt60(out, end) == pytest.approx(rt60, rel=0.25)
    after = slice(end + 1600, end + 3200)
    wet, dry = out[after].astype(np.float64), speech[after].astype(np.float64)
    assert 10 * np.log10(np.mean(wet**2) / np.mean(dry**2)) > 5.0


def test_reverb_rooms_come_from_the_seed() -> None:
    rooms = [room_impulse_response(seed) for seed in (0, 2, 4)]
    assert len({round(rt60, 6) for _, rt60 in rooms}) == 3
    assert room_impulse_response(2)[0] is rooms[1][0]  # cached
    x = np.zeros(8000, np.float32)
    x[100] = 0.5
    np.testing.assert_array_equal(reverberate(x, seed=2), reverberate(x, seed=66))  # bank of 64 rooms


def _crest_db(x: np.ndarray, region: slice) -> tuple[float, float]:
    """Sample crest factor and peak-to-mean ratio of 20 ms frame powers, in dB, over ``region``."""
    seg = x[region].astype(np.float64)
    frames = np.mean(seg[: seg.size // 320 * 320].reshape(-1, 320) ** 2, axis=1)
    return 20 * np.log10(np.abs(seg).max() / np.sqrt(np.mean(seg**2))), 10 * np.log10(frames.max() / frames.mean())


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_agc_compresses_and_sets_the_level(path: Path) -> None:
    y = load_audio(path)
    region = active_region(y)
    crest, envelope = _crest_db(y, region)
    for seed in range(3):
        out = apply_condition(y, "agc", seed=seed)
        assert out.shape == y.shape and np.abs(out).max() <= 0.99
        assert 10 * np.log10(active_power(out)) == pytest.approx(-20.0, abs=0.01)
        out_crest, out_envelope = _crest_db(out, region)
        assert crest - out_crest > 1.0  # measured 1.2-5.4 dB
        assert envelope - out_envelope > 2.5  # measured 2.9-7.2 dB
    # Quiet or loud, the same recording comes out the same.
    np.testing.assert_allclose(compress(y * 0.1), compress(y), atol=1e-4)
    with pytest.raises(ValueError):
        compress(y, ratio=0.5)


def test_mic_applies_its_drawn_response(speech: np.ndarray) -> None:
    f, before = welch(speech.astype(np.float64), 16000, nperseg=1024)
    band = (f >= 100) & (f <= 7000)
    responses = []
    for seed in range(4):
        out = apply_condition(speech, "mic", seed=seed)
        assert out.shape == speech.shape
        _, after = welch(out.astype(np.float64), 16000, nperseg=1024)
        measured = 10 * np.log10(after[band] / before[band])
        expected = mic_response_db(f[band], seed)
        assert np.median(np.abs(measured - expected)) < 0.5 and np.max(np.abs(measured - expected)) < 2.0
        assert np.ptp(expected) > 3.0  # not a flat response
        responses.append(expected)
    assert min(np.max(np.abs(a - b)) for i, a in enumerate(responses) for b in responses[i + 1 :]) > 2.0
    np.testing.assert_array_equal(apply_condition(speech, "mic", seed=5), apply_condition(speech, "mic", seed=5))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_short_keeps_the_first_one_and_a_half_seconds_of_speech(path: Path) -> None:
    from ser_engine.vad import default_detector

    y = load_audio(path)
    out = apply_condition(y, "short1.5")
    assert out.size == 24000  # exactly 1.5 s at 16 kHz
    # It starts 0.1 s before the detector's first speech, close to where the energy rises: the first 20 ms
    # frame within 40 dB of the loudest.
    frames = np.mean(y[: y.size // 320 * 320].astype(np.float64).reshape(-1, 320) ** 2, axis=1)
    onset = 320 * int(np.argmax(frames >= frames.max() * 1e-4))
    start = round((default_detector().speech_segments(y)[0][0] - 0.1) * 16000)
    assert onset > 0.2 * 16000 and abs(start - onset) < 0.2 * 16000  # RAVDESS clips open with silence
    np.testing.assert_array_equal(out, y[start : start + 24000])
    assert np.mean(y[start - 3200 : start].astype(np.float64) ** 2) < 1e-2 * np.mean(out.astype(np.float64) ** 2)
    # Without the detector: from the energy onset exactly.
    np.testing.assert_array_equal(first_speech(y, use_vad=False), y[onset : onset + 24000])
    # In pink noise at 10 dB SNR every frame is within 40 dB: the energy rule starts at the first sample,
    # the detector still at the speech.
    noisy = add_noise(y, 10.0, color="pink", seed=1)
    assert active_region(noisy, margin_s=0.0).start == 0
    noisy_start = round((default_detector().speech_segments(noisy)[0][0] - 0.1) * 16000)
    assert abs(noisy_start - onset) < 0.2 * 16000
    np.testing.assert_array_equal(apply_condition(noisy, "short1.5"), noisy[noisy_start : noisy_start + 24000])
    assert first_speech(y[:8000], 1.5).size <= 8000
