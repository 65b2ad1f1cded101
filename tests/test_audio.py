"""Decoding: every supported format, made with ffmpeg from a real clip, and every error."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import TARGET_SR, AudioLimits, load_audio
from ser_engine.errors import (
    AudioError,
    AudioFormatLimitError,
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


# ---------------------------------------------------------------- PyAV path
# Discord voice notes (Ogg/Opus, 48 kHz, mono) decode in process with PyAV,
# libopus for the Opus packets; before, libsndfile decoded them (also with
# libopus).  `decoder="soundfile"` is that old path.
#
# Tolerance between the two: both run libopus's float decoder on the same
# packets and the same soxr HQ resampler, but libopus builds are not
# bit-exact across versions and SIMD/fixed-point builds (RFC 6716 asks a
# decoder to pass a quality test, not to match sample for sample).  Measured
# here (libopus 1.6 in PyAV, 1.3 in libsndfile): at most 2e-7.  Allowed:
# 1e-4, -80 dBFS or about three steps of 16-bit audio, which a fixed-point or
# 16-bit-output build stays within; FFmpeg's own Opus decoder, which the
# engine deliberately does not use, differs by about 0.3.
OPUS_TOLERANCE = 1e-4


def _probe_duration_s(ffmpeg: str, path: Path) -> float:
    ffprobe = str(Path(ffmpeg).with_name("ffprobe"))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return float(out.stdout)


def _lavfi(ffmpeg: str, spec: str, dst: Path, *args: str) -> Path:
    """Encode a generated signal (an ffmpeg lavfi source such as ``anoisesrc=...``)."""
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", spec, *args, str(dst)],
                   check=True, timeout=120)  # fmt: skip
    return dst


@pytest.fixture(scope="module")
def notes(voice_note_factory, fixture_clips) -> list[tuple[Path, Path]]:
    """(source clip, voice note) for the four fixture clips."""
    return [(clip, voice_note_factory(clip)) for clip in fixture_clips]


def test_voice_notes_decode_as_the_old_path_did(notes):
    for clip, note in notes:
        data = note.read_bytes()
        new = load_audio(data)
        old = load_audio(data, decoder="soundfile")
        assert new.dtype == np.float32 and new.shape == old.shape, clip.name
        diff = float(np.abs(new - old).max())
        assert diff < OPUS_TOLERANCE, f"{clip.name}: max |new - old| = {diff:.2e}"
        # The default path for Ogg/Opus is PyAV, from bytes or from the path alike.
        np.testing.assert_array_equal(new, load_audio(data, decoder="pyav"))
        np.testing.assert_array_equal(new, load_audio(note))


def test_voice_note_duration_matches_the_source_and_the_header(notes, ffmpeg):
    # Ogg/Opus records the encoder's pre-skip and the last sample's position:
    # a correct decoder gives back exactly the source's length.
    for clip, note in notes:
        n_source = sf.info(clip).frames
        y = load_audio(note)
        assert abs(len(y) - n_source) <= 1, clip.name
        # ffprobe states the last granule position, which counts the pre-skip
        # (OpusHead bytes 10-11, in 48 kHz samples) the decoder drops.
        data = note.read_bytes()
        head = data.index(b"OpusHead")
        pre_skip_s = int.from_bytes(data[head + 10 : head + 12], "little") / 48_000
        assert len(y) / TARGET_SR == pytest.approx(_probe_duration_s(ffmpeg, note) - pre_skip_s, abs=1.5 / TARGET_SR)
        y48 = load_audio(note, sr=48_000)
        assert abs(len(y48) - 3 * n_source) <= 3


def test_voice_note_predicts_the_same_label_as_the_old_path(notes, predictor):
    for clip, note in notes:
        data = note.read_bytes()
        old = predictor.predict_signal(load_audio(data, decoder="soundfile"))
        new = predictor.predict(data)
        assert new.label == old.label, clip.name
        assert max(abs(new.probabilities[k] - old.probabilities[k]) for k in old.probabilities) < 0.01


def test_stereo_opus_is_averaged_like_the_old_path(ffmpeg, angry_clip, tmp_path):
    # Left: the clip; right: the clip at half level, delayed by 10 ms.
    stereo = encode(ffmpeg, angry_clip, tmp_path / "stereo.ogg",
                    "-af", "pan=stereo|c0=c0|c1=0.5*c0,adelay=0|10",
                    "-c:a", "libopus", "-b:a", "64k", "-ar", "48000")  # fmt: skip
    assert sf.info(stereo).channels == 2
    new = load_audio(stereo)
    old = load_audio(stereo, decoder="soundfile")
    assert new.shape == old.shape
    assert float(np.abs(new - old).max()) < OPUS_TOLERANCE


def test_webm_holding_the_same_packets_decodes_identically(ffmpeg, notes, tmp_path):
    # Remuxing (no re-encoding) into WebM: same Opus packets, same samples.
    _, note = notes[0]
    webm = encode(ffmpeg, note, tmp_path / "same.webm", "-c:a", "copy")
    np.testing.assert_array_equal(load_audio(webm), load_audio(note))


@pytest.mark.parametrize("fmt", ["m4a_aac", "mp3", "ogg_vorbis", "webm_opus"])
def test_other_lossy_formats_decode_in_process_like_ffmpeg(fmt, ffmpeg, angry_clip, tmp_path):
    # Same FFmpeg decoders (PyAV's copy of the libraries, the ffmpeg tool's):
    # same length, and the same samples within float rounding for the
    # codecs both run identically (AAC, MP3, Vorbis).  Opus in WebM: PyAV
    # uses libopus where the ffmpeg tool uses FFmpeg's own decoder, and the
    # two FFmpeg versions treat WebM's codec delay of a 16 kHz source
    # differently (a few ms); only the length is compared.
    name, args = FORMATS[fmt]
    path = encode(ffmpeg, angry_clip, tmp_path / name, *args)
    new = load_audio(path, decoder="pyav")
    ref = load_audio(path, decoder="ffmpeg")
    assert abs(len(new) - len(ref)) <= 0.01 * TARGET_SR
    if fmt != "webm_opus":
        assert len(new) == len(ref)
        assert float(np.abs(new - ref).max()) < 1e-3


def test_truncated_ogg_opus(notes):
    _, note = notes[-1]  # the angry clip: speech from early on
    data = note.read_bytes()
    full = load_audio(data)
    # Page 1 is the OpusHead, page 2 the OpusTags, audio starts on page 3.
    audio_start = data.index(b"OggS", data.index(b"OggS", 4) + 4)
    for cut in (4, 27, 40, audio_start - 1):  # inside the header pages
        with pytest.raises(UndecodableAudioError):
            load_audio(data[:cut])
    with pytest.raises((UndecodableAudioError, EmptyAudioError)):  # headers only, no audio page
        load_audio(data[:audio_start])
    # Cut inside the audio: the pages that arrived decode, and are the start
    # of the note (each signal has its own mean removed: compare without it).
    part = load_audio(data[: int(0.6 * len(data))])
    assert 0.2 * len(full) < len(part) < 0.8 * len(full)
    n = len(part) - TARGET_SR // 10  # the last packet's samples may differ (no end trimming)
    offset = full[:n].mean() - part[:n].mean()
    assert float(np.abs(part[:n] + offset - full[:n]).max()) < OPUS_TOLERANCE


def test_garbage_behind_an_ogg_signature_is_undecodable():
    rng = np.random.default_rng(3)
    for payload in (b"OggS" + rng.bytes(4000), b"OggS\x00\x02" + bytes(22) + b"\x01\x13OpusHead" + rng.bytes(2000)):
        with pytest.raises(UndecodableAudioError) as err:
            load_audio(payload)
        assert "couldn't read" in str(err.value)


def test_damaged_ogg_pages_give_audio_or_an_engine_error(notes):
    # Bytes flipped inside the audio pages: Ogg's page CRC makes the demuxer
    # drop those pages; the rest decodes, and nothing but engine errors escapes.
    _, note = notes[1]
    data = bytearray(note.read_bytes())
    rng = np.random.default_rng(4)
    for pos in rng.integers(len(data) // 4, len(data), size=40):
        data[pos] ^= 0xFF
    try:
        y = load_audio(bytes(data))
    except SERError:
        return
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_too_long_ogg_is_refused_from_the_header(notes):
    _, note = notes[0]
    with pytest.raises(AudioTooLongError) as err:
        load_audio(note, limits=AudioLimits(max_duration_s=1.0))
    assert err.value.duration_s > 3.0


def test_decoded_samples_are_capped_while_decoding(notes, monkeypatch):
    # A container that states no duration (or a short one): PyAV stops at the
    # first frame past the limit instead of decoding everything first.
    import ser_engine.audio as audio

    monkeypatch.setattr(audio, "_header_duration_s", lambda container, stream: 0.0)
    decoded_frames = []
    real = audio._frame_to_mono

    def spy(frame):
        decoded_frames.append(frame.samples)
        return real(frame)

    monkeypatch.setattr(audio, "_frame_to_mono", spy)
    _, note = notes[0]
    with pytest.raises(AudioTooLongError) as err:
        load_audio(note, limits=AudioLimits(max_duration_s=1.0), decoder="pyav")
    assert 1.0 < err.value.duration_s < 1.05
    assert sum(decoded_frames) == 0  # refused before the first 10 s block was even converted


def test_pyav_decode_stops_at_the_wall_clock_limit(ffmpeg, tmp_path, monkeypatch):
    import ser_engine.audio as audio

    note = _lavfi(ffmpeg, "anoisesrc=r=48000:a=0.1", tmp_path / "long.ogg", "-t", "30", "-c:a", "libopus", "-ac", "1")
    # A clock that advances half a second at every look, seen by the decoder only.
    clock = iter(np.arange(0.0, 1e6, 0.5))
    monkeypatch.setattr(audio, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    with pytest.raises(UndecodableAudioError) as err:
        load_audio(note, limits=AudioLimits(ffmpeg_timeout_s=5.0), decoder="pyav")
    assert "too long" in str(err.value)


def test_ffmpeg_subprocess_timeout_still_kills_the_decoder(ffmpeg, tmp_path):
    # The subprocess is the last resort now; its timeout must still hold.
    data = _lavfi(ffmpeg, "anoisesrc=r=8000:a=0.1", tmp_path / "long.m4a", "-t", "600", "-ac", "1", "-c:a", "aac")
    with pytest.raises(UndecodableAudioError) as err:
        load_audio(data, limits=AudioLimits(max_duration_s=3000, ffmpeg_timeout_s=0.05), decoder="ffmpeg")
    assert "too long" in str(err.value)
    children = subprocess.run(["ps", "-o", "comm=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    assert "ffmpeg" not in children.stdout


def test_without_pyav_voice_notes_still_decode(notes, monkeypatch):
    import ser_engine.audio as audio

    assert audio.preload_decoders() is True
    _, note = notes[0]
    expected = load_audio(note, decoder="soundfile")
    monkeypatch.setattr(audio, "_pyav", lambda: None)
    assert audio.preload_decoders() is False
    np.testing.assert_array_equal(load_audio(note), expected)
    with pytest.raises(UndecodableAudioError):
        load_audio(note, decoder="pyav")


def test_a_forced_decoder_has_no_fallback(notes, angry_clip, ffmpeg, tmp_path):
    _, note = notes[0]
    with pytest.raises(ValueError):
        load_audio(note, decoder="librosa")  # type: ignore[arg-type]
    m4a = encode(ffmpeg, angry_clip, tmp_path / "clip.m4a", "-c:a", "aac")
    with pytest.raises(UndecodableAudioError):
        load_audio(m4a, decoder="soundfile")  # libsndfile does not read MP4
    assert load_audio(m4a, decoder="pyav").size == load_audio(m4a).size
    # FLAC through PyAV: the same samples as through libsndfile.
    np.testing.assert_allclose(load_audio(angry_clip, decoder="pyav"), load_audio(angry_clip), atol=1e-6)


@pytest.mark.parametrize("decoder", ["auto", "ffmpeg"])
def test_a_playlist_pointing_at_a_local_file_is_refused(decoder, ffmpeg, angry_clip, tmp_path):
    # An HLS playlist that names a real audio file on this machine: decoding it would read that file.
    target = tmp_path / "secret.wav"
    sf.write(target, sf.read(angry_clip, dtype="float32")[0], TARGET_SR)
    assert load_audio(target).size > 0  # the file itself is readable audio
    playlist = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\nfile:{target}\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n"
    ).encode()
    with pytest.raises(UndecodableAudioError):
        load_audio(playlist, decoder=decoder)


# ------------------------------------------------------- rate, channels, sample budget
DECODERS = ["soundfile", "pyav", "ffmpeg"]  # WAV is read by all three


def _resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32)


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_refuses_rate_and_channels_from_the_header(decoder, reference, ffmpeg):
    speech = reference[16000:40000]  # 1.5 s of speech
    cases = {
        "sample rate": (_wav_bytes(speech, 384_000), 384_000, 192_000),  # DXD: over the default limit
        "channels": (_wav_bytes(np.repeat(speech[:, None], 9, axis=1) / 9, TARGET_SR), 9, 8),
    }
    for quantity, (data, value, limit) in cases.items():
        with pytest.raises(AudioFormatLimitError) as err:
            load_audio(data, decoder=decoder)
        assert (err.value.quantity, err.value.value, err.value.limit) == (quantity, value, limit)
        assert str(value) in err.value.user_message.replace(",", "") and len(err.value.user_message) < 200
    # At the limits: decoded (192 kHz, 8 channels).
    at_limits = np.repeat(_resample(speech, TARGET_SR, 192_000)[:, None], 8, axis=1) / 8
    y = load_audio(_wav_bytes(at_limits, 192_000), decoder=decoder)
    assert abs(y.size - speech.size) <= 2


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_refuses_a_header_over_the_sample_budget(decoder, reference, ffmpeg):
    # 4.1 s of 48 kHz stereo: 394 000 samples over all channels, under the duration limit.
    stereo = np.repeat(_resample(reference, TARGET_SR, 48_000)[:, None], 2, axis=1) * 0.5
    data = _wav_bytes(stereo, 48_000)
    with pytest.raises(AudioFormatLimitError) as err:
        load_audio(data, decoder=decoder, limits=AudioLimits(max_samples=200_000))
    assert err.value.quantity == "samples" and abs(err.value.value - stereo.size) <= 2 * 1024
    assert load_audio(data, decoder=decoder, limits=AudioLimits(max_samples=stereo.size + 10)).size > 0


def _flac_of_unknown_length(ffmpeg: str, dst: Path, seconds: float) -> bytes:
    """48 kHz stereo noise as FLAC written to a pipe: STREAMINFO states no length (0)."""
    with open(dst, "wb") as out:
        subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anoisesrc=r=48000:a=0.1",
             "-t", str(seconds), "-ac", "2", "-c:a", "flac", "-f", "flac", "pipe:1"],
            stdout=out, check=True, timeout=60,
        )  # fmt: skip
    data = dst.read_bytes()
    assert sf.info(io.BytesIO(data)).frames >= 2**62  # libsndfile: SF_COUNT_MAX, unknown
    return data


def test_flac_of_unknown_length_decodes(ffmpeg, tmp_path):
    # Before, libsndfile's SF_COUNT_MAX frames was taken for the length and the file refused as too long.
    data = _flac_of_unknown_length(ffmpeg, tmp_path / "piped.flac", 3.0)
    y = load_audio(data)
    assert abs(y.size - 3 * TARGET_SR) <= 2
    np.testing.assert_array_equal(load_audio(data, decoder="ffmpeg").size, y.size)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg", "auto"])
def test_decoding_stops_at_the_sample_budget_when_the_header_states_no_length(decoder, ffmpeg, tmp_path):
    data = _flac_of_unknown_length(ffmpeg, tmp_path / "piped.flac", 20.0)  # 1.92 million samples
    budget = 100_000
    with pytest.raises(AudioFormatLimitError) as err:
        load_audio(data, decoder=decoder, limits=AudioLimits(max_samples=budget))
    # Stopped soon after the budget (one FLAC frame in PyAV, the 1 s margin of ffmpeg's -t), not at the end.
    assert err.value.quantity == "samples" and budget < err.value.value < 250_000


def test_ffmpeg_output_is_capped_in_bytes():
    import ser_engine.audio as audio

    # A "decoder" that writes 50 MB: 4 000 bytes are read, then it is killed and reaped.
    writer = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(50_000_000))"]
    started = time.monotonic()
    out, status = audio._run_capped(writer, 4_000, time.monotonic() + 30.0)
    assert len(out) == 4_000 and status is None
    assert time.monotonic() - started < 25.0  # killed, not waited out
    out, status = audio._run_capped([sys.executable, "-c", "print('ok')"], 4_000, time.monotonic() + 30.0)
    assert out.strip() == b"ok" and status == 0


def test_limits_must_be_positive():
    for field in ("max_sample_rate", "max_channels", "max_samples"):
        with pytest.raises(ValueError):
            AudioLimits(**{field: 0})
