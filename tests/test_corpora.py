"""RAVDESS loader: the real corpus, and generated trees with the real naming scheme."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import load_audio
from ser_engine.corpora import RAVDESS_EMOTIONS, Clip, label_counts, load_ravdess, parse_ravdess_name
from ser_engine.errors import CorpusError


# ------------------------------------------------------------- real corpus
def test_real_corpus_counts(ravdess_dir: Path) -> None:
    clips = load_ravdess(ravdess_dir)
    assert len(clips) == 1440
    assert all(isinstance(c, Clip) and c.corpus == "ravdess" for c in clips)
    counts = label_counts(clips)
    assert counts == {e: (96 if e == "neutral" else 192) for e in RAVDESS_EMOTIONS}
    speakers = Counter(c.speaker for c in clips)
    assert sorted(speakers) == [f"Actor_{i:02d}" for i in range(1, 25)]
    assert set(speakers.values()) == {60}
    # Neutral has no strong takes; every other emotion has both intensities equally.
    by_intensity = Counter((c.label, c.intensity) for c in clips)
    assert by_intensity[("neutral", "strong")] == 0
    assert by_intensity[("angry", "normal")] == by_intensity[("angry", "strong")] == 96
    assert Counter(c.statement for c in clips) == {"kids": 720, "dogs": 720}
    # Labels and speakers agree with the folder and the file name's codes.
    for c in clips:
        assert c.path.parent.name == c.speaker
        codes = c.path.stem.split("-")
        assert RAVDESS_EMOTIONS[int(codes[2]) - 1] == c.label
        assert int(codes[6]) == int(c.speaker[-2:])
    assert clips == sorted(clips, key=lambda c: c.path)


def test_real_corpus_emotion_subset(ravdess_dir: Path) -> None:
    clips = load_ravdess(ravdess_dir, emotions=["calm", "Angry ", "calm"])
    assert label_counts(clips) == {"calm": 192, "angry": 192}


# --------------------------------------------------------- generated trees
def _write(path: Path, sr: int = 48_000, seconds: float = 0.6, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    sf.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, sr)
    return path


@pytest.fixture()
def wav_tree(tmp_path: Path) -> Path:
    """The original release's layout: 48 kHz WAV, speech and song folders."""
    speech = tmp_path / "Audio_Speech_Actors_01-24"
    song = tmp_path / "Audio_Song_Actors_01-24"
    _write(speech / "Actor_01" / "03-01-05-02-01-01-01.wav")  # angry, strong, kids, actor 1
    _write(speech / "Actor_01" / "03-01-01-01-02-02-01.wav", channels=2)  # neutral, normal, dogs (stereo)
    _write(speech / "Actor_02" / "03-01-04-01-01-01-02.wav")  # sad, actor 2
    _write(song / "Actor_02" / "03-02-03-02-02-01-02.wav")  # song: happy, strong, dogs, actor 2
    (speech / "README.txt").write_text("not audio")
    return tmp_path


def test_generated_wav_tree_speech_only(wav_tree: Path) -> None:
    clips = load_ravdess(wav_tree)
    assert [(c.path.name, c.label, c.speaker, c.intensity, c.statement) for c in clips] == [
        ("03-01-01-01-02-02-01.wav", "neutral", "Actor_01", "normal", "dogs"),
        ("03-01-05-02-01-01-01.wav", "angry", "Actor_01", "strong", "kids"),
        ("03-01-04-01-01-01-02.wav", "sad", "Actor_02", "normal", "kids"),
    ]


def test_generated_wav_tree_with_song(wav_tree: Path) -> None:
    clips = load_ravdess(wav_tree, include_song=True)
    assert len(clips) == 4
    song = [c for c in clips if "Song" in str(c.path)]
    assert [(c.label, c.speaker, c.intensity) for c in song] == [("happy", "Actor_02", "strong")]
    assert [c.label for c in load_ravdess(wav_tree, include_song=True, emotions=["happy"])] == ["happy"]


def test_wav_and_flac_both_read_and_decode_to_16k(wav_tree: Path, fixture_clips: list[Path], tmp_path: Path) -> None:
    flac_dir = tmp_path / "mixed" / "Actor_04"
    flac_dir.mkdir(parents=True)
    shutil.copy(fixture_clips[0], flac_dir / fixture_clips[0].name)  # 03-01-01-01-01-01-04.flac
    _write(tmp_path / "mixed" / "Actor_03" / "03-01-08-02-02-02-03.wav")  # surprised, 48 kHz
    clips = load_ravdess(tmp_path / "mixed")
    assert {c.path.suffix for c in clips} == {".flac", ".wav"}
    assert {c.label for c in clips} == {"neutral", "surprised"}
    wav = next(c for c in clips if c.path.suffix == ".wav")
    y = load_audio(wav.path)
    assert y.dtype == np.float32 and abs(y.size - 0.6 * 16_000) <= 2


def test_parse_ravdess_name() -> None:
    f = parse_ravdess_name("/x/Actor_12/03-01-07-02-02-02-12.flac")
    assert (f.modality, f.channel, f.emotion, f.intensity, f.statement, f.repetition, f.actor) == (
        "audio", "speech", "disgust", "strong", "dogs", 2, 12,
    )  # fmt: skip
    assert f.speaker == "Actor_12"
    for bad in ("03-01-09-01-01-01-01.wav", "03-01-05-03-01-01-01.wav", "03-01-05-01-01-01-25.wav",
                "03-03-05-01-01-01-01.wav", "03-01-05-01-01-01.wav", "angry.wav"):  # fmt: skip
        with pytest.raises(CorpusError):
            parse_ravdess_name(bad)


# -------------------------------------------------------------------- errors
def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_ravdess(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no .wav or .flac"):
        load_ravdess(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match="no .wav or .flac"):
        load_ravdess(tmp_path)
    with pytest.raises(CorpusError):
        load_ravdess(tmp_path / "notes.txt")


def test_bad_names_duplicates_and_misplaced_files(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "Actor_01" / "recording.wav")
    with pytest.raises(CorpusError, match="not a RAVDESS file name"):
        load_ravdess(tmp_path / "a")
    _write(tmp_path / "b" / "Actor_01" / "03-01-05-01-01-01-01.wav")
    _write(tmp_path / "b" / "Actor_01" / "03-01-05-01-01-01-01.flac")
    with pytest.raises(CorpusError, match="twice"):
        load_ravdess(tmp_path / "b")
    _write(tmp_path / "c" / "Actor_02" / "03-01-05-01-01-01-01.wav")
    with pytest.raises(CorpusError, match="Actor_01 but lies in Actor_02"):
        load_ravdess(tmp_path / "c")


def test_emotion_filter_errors(wav_tree: Path) -> None:
    with pytest.raises(ValueError, match="unknown RAVDESS emotion"):
        load_ravdess(wav_tree, emotions=["angry", "bored"])
    with pytest.raises(ValueError):
        load_ravdess(wav_tree, emotions=[])
    with pytest.raises(CorpusError, match="no clip of the chosen emotions"):
        load_ravdess(wav_tree, emotions=["disgust"])
