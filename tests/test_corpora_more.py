"""Loaders of TESS, SAVEE, EmoDB, CREMA-D and CSV lists, on generated files named by each corpus' real scheme."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import load_audio
from ser_engine.corpora import (
    LABELS,
    LOADERS,
    load_cremad,
    load_csv_corpus,
    load_emodb,
    load_savee,
    load_tess,
    normalise_label,
)
from ser_engine.errors import CorpusError


def _wav(path: Path, seed: int = 0) -> Path:
    """0.5 s of a quiet tone plus noise at 16 kHz: a tiny real WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 16000
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * np.sin(2 * np.pi * (150 + seed) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16000)
    return path


def test_tess(tmp_path: Path) -> None:
    emotions = ["angry", "disgust", "fear", "happy", "neutral", "ps", "sad"]
    for speaker, folder in (("OAF", "OAF_{}"), ("YAF", "YAF_{}")):
        for e in emotions:
            for word in ("back", "dog"):
                _wav(tmp_path / folder.format(e) / f"{speaker}_{word}_{e}.wav")
    clips = load_tess(tmp_path)
    assert len(clips) == 28
    assert Counter(c.speaker for c in clips) == {"tess:OAF": 14, "tess:YAF": 14}
    assert {c.label for c in clips} == {"angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad"}
    one = next(c for c in clips if c.path.name == "YAF_dog_ps.wav")
    assert (one.label, one.statement, one.corpus) == ("surprised", "dog", "tess")
    assert load_audio(one.path).size == 8000
    assert {c.label for c in load_tess(tmp_path, emotions=["Fear", "sad"])} == {"fearful", "sad"}
    _wav(tmp_path / "XAF_back_angry.wav")
    with pytest.raises(CorpusError, match="not a TESS file name"):
        load_tess(tmp_path)


def test_savee_folders_and_flat(tmp_path: Path) -> None:
    codes = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
    for speaker in ("DC", "JE", "JK", "KL"):
        for code in codes:
            _wav(tmp_path / "AudioData" / speaker / f"{code}01.wav")
    flat = tmp_path.parent / (tmp_path.name + "-flat")
    _wav(flat / "JK_sa15.wav")
    _wav(flat / "KL_su02.wav")
    clips = load_savee(tmp_path)
    assert len(clips) == 28 and {c.speaker for c in clips} == {"savee:DC", "savee:JE", "savee:JK", "savee:KL"}
    for c in clips:
        assert c.label == codes[c.path.stem[:-2]]
    assert [(c.speaker, c.label) for c in load_savee(flat)] == [("savee:JK", "sad"), ("savee:KL", "surprised")]
    _wav(flat / "XY_a01.wav")
    with pytest.raises(CorpusError, match="not a SAVEE file"):
        load_savee(flat)


def test_emodb(tmp_path: Path) -> None:
    letters = {"W": "angry", "L": "bored", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
    for speaker in ("03", "16"):
        for letter in letters:
            _wav(tmp_path / "wav" / f"{speaker}a01{letter}a.wav")
    _wav(tmp_path / "wav" / "08b10Wb.wav")
    clips = load_emodb(tmp_path)
    assert len(clips) == 15 and Counter(c.speaker for c in clips) == {"emodb:03": 7, "emodb:16": 7, "emodb:08": 1}
    for c in clips:
        assert c.label == letters[c.path.stem[5]]
    assert next(c for c in clips if c.path.stem == "08b10Wb").statement == "b10"
    assert {c.label for c in load_emodb(tmp_path, emotions=["boredom"])} == {"bored"}
    _wav(tmp_path / "wav" / "04a01Fa.wav")  # no speaker 04 in EmoDB
    with pytest.raises(CorpusError, match="not an EmoDB file name"):
        load_emodb(tmp_path)


def test_cremad(tmp_path: Path) -> None:
    names = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1001_IEO_SAD_LO", "1091_TSI_DIS_MD", "1091_WSI_FEA_XX",
             "1091_ITS_NEU_XX"]  # fmt: skip
    for n in names:
        _wav(tmp_path / "AudioWAV" / f"{n}.wav")
    clips = load_cremad(tmp_path)
    got = {c.path.stem: (c.speaker, c.label, c.intensity, c.statement) for c in clips}
    assert got["1001_DFA_ANG_XX"] == ("cremad:1001", "angry", None, "DFA")
    assert got["1001_IEO_HAP_HI"] == ("cremad:1001", "happy", "high", "IEO")
    assert got["1001_IEO_SAD_LO"][1:3] == ("sad", "low")
    assert got["1091_TSI_DIS_MD"] == ("cremad:1091", "disgust", "medium", "TSI")
    assert {got[n][1] for n in names[4:]} == {"fearful", "neutral"}
    for bad in ("1001_XXX_ANG_XX", "0999_DFA_ANG_XX", "1001_DFA_JOY_XX"):
        folder = tmp_path.parent / f"{tmp_path.name}-{bad}"
        _wav(folder / f"{bad}.wav")
        with pytest.raises(CorpusError, match="not a CREMA-D file name"):
            load_cremad(folder)


def test_csv_corpus(tmp_path: Path) -> None:
    _wav(tmp_path / "audio" / "x1.wav")
    _wav(tmp_path / "audio" / "x2.wav", seed=1)
    absolute = _wav(tmp_path / "elsewhere" / "y.flac")
    (tmp_path / "list.csv").write_text(
        f"path,label,speaker,notes\naudio/x1.wav,Anger,alice,\naudio/x2.wav,joy,bob,loud\n{absolute},Boredom,alice,\n"
    )
    clips = load_csv_corpus(tmp_path / "list.csv", corpus="mine")
    assert [(c.path.name, c.label, c.speaker, c.corpus) for c in clips] == [
        ("x1.wav", "angry", "mine:alice", "mine"),
        ("x2.wav", "happy", "mine:bob", "mine"),
        ("y.flac", "bored", "mine:alice", "mine"),
    ]
    assert load_audio(clips[1].path).size == 8000
    (tmp_path / "bad.csv").write_text("path,label\naudio/x1.wav,angry\n")
    with pytest.raises(CorpusError, match="lacks the column"):
        load_csv_corpus(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("path,label,speaker\naudio/nope.wav,angry,a\n")
    with pytest.raises(CorpusError, match="line 2"):
        load_csv_corpus(tmp_path / "gone.csv")
    (tmp_path / "odd.csv").write_text("path,label,speaker\naudio/x1.wav,confused,a\n")
    with pytest.raises(CorpusError, match="confused"):
        load_csv_corpus(tmp_path / "odd.csv")


def test_one_vocabulary() -> None:
    assert set(LOADERS) == {"ravdess", "tess", "savee", "emodb", "cremad", "csv", "manifest"}
    for spelling, label in {"ANG": "angry", "Fear": "fearful", "pleasant surprise": "surprised", "Sadness": "sad",
                            "disgusted": "disgust", "NEU": "neutral", "happiness": "happy"}.items():  # fmt: skip
        assert normalise_label(spelling) == label
    assert all(normalise_label(label) == label for label in LABELS)
