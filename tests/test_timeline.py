"""The timeline of long notes (issue 16): one frame track for all windows, segments, ``ser predict --timeline``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import load_audio
from ser_engine.cli import main
from ser_engine.errors import NoSpeechError
from ser_engine.features import extract_features, stft_magnitude
from ser_engine.predict import Prediction
from ser_engine.timeline import FrameTrack, Segment, Timeline, TimelineSettings, analyse_timeline, format_clock
from ser_engine.vad import default_detector

SR = 16_000


def _speech(path: Path) -> np.ndarray:
    """A RAVDESS clip cut to the detector's speech (plus 0.1 s)."""
    y = load_audio(path)
    segs = default_detector().speech_segments(y)
    return y[max(0, int((segs[0][0] - 0.1) * SR)) : int((segs[-1][1] + 0.1) * SR)]


def _pause(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 1e-3).astype(np.float32)


@pytest.fixture(scope="module")
def angry_then_calm(ravdess_dir: Path, tmp_path_factory) -> tuple[Path, float, float]:
    """Actor 01: three angry (strong) clips, then three calm (strong) ones, joined with pauses.

    Returns the FLAC file, the end of the angry part and the start of the calm part, in seconds.
    """
    actor = ravdess_dir / "Actor_01"
    angry = sorted(actor.glob("03-01-05-02-*.flac"))[:3]
    calm = sorted(actor.glob("03-01-02-02-*.flac"))[:3]
    parts: list[np.ndarray] = [_pause(0.3, 0)]
    for k, clip in enumerate(angry):
        parts += [_speech(clip), _pause(0.25, k + 1)]
    angry_end = sum(p.size for p in parts[:-1]) / SR
    parts[-1] = _pause(0.6, 9)
    calm_start = sum(p.size for p in parts) / SR
    for k, clip in enumerate(calm):
        parts += [_speech(clip), _pause(0.25, k + 10)]
    path = tmp_path_factory.mktemp("timeline") / "angry-then-calm.flac"
    sf.write(path, np.concatenate(parts), SR)
    return path, angry_end, calm_start


def test_frame_track_whole_note_is_extract_features(angry_then_calm, predictor) -> None:
    """The whole note as one span gives the vector of extract_features (same STFT, same numbers up to rounding)."""
    y = load_audio(angry_then_calm[0])
    config = predictor.bundle.feature_config
    track = FrameTrack(y, config)
    expected = extract_features(y=y, config=config)
    np.testing.assert_allclose(track.features(), expected, rtol=1e-3, atol=1e-4)
    assert predictor.classify_features(track.features()).label == predictor.classify_features(expected).label


def test_window_features_are_the_window_own_features(angry_then_calm, predictor) -> None:
    """A 3 s window of the shared track = extract_features on the window's samples with the note's STFT frames.

    Only the zero-crossing rate of the two edge frames and the pitch track (YIN on the note's 8 kHz copy,
    not the window's) see the neighbouring audio: every other statistic agrees within 1 % (or 0.05
    absolute), those of pitch and zero-crossing rate within 1.5 (semitones for the pitch), and the label
    is the same.
    """
    y = load_audio(angry_then_calm[0])
    config = predictor.bundle.feature_config
    pitch = np.array([n.startswith(("f0_", "zcr_")) for n in config.feature_names()])
    track = FrameTrack(y, config)
    S = stft_magnitude(y=y, config=config)
    for k in (0, 450, 900):
        window = y[k * 160 : (k + 300) * 160]
        own = extract_features(y=window, S=S[:, k : k + 301], config=config)
        shared = track.features(k, k + 301, exact=False)
        np.testing.assert_allclose(shared[~pitch], own[~pitch], rtol=1e-2, atol=5e-2)
        np.testing.assert_allclose(shared[pitch], own[pitch], atol=1.5)
        fresh = extract_features(y=window, config=config)  # its own STFT: edge frames zero-padded
        assert np.corrcoef(shared, fresh)[0, 1] > 0.999
        assert predictor.classify_features(shared).label == predictor.classify_features(fresh).label


def test_angry_then_calm_segments(angry_then_calm, predictor) -> None:
    path, angry_end, calm_start = angry_then_calm
    timeline = analyse_timeline(load_audio(path), predictor)
    assert timeline.is_cut and timeline.duration_s > 15
    labels = [s.label for s in timeline.segments]
    assert "angry" in labels and "calm" in labels
    assert labels.index("angry") < len(labels) - 1 - labels[::-1].index("calm")
    # The middle of each part lies in a segment of its emotion.
    def at(t: float) -> str:
        return next(s.label for s in timeline.segments if s.start_s <= t < s.end_s)

    assert at(angry_end / 2) == "angry"
    assert at((calm_start + timeline.duration_s) / 2) == "calm"
    starts = [s.start_s for s in timeline.segments]
    assert starts == sorted(starts)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(timeline.segments, timeline.segments[1:]))
    # The overall prediction is the whole note's, as predict_signal gives it.
    whole = predictor.predict_signal(load_audio(path))
    assert timeline.overall.label == whole.label
    assert timeline.overall.confidence == pytest.approx(whole.confidence, abs=1e-3)
    assert "angry" in timeline.summary() or "calm" in timeline.summary()


