"""Across corpora: ``ser evaluate --protocol loco`` and ``--protocol score`` on small stratified real subsets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ser_engine.bundle import DEFAULT_MODEL_PATH, load_bundle
from ser_engine.cli import main
from ser_engine.corpora import load_corpora
from ser_engine.evaluation import COMMON_EMOTIONS, CrossCorpusReport, bundle_proba, score_held_out, stratified_subset
from ser_engine.normalization import SpeakerStats
from ser_engine.predict import Predictor
from tests.conftest import RAVDESS_DIR, _require

DATA = RAVDESS_DIR.parent


def _corpus(name: str) -> Path:
    folder = DATA / name
    _require((folder / "manifest.csv").is_file() or name.startswith("ravdess"), f"{name} not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def loco_run(ravdess_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    """One loco run: RAVDESS, nEMO and URDU, 40 clips each, the small tutorial features, 60 epochs, phone scored."""
    out_dir = tmp_path_factory.mktemp("loco")
    cache = tmp_path_factory.mktemp("loco-cache")
    args = ["evaluate", "--protocol", "loco", "--corpus", str(ravdess_dir), "--corpus", str(_corpus("nemo")),
            "--corpus", str(_corpus("urdu")), "--max-clips-per-corpus", "40", "--features", "tutorial",
            "--augment", "noise20", "--max-iter", "60", "--condition", "phone", "--cache-dir", str(cache),
            "--out-dir", str(out_dir), "--quiet"]  # fmt: skip
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    report = json.loads((out_dir / "report.json").read_text())
    return report, buffer.getvalue(), out_dir


def test_loco_one_row_per_held_out_corpus(loco_run: tuple[dict, str, Path]) -> None:
    report, table, _ = loco_run
    assert report["protocol"] == "loco" and report["max_clips_per_corpus"] == 40
    rows = {r["corpus"]: r for r in report["rows"]}
    assert list(rows) == ["ravdess", "nemo", "urdu"]
    for name, row in rows.items():
        assert row["n_clips"] == 40
        # Trained on the other two corpora only: every clip but its own.
        assert row["n_train"] == 80
        for key in ("uar", "uar4", "macro_f1", "accuracy", "ece", "ece4", "unsure"):
            assert 0.0 <= row["new"][key] <= 1.0, (name, key, row["new"][key])
        assert 0.0 < report["temperatures"][name]
        # The table has the corpus' row with its numbers as in the JSON.
        line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
        assert f"{row['new']['uar']:.3f}" in line and f"{row['new']['uar4']:.3f}" in line
    assert next(ln for ln in table.splitlines() if ln.startswith("mean "))
    mean_uar4 = np.mean([r["new"]["uar4"] for r in rows.values()])
    assert report["mean"]["new"]["uar4"] == pytest.approx(mean_uar4)
    assert report["mean"]["min_uar4_new"] == pytest.approx(min(r["new"]["uar4"] for r in rows.values()))
    # report.json gives the printed table back.
    assert CrossCorpusReport.from_dict(report).table() in table


def test_loco_masks_emotions_a_corpus_lacks(loco_run: tuple[dict, str, Path]) -> None:
    report, _, _ = loco_run
    rows = {r["corpus"]: r for r in report["rows"]}
    nemo_labels = {"angry", "fearful", "happy", "neutral", "sad", "surprised"}
    assert set(rows["nemo"]["labels"]) == nemo_labels
    # No recall for 'calm' (nEMO has none): UAR is over its own six emotions.
    assert set(rows["nemo"]["new"]["per_class_recall"]) == nemo_labels
    assert rows["nemo"]["new"]["uar"] == pytest.approx(np.mean(list(rows["nemo"]["new"]["per_class_recall"].values())))
    assert set(rows["urdu"]["new"]["per_class_recall"]) == set(COMMON_EMOTIONS)
    assert len(rows["ravdess"]["new"]["per_class_recall"]) == 8
    # The model trained without RAVDESS never saw 'calm' (no other corpus has it): calm recall is 0.
    assert rows["ravdess"]["new"]["per_class_recall"]["calm"] == 0.0


def test_loco_known_speakers_skipped_for_urdu(loco_run: tuple[dict, str, Path]) -> None:
    report, table, _ = loco_run
    rows = {r["corpus"]: r for r in report["rows"]}
    assert rows["urdu"]["known"] is None
    assert rows["ravdess"]["known"] is not None and rows["nemo"]["known"] is not None
    assert 0.0 <= rows["nemo"]["known"]["uar"] <= 1.0
    assert "known speakers not scored for urdu" in table
    assert "phone" in rows["urdu"]["conditions"] and "known" not in rows["urdu"]["conditions"]["phone"]
    # The degraded clips are scored by the same models: a change, but still a valid score.
    for row in rows.values():
        assert 0.0 <= row["conditions"]["phone"]["new"]["uar"] <= 1.0
    assert "condition phone" in table


def test_score_held_out_folds_out_other_emotions() -> None:
    labels = ["neutral", "calm", "happy", "sad", "angry"]
    # Clip 0 is sad, but 'calm' gets the most probability: wrong over all outputs, right over the four
    # (sad .3 vs angry .2).  Clip 1 is happy and right both ways.  Clip 2 is angry, wrong both ways (neutral).
    P = np.array([[0.0, 0.5, 0.0, 0.3, 0.2], [0.1, 0.0, 0.7, 0.1, 0.1], [0.6, 0.2, 0.0, 0.2, 0.0]])
    y = np.array([3, 2, 4])
    s = score_held_out(P, y, labels, unsure_below=0.65)
    assert s.accuracy == pytest.approx(1 / 3) and s.accuracy4 == pytest.approx(2 / 3)
    assert set(s.per_class_recall) == {"sad", "happy", "angry"}  # neutral and calm: not in the corpus
    assert s.uar == pytest.approx(1 / 3) and s.uar4 == pytest.approx(2 / 3)
    assert s.unsure == pytest.approx(2 / 3) and s.confident_accuracy == 1.0  # only the 0.7 answer is confident
    # ECE on four classes: the renormalised rows' confidences are .6 (right), .7 (right), .75 (wrong), one bin each.
    assert s.ece4 == pytest.approx(abs(1 - 0.6) / 3 + abs(1 - 0.7) / 3 + abs(0 - 0.75) / 3)
    assert s.ece == pytest.approx(abs(0 - 0.5) / 3 + abs(1 - 0.7) / 3 + abs(0 - 0.6) / 3)
    # The happy clip now calm over all outputs, happy (.07 vs angry .03) over the four.
    P2 = P.copy()
    P2[1] = [0.0, 0.9, 0.07, 0.0, 0.03]
    s2 = score_held_out(P2, y, labels, unsure_below=0.65)
    assert s2.accuracy == 0.0 and s2.accuracy4 == pytest.approx(2 / 3)


def test_stratified_subset_keeps_each_corpus_proportions(ravdess_dir: Path) -> None:
    clips = load_corpora([ravdess_dir, _corpus("emovo")])
    subset = stratified_subset(clips, 56, seed=3)
    assert subset == stratified_subset(clips, 56, seed=3)  # reproducible
    assert subset != stratified_subset(clips, 56, seed=4)
    counts = Counter(c.corpus for c in subset)
    assert counts == {"ravdess": 56, "emovo": 56}
    emovo = Counter(c.label for c in subset if c.corpus == "emovo")
    assert set(emovo.values()) == {8}  # 7 emotions x 84 clips -> 8 each
    ravdess = Counter(c.label for c in subset if c.corpus == "ravdess")
    assert ravdess["neutral"] in (3, 4) and all(ravdess[e] in (7, 8) for e in ravdess if e != "neutral")
    assert stratified_subset(clips, 5000, seed=0) == clips


def test_score_protocol_matches_predictor(tmp_path: Path) -> None:
    """``--protocol score`` gives the numbers :class:`Predictor` gives clip by clip (new and known speakers)."""
    emovo, emotiontts = _corpus("emovo"), _corpus("emotiontts")
    out_dir = tmp_path / "out"
    args = ["evaluate", "--protocol", "score", "--corpus", str(emovo), "--corpus", str(emotiontts),
            "--max-clips-per-corpus", "14", "--seed", "1", "--out-dir", str(out_dir), "--quiet"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out_dir / "report.json").read_text())
    assert report["protocol"] == "score" and report["model"]["path"] == str(DEFAULT_MODEL_PATH)

    bundle = load_bundle(DEFAULT_MODEL_PATH)
    predictor = Predictor(bundle, detect_speech=False)
    clips = stratified_subset(load_corpora([emovo, emotiontts]), 14, seed=1)
    for row in report["rows"]:
        own = [c for c in clips if c.corpus == row["corpus"]]
        assert row["n_clips"] == len(own) == 14
        predictions = [predictor.predict(c.path) for c in own]
        truth = np.array([bundle.labels.index(c.label) for c in own])
        P_new = np.array([[p.probabilities[label] for label in bundle.labels] for p in predictions])
        # Known speakers: each speaker's statistics from all of their clips in the subset, as the bot keeps them.
        stats = {s: SpeakerStats.of(np.stack([p.features for p, c in zip(predictions, own, strict=True)
                                              if c.speaker == s])) for s in {c.speaker for c in own}}  # fmt: skip
        P_known = np.array([
            [q.probabilities[label] for label in bundle.labels]
            for q in (predictor.classify_features(p.features, speaker_stats=stats[c.speaker])
                      for p, c in zip(predictions, own, strict=True))
        ])  # fmt: skip
        for key, P in (("new", P_new), ("known", P_known)):
            expected = score_held_out(P, truth, list(bundle.labels), unsure_below=predictor.unsure_below)
            got = row[key]
            for field in ("uar", "uar4", "accuracy", "macro_f1", "ece", "ece4", "unsure"):
                assert got[field] == pytest.approx(getattr(expected, field), abs=1e-6), (row["corpus"], key, field)
            # The per-clip answers agree too (bundle_proba is the batch path of the report).
            features = np.stack([p.features for p in predictions])
            groups = None if key == "new" else [c.speaker for c in own]
            np.testing.assert_allclose(bundle_proba(bundle, features, groups), P, atol=1e-5)
