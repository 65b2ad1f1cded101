"""Decoding: every supported format, made with ffmpeg from a real clip, and every error."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import TARGET_SR, AudioLimits, load_audio
from ser_engine.errors import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    SERError,
    SilentAudioError,
    UndecodableAudioError,
)

from .conftest import encode

# (file name, ffmpeg output arguments)
FORMATS = {
    "wav_44k_stereo": ("clip.wav", ["-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2"]),
    "flac": ("clip.flac", ["-c:a", "flac"]),
    "ogg_vorbis": ("clip.ogg", ["-c:a", "libvorbis", "-ar", "44100"]),
    "ogg_opus_voice_note": ("clip.ogg", ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-ac", "1"]),
    "mp3": ("clip.mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    "m4a_aac": ("clip.m4a", ["-c:a", "aac", "-b:a", "64k"]),
    "webm_opus": ("clip.webm", ["-c:a", "libopus", "-b:a", "32k"]),
    "mp4_aac": ("clip.mp4", ["-c:a", "aac", "-b:a", "64k"]),
}


@pytest.fixture(scope="module")
def reference(angry_clip: Path) -> np.ndarray:
    y, sr = sf.read(angry_clip, dtype="float32")
    assert sr == TARGET_SR
    return y - y.mean()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_every_format_decodes_to_the_same_signal(fmt, as_bytes, ffmpeg, angry_clip, reference, tmp_path):
    name, args = FORMATS[fmt]
    path = encode(ffmpeg, angry_clip, tmp_path / name, *args)
    y = load_audio(path.read_bytes() if as_bytes else path)

    assert y.dtype == np.float32 and y.ndim == 1
    # Lossy codecs add encoder delay/padding: allow 0.1 s either way.
    assert abs(len(y) - len(reference)) < 0.1 * TARGET_SR
    # Same signal: the spectral envelopes below 4 kHz agree (robust to codec
    # delay, and to the low-pass filters of lossy encoders above that).
    def envelope(x: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(x[: len(reference) - 2000], n=8192))
        return np.log(np.convolve(spec, np.ones(64) / 64, mode="same") + 1e-6)[:2048]

    corr = np.corrcoef(envelope(y), envelope(reference))[0, 1]
    assert corr > 0.95, f"{fmt}: spectral envelope correlation {corr:.3f}"


def test_flac_is_bit_exact_and_dc_free(angry_clip, reference):
    y = load_audio(angry_clip)
    np.testing.assert_allclose(y, reference, atol=1e-6)
    assert abs(float(y.mean())) < 1e-6


def test_resampling_to_another_rate(angry_clip):
    y16 = load_audio(angry_clip)
    y8 = load_audio(angry_clip, sr=8000)
    assert abs(len(y8) - len(y16) // 2) <= 1


def _wav_bytes(y: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_empty_input_is_refused():
    with pytest.raises(EmptyAudioError):
        load_audio(b"")


def test_too_large_is_refused_before_decoding():
    # Random bytes would be undecodable: the size check must come first.
    with pytest.raises(AudioTooLargeError) as err:
        load_audio(b"\x00" * 2048, limits=AudioLimits(max_bytes=1024))
    assert err.value.size_bytes == 2048 and "MiB" in str(err.value)


def test_too_long_is_refused_from_the_header(angry_clip):
    limits = AudioLimits(max_duration_s=1.0)
    with pytest.raises(AudioTooLongError) as err:
        load_audio(angry_clip, limits=limits)
    assert err.value.duration_s > 1.0 and "too long" in str(err.value)


def test_too_long_is_refused_through_ffmpeg(ffmpeg, angry_clip, tmp_path):
    m4a = encode(ffmpeg, angry_clip, tmp_path / "clip.m4a", "-c:a", "aac")
    with pytest.raises(AudioTooLongError):
        load_audio(m4a, limits=AudioLimits(max_duration_s=1.0))


def test_too_short_is_refused():
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(int(0.05 * 16000))).astype(np.float32)
    with pytest.raises(AudioTooShortError):
        load_audio(_wav_bytes(y, 16000))


@pytest.mark.parametrize("payload", [b"\x01", b"not audio at all" * 40, bytes(range(256)) * 8], ids=["1byte", "text", "binary"])
def test_garbage_is_undecodable(payload):
    with pytest.raises(UndecodableAudioError) as err:
        load_audio(payload)
    assert "couldn't read" in str(err.value)


def test_truncated_wav_header_is_undecodable(angry_clip):
    data = _wav_bytes(sf.read(angry_clip, dtype="float32")[0], 16000)
    with pytest.raises(AudioError):
        load_audio(data[:30])


@pytest.mark.parametrize("kind", ["zeros", "dc_offset", "whisper"])
def test_silence_is_refused(kind):
    n = 16000
    y = {
        "zeros": np.zeros(n),
        "dc_offset": np.full(n, 0.4),
        "whisper": 1e-5 * np.random.default_rng(1).standard_normal(n),
    }[kind].astype(np.float32)
    with pytest.raises(SilentAudioError):
        load_audio(_wav_bytes(y, 16000, "FLOAT"))


def test_nan_and_inf_samples_are_zeroed(reference):
    y = reference.copy()
    y[100:200] = np.nan
    y[300] = np.inf
    out = load_audio(_wav_bytes(y, 16000, "FLOAT"))
    assert np.isfinite(out).all()
    assert len(out) == len(y)


def test_six_channels_are_downmixed(reference):
    multi = np.stack([reference * (k + 1) / 6 for k in range(6)], axis=1)
    out = load_audio(_wav_bytes(multi, 16000, "FLOAT"))
    expected = multi.mean(axis=1)
    np.testing.assert_allclose(out, expected - expected.mean(), atol=1e-5)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UndecodableAudioError):
        load_audio(tmp_path / "nope.ogg")
    with pytest.raises(UndecodableAudioError):
        load_audio(tmp_path)


def test_every_error_has_a_user_message():
    # All errors raised above derive from SERError and carry readable text.
    for exc in (EmptyAudioError("That file is empty."), AudioTooLargeError(5, 1), AudioTooLongError(9, 1),
                AudioTooShortError(0.1, 0.3), SilentAudioError(-90.0)):
        assert isinstance(exc, SERError) and exc.user_message and "Traceback" not in exc.user_message


def test_8bit_wav_via_wave_module():
    rng = np.random.default_rng(2)
    y = (np.sin(np.linspace(0, 400 * np.pi, 16000)) * 0.5 + 0.02 * rng.standard_normal(16000))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(11025)
        w.writeframes(((y * 127) + 128).clip(0, 255).astype(np.uint8).tobytes())
    out = load_audio(buf.getvalue())
    assert abs(len(out) - round(16000 * 16000 / 11025)) <= 2
    assert 0.2 < np.abs(out).max() < 0.6