def test_cli_timeline_json_reports_both_segments(angry_then_calm, capsys) -> None:
    path = angry_then_calm[0]
    assert main(["predict", "--timeline", "--json", str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    segments = record["segments"]
    assert {"angry", "calm"} <= {s["label"] for s in segments}
    for s in segments:
        assert set(s) == {"start_s", "end_s", "label", "confidence", "probabilities"}
        assert 0 <= s["start_s"] < s["end_s"] <= record["duration_s"] + 1e-6
        assert s["confidence"] == pytest.approx(s["probabilities"][s["label"]])
        assert sum(s["probabilities"].values()) == pytest.approx(1.0)
    assert record["summary"].startswith("mostly ")
    assert record["label"] in record["probabilities"]

    assert main(["predict", "--timeline", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}: ") and lines[1].strip().startswith("mostly ")
    assert any(" angry (" in line for line in lines[2:]) and any(" calm (" in line for line in lines[2:])


def test_short_note_is_one_segment(angry_clip: Path, predictor) -> None:
    y = load_audio(angry_clip)
    timeline = analyse_timeline(y, predictor)
    assert not timeline.is_cut and len(timeline.segments) == 1
    seg = timeline.segments[0]
    assert seg.label == timeline.overall.label == predictor.predict_signal(y).label
    assert 0 <= seg.start_s < seg.end_s <= timeline.duration_s
    assert timeline.summary() == f"{seg.label} throughout"


def test_no_speech_is_refused(predictor, tmp_path: Path, capsys) -> None:
    t = np.arange(12 * SR) / SR
    tone = (0.3 * np.sign(np.sin(2 * np.pi * 220 * t))).astype(np.float32)
    with pytest.raises(NoSpeechError):
        analyse_timeline(tone, predictor)
    path = tmp_path / "tone.wav"
    sf.write(path, tone, SR)
    assert main(["predict", "--timeline", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "I couldn't hear any speech in that recording."


def _timeline(*segs: tuple[float, float, str]) -> Timeline:
    overall = Prediction(label="calm", confidence=0.6, probabilities={"calm": 0.6, "angry": 0.4}, duration_s=30.0)
    segments = tuple(Segment(a, b, lab, 0.7, {lab: 0.7}) for a, b, lab in segs)
    return Timeline(overall=overall, segments=segments, windows=(), duration_s=30.0)


def test_summary_line() -> None:
    assert _timeline((0, 12, "calm"), (12, 18.4, "angry"), (18.4, 30, "calm")).summary() == (
        "mostly calm; angry from 0:12 to 0:18"
    )
    assert _timeline((0, 30, "sad")).summary() == "sad throughout"
    many = _timeline((0, 10, "calm"), (10, 12, "angry"), (12, 20, "calm"), (20, 21, "sad"), (21, 22, "happy"),
                     (22, 25, "fearful"), (25, 30, "calm"))  # fmt: skip
    assert many.summary(max_items=2) == "mostly calm; angry from 0:10 to 0:12, fearful from 0:22 to 0:25 (+2 more)"
    assert format_clock(72.4) == "1:12" and format_clock(0.2) == "0:00"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TimelineSettings(window_s=3.0, hop_s=4.0)
    with pytest.raises(ValueError):
        TimelineSettings(smoothing=(1.0, 1.0))


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_service_analyse_timeline(angry_then_calm, predictor, mode: str) -> None:
    """The async service runs the timeline in its workers (process mode: the Timeline crosses back pickled)."""
    import asyncio

    from ser_engine.errors import NoSpeechError as NoSpeech
    from ser_engine.service import EmotionService

    data = angry_then_calm[0].read_bytes()

    async def run() -> tuple[Timeline, object]:
        async with EmotionService(predictor, workers=1, mode=mode, timeout_s=60) as service:  # type: ignore[arg-type]
            timeline = await service.analyse_timeline(data)
            plain = await service.analyse(data)
            t = np.arange(10 * SR) / SR
            buf = __import__("io").BytesIO()
            sf.write(buf, (0.3 * np.sign(np.sin(2 * np.pi * 220 * t))).astype(np.float32), SR, format="WAV")
            with pytest.raises(NoSpeech):
                await service.analyse_timeline(buf.getvalue())
            return timeline, plain

    timeline, plain = asyncio.run(run())
    assert isinstance(timeline, Timeline) and timeline.is_cut
    assert {"angry", "calm"} <= {s.label for s in timeline.segments}
    assert timeline.overall.label == plain.label  # type: ignore[attr-defined]
    assert timeline.overall.features is not None and timeline.overall.features.shape == plain.features.shape  # type: ignore[attr-defined]
