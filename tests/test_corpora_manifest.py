"""Manifest corpora, several corpora at once, symbolic links and the licence table, on the real data in ../shared/data."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ser_engine.audio import load_audio
from ser_engine.corpora import (
    CORPORA,
    LOADERS,
    SPEAKER_FIXES,
    Clip,
    corpus_format,
    corpus_info,
    label_counts,
    licence_table,
    load_corpora,
    load_manifest,
    load_ravdess,
    shareable_clips,
)
from ser_engine.errors import CorpusError
from tests.conftest import RAVDESS_DIR, _require

DATA = RAVDESS_DIR.parent
#: Counts from ../shared/data/README.md: clips, speaker ids (after the ASED merge), label counts, language.
README = {
    "nemo": (4481, 9, {"neutral": 809, "sad": 769, "angry": 749, "happy": 749, "fearful": 736, "surprised": 669}, "pl"),
    "ased": (2474, 65, {"neutral": 522, "fearful": 510, "happy": 486, "angry": 486, "sad": 470}, "am"),
    "emovo": (588, 6, {e: 84 for e in ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")}, "it"),
    "urdu": (400, 29, {e: 100 for e in ("angry", "happy", "neutral", "sad")}, "ur"),
    "emotiontts": (300, 15, {e: 75 for e in ("angry", "happy", "neutral", "sad")}, "ko"),
}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    _require(all((DATA / name / "manifest.csv").is_file() for name in README), f"manifest corpora not found in {DATA}")
    return DATA


# ------------------------------------------------------------- real corpora
@pytest.mark.parametrize("name", sorted(README))
def test_each_manifest_corpus_has_the_readme_counts(data_dir: Path, name: str) -> None:
    n, speakers, labels, language = README[name]
    clips = load_manifest(data_dir / name)
    assert len(clips) == n and label_counts(clips) == labels
    assert len({c.speaker for c in clips}) == speakers
    assert {c.corpus for c in clips} == {name} and {c.language for c in clips} == {language}
    assert {c.gender for c in clips} == {"F", "M"}
    assert all(c.speaker.startswith(f"{name}-") and c.path.is_file() for c in clips)
    assert clips == sorted(clips, key=lambda c: c.path)
    # The same list whether the folder or its manifest file is named.
    assert load_manifest(data_dir / name / "manifest.csv") == clips
    # Opus at 16 kHz decodes (one clip per corpus: the loader itself never opens audio).
    y = load_audio(clips[0].path)
    assert y.dtype == np.float32 and 0.9 * 16000 < y.size < 15 * 16000


def test_ased_gender_typos_are_merged_into_the_female_speakers(data_dir: Path) -> None:
    fixed = {c.path.stem: c for c in load_manifest(data_dir / "ased")}
    raw = {c.path.stem: c for c in load_manifest(data_dir / "ased", fix_speakers=False)}
    assert len({c.speaker for c in raw.values()}) == 70  # 25 F + 45 M ids as named
    assert len({c.speaker for c in fixed.values()}) == 65  # the README's 65 people
    assert sum(key[0] == "ased" for key in SPEAKER_FIXES) == 5
    for (_, stem), (speaker, gender) in SPEAKER_FIXES.items():
        number = stem[-2:]
        assert raw[stem].speaker == f"ased-M{number}" and raw[stem].gender == "M"
        assert (fixed[stem].speaker, fixed[stem].gender) == (speaker, gender) == (f"ased-F{number}", "F")
        # The moved clip is the other repetition of one of the female speaker's clips.
        sentence, repetition = stem[3:5], stem[6:8]
        twin = f"{stem[:2]}-{sentence}-{'01' if repetition == '02' else '02'}-01-{number}"
        assert fixed[twin].speaker == speaker
    moved = {stem for _, stem in SPEAKER_FIXES}
    assert all(fixed[s] == raw[s] for s in fixed if s not in moved)


def test_all_six_corpora_at_once(data_dir: Path) -> None:
    roots = [RAVDESS_DIR, *(data_dir / name for name in ("nemo", "ased", "emovo", "urdu", "emotiontts"))]
    assert [corpus_format(r) for r in roots] == ["ravdess"] + ["manifest"] * 5
    clips = load_corpora(roots)
    assert len(clips) == 1440 + sum(n for n, *_ in README.values()) == 9683
    assert list(dict.fromkeys(c.corpus for c in clips)) == ["ravdess", "nemo", "ased", "emovo", "urdu", "emotiontts"]
    assert clips[:1440] == load_ravdess(RAVDESS_DIR)
    assert len({c.speaker for c in clips}) == 24 + sum(s for _, s, *_ in README.values())
    # Four emotions every corpus has; a corpus without calm simply has none.
    four = load_corpora(roots, emotions=["angry", "happy", "neutral", "sad"])
    expected = {(c, e) for c in CORPORA for e in ("angry", "happy", "neutral", "sad")}
    assert set(Counter((c.corpus, c.label) for c in four)) == expected
    with pytest.raises(CorpusError, match="no clip of the chosen emotions"):
        load_corpora(roots, emotions=["calm"])


def test_same_corpus_twice_or_colliding_speakers_are_refused(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="given twice"):
        load_corpora([data_dir / "urdu", data_dir / "urdu" / ".." / "urdu"])
    copy = tmp_path / "urdu-again"
    copy.mkdir()
    lines = (data_dir / "urdu" / "manifest.csv").read_text().splitlines()
    urdu = data_dir / "urdu"
    (copy / "manifest.csv").write_text("\n".join(lines[:1] + [f"{urdu}/{line}" for line in lines[1:3]]) + "\n")
    with pytest.raises(CorpusError, match="two corpora"):
        load_corpora([data_dir / "urdu", copy])
    emovo_clip = data_dir / "emovo" / "dis-f1-b1.ogg"
    (copy / "manifest.csv").write_text(f"{lines[0]}\n{emovo_clip},disgust,urdu-SF10,mine,it,F\n")
    with pytest.raises(CorpusError, match="urdu-SF10"):
        load_corpora([data_dir / "urdu", copy])
    with pytest.raises(CorpusError, match="No corpus"):
        load_corpora([])
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpora([tmp_path / "nope"])


# ----------------------------------------------------------- symbolic links
def test_ravdess_folder_of_linked_actor_folders_reads_like_the_real_one(ravdess_dir: Path, tmp_path: Path) -> None:
    linked = tmp_path / "ravdess-links"
    linked.mkdir()
    for actor in sorted(ravdess_dir.glob("Actor_*")):
        (linked / actor.name).symlink_to(actor.resolve(), target_is_directory=True)
    clips = load_ravdess(linked)
    real = load_ravdess(ravdess_dir)
    assert len(clips) == 1440
    assert [(c.path.relative_to(linked), c.label, c.speaker) for c in clips] == [
        (c.path.relative_to(ravdess_dir), c.label, c.speaker) for c in real
    ]
    # The whole corpus folder as a link, and a linked file, read too.
    (tmp_path / "whole").symlink_to(ravdess_dir.resolve(), target_is_directory=True)
    assert len(load_corpora([tmp_path / "whole"])) == 1440
    single = tmp_path / "single" / "Actor_01"
    single.mkdir(parents=True)
    (single / real[0].path.name).symlink_to(real[0].path.resolve())
    assert [c.label for c in load_ravdess(tmp_path / "single")] == [real[0].label]


def test_a_link_cycle_is_not_followed_forever(fixture_clips: list[Path], tmp_path: Path) -> None:
    actor = tmp_path / "corpus" / "Actor_04"
    actor.mkdir(parents=True)
    shutil.copy(fixture_clips[0], actor / fixture_clips[0].name)  # 03-01-01-01-01-01-04.flac
    (actor / "loop").symlink_to(tmp_path / "corpus", target_is_directory=True)
    clips = load_ravdess(tmp_path / "corpus")
    assert [c.path.relative_to(tmp_path / "corpus") for c in clips] == [Path("Actor_04") / fixture_clips[0].name]


def test_manifest_folder_of_links(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "emovo-links"
    folder.mkdir()
    (folder / "manifest.csv").symlink_to(data_dir / "emovo" / "manifest.csv")
    real = load_manifest(data_dir / "emovo")
    for c in real:
        (folder / c.path.name).symlink_to(c.path)
    clips = load_corpora([folder])
    assert [(c.path.name, c.label, c.speaker) for c in clips] == [(c.path.name, c.label, c.speaker) for c in real]


# ---------------------------------------------------------- bad manifests
def test_bad_manifests_get_a_clear_error(fixture_clips: list[Path], tmp_path: Path) -> None:
    clip = fixture_clips[0]
    header = "path,label,speaker,corpus,language,gender\n"
    cases = {
        "lacks the column": "path,label,speaker\nx.flac,angry,a\n",
        "does not exist": header + "gone.flac,angry,a,mine,en,F\n",
        "listed twice": header + f"{clip},angry,a,mine,en,F\n{clip},sad,a,mine,en,F\n",
        "not F or M": header + f"{clip},angry,a,mine,en,X\n",
        "'confused'": header + f"{clip},confused,a,mine,en,F\n",
        "no speaker": header + f"{clip},angry,,mine,en,F\n",
    }
    for message, text in cases.items():
        folder = tmp_path / message.replace(" ", "-").strip("'")
        folder.mkdir()
        (folder / "manifest.csv").write_text(text)
        assert corpus_format(folder) == "manifest"
        with pytest.raises(CorpusError, match=message):
            load_manifest(folder)
    with pytest.raises(CorpusError, match="no manifest.csv"):
        load_manifest(tmp_path)
    good = tmp_path / "good"
    good.mkdir()
    (good / "manifest.csv").write_text(header + f"{clip},Anger,mine-a,Mine,EN,\n")
    assert load_manifest(good) == [Clip(clip, "angry", "mine-a", "mine", language="en", gender=None)]
    with pytest.raises(CorpusError, match="no clip of the chosen emotions"):
        load_manifest(good, emotions=["sad"])
    assert LOADERS["manifest"] is load_manifest


# ----------------------------------------------------------------- licences
def test_licence_table_decides_what_a_shipped_model_may_train_on(data_dir: Path) -> None:
    assert {n for n, info in CORPORA.items() if info.shareable} == {"ravdess", "nemo", "emotiontts"}
    assert all(info.licence.startswith("CC BY-NC-SA 4.0") for info in CORPORA.values() if info.shareable)
    assert corpus_info("URDU").licence.startswith("research use only") and not corpus_info("urdu").own_speaker_stats
    assert corpus_info("tess") is None
    clips = load_corpora([RAVDESS_DIR, *(data_dir / n for n in README)])
    shipped = shareable_clips(clips)
    assert Counter(c.corpus for c in shipped) == {"ravdess": 1440, "nemo": 4481, "emotiontts": 300}
    # An unknown corpus never ships.
    assert shareable_clips([Clip(Path("x.wav"), "sad", "s", "tess")]) == []
    table = {row["corpus"]: row for row in licence_table(clips)}
    assert list(table) == ["ravdess", "nemo", "ased", "emovo", "urdu", "emotiontts"]
    assert (table["ased"]["clips"], table["ased"]["speakers"], table["ased"]["shareable"]) == (2474, 65, False)
    assert table["emovo"]["licence"].startswith("not stated") and table["ravdess"]["labels"]["neutral"] == 96
    assert licence_table([Clip(Path("x.wav"), "sad", "s", "tess")])[0]["licence"] == "unknown"


def test_ravdess_clips_carry_language_and_gender(ravdess_dir: Path) -> None:
    clips = load_ravdess(ravdess_dir)
    assert {c.language for c in clips} == {"en"}
    assert Counter(c.gender for c in clips) == {"M": 720, "F": 720}
    assert all((c.gender == "M") == (int(c.speaker[-2:]) % 2 == 1) for c in clips)
    assert os.fspath(clips[0].path).endswith(".flac")
