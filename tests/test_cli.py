"""The ``ser`` command line: predict with the shipped model; train and evaluate on a small real subset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ser_engine.bundle import load_bundle
from ser_engine.cli import _recipe, build_parser, main
from ser_engine.features import FeatureConfig
from ser_engine.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini_corpus(ravdess_dir: Path, tmp_path_factory) -> Path:
    """Actors 1-6, angry and sad only (96 clips), as links to the real files."""
    root = tmp_path_factory.mktemp("mini")
    for actor in range(1, 7):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir()
        for src in sorted((ravdess_dir / folder.name).glob("03-01-0[45]-*.flac")):
            (folder / src.name).symlink_to(src)
    return root


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory) -> Path:
    """One feature cache for the module: the mini corpus is extracted once."""
    return tmp_path_factory.mktemp("feature-cache")


# ------------------------------------------------------------------ predict
def test_predict_real_subprocess(fixture_clips: list[Path]) -> None:
    """The one end-to-end check: ``python -m ser_engine.cli`` with the shipped model."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "ser_engine.cli", "predict", *map(str, fixture_clips)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4
    expected = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
    for clip, line in zip(fixture_clips, lines, strict=True):
        m = re.fullmatch(r"(.+): (\w+) \((\d\.\d\d)\)( unsure, or (\w+)\?)?", line)
        assert m and m.group(1) == str(clip), line
        label, confidence, unsure = m.group(2), float(m.group(3)), m.group(4) is not None
        assert 0.125 < confidence <= 1.0 and unsure == (confidence < 0.5)
        # Without the speaker's statistics (one clip each), a clip the model was
        # trained on is still recognised, or the answer says it is unsure.
        truth = expected[clip.name.split("-")[2]]
        assert label == truth or (unsure and truth != "angry"), line
        if clip.name.split("-")[3] == "02":  # strong intensity: must be right
            assert label == truth


def test_predict_json_and_per_file_errors(fixture_clips: list[Path], tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not really a wave file" * 10)
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    code = main(["predict", "--json", str(fixture_clips[3]), str(bad), str(empty)])
    out, err = capsys.readouterr()
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == [str(fixture_clips[3]), str(bad), str(empty)]
    assert rows[0]["label"] == "angry" and set(rows[0]["probabilities"]) >= {"angry", "calm"}
    assert rows[0]["confidence"] == max(rows[0]["probabilities"].values())
    assert rows[1]["error"] and rows[2]["error"] == "That file is empty."
    assert "Traceback" not in out + err

    code = main(["predict", str(bad), str(fixture_clips[3])])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[0].startswith(f"{bad}: error: ")
    assert re.fullmatch(rf"{re.escape(str(fixture_clips[3]))}: angry \(\d\.\d\d\)", out.splitlines()[1])


def test_predict_missing_model(fixture_clips: list[Path], tmp_path: Path, capsys) -> None:
    assert main(["predict", "--model", str(tmp_path / "none.joblib"), str(fixture_clips[0])]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: No emotion model found")


def test_bad_arguments(capsys) -> None:
    assert main([]) == 2
    assert main(["evaluate", "--corpus", "x", "--emotions", "angry,confused"]) == 2
    assert "unknown emotion(s) confused" in capsys.readouterr().err
    assert main(["train", "--corpus", "x", "--preset", "giant"]) == 2
    assert main(["evaluate", "--corpus", "x", "--condition", "opus24k,underwater"]) == 2
    assert "unknown condition(s) underwater" in capsys.readouterr().err


def test_corpus_errors(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--corpus", str(tmp_path / "nope"), "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("error: The corpus folder 'nope' does not exist")


# -------------------------------------------------------- evaluate and train
def test_recipe_flags_default_to_the_shipped_recipe() -> None:
    parser = build_parser()
    for command in ("train", "evaluate"):
        args = parser.parse_args([command, "--corpus", "x"])
        assert _recipe(args) == Recipe() == Recipe.from_bundle(ROOT / "models" / "ravdess-8class.json")
    args = parser.parse_args(["train", "--corpus", "x", "--features", "tutorial", "--augment", "none", "--no-calibrate",
                              "--normalization", "none", "--max-iter", "9", "--preset", "tutorial", "--no-scaler",
                              "--seed", "4", "--inner-folds", "4", "--inner-fits", "2", "--min-clips", "3",
                              "--unsure-below", "0.4", "--nested-grid"])  # fmt: skip
    r = _recipe(args)
    assert r == Recipe(features=FeatureConfig.tutorial(), augment=(), calibrate=False, normalization="none",
                       mlp={"max_iter": 9}, preset="tutorial", scaler=False, seed=4, inner_folds=4, inner_fits=2,
                       min_clips=3, unsure_below=0.4, grid=r.grid)  # fmt: skip
    assert len(r.grid) == 6 and {"hidden_layer_sizes": (128,), "alpha": 10.0} in r.grid
    assert main(["evaluate", "--corpus", "x", "--inner-folds", "3", "--inner-fits", "4", "--quiet"]) == 1


def test_recipe_from_a_file(tmp_path: Path, capsys) -> None:
    """``--recipe FILE`` takes the whole recipe from JSON: a Recipe.to_dict(), a report.json or a bundle sidecar."""
    parser = build_parser()
    mine = Recipe(features=FeatureConfig.tutorial(), augment=("phone", "reverb"), mlp={"max_iter": 30}, seed=7)
    plain, report = tmp_path / "recipe.json", tmp_path / "report.json"
    plain.write_text(json.dumps(mine.to_dict()))
    report.write_text(json.dumps({"protocol": "loco", "recipe": mine.to_dict()}))
    for path in (plain, report):
        args = parser.parse_args(["evaluate", "--corpus", "x", "--recipe", str(path), "--max-iter", "5"])
        assert _recipe(args) == mine  # the file wins over the flags
    sidecar = ROOT / "models" / "ravdess-8class.json"
    assert _recipe(parser.parse_args(["train", "--corpus", "x", "--recipe", str(sidecar)])) == Recipe.from_bundle(sidecar)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**mine.to_dict(), "preset": "giant"}))
    assert main(["evaluate", "--corpus", "x", "--recipe", str(bad), "--quiet"]) == 1
    assert "describes no valid recipe" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["evaluate", "--corpus", "x", "--recipe", str(bad), "--quiet"]) == 1
    assert "cannot be read as JSON" in capsys.readouterr().err


def test_evaluate_writes_report_and_plots(mini_corpus: Path, feature_cache: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "reports"
    args = ["evaluate", "--corpus", str(mini_corpus), "--features", "tutorial", "--folds", "3", "--augment", "none",
            "--max-iter", "40", "--out-dir", str(out_dir), "--cache-dir", str(feature_cache), "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "96 clips, 6 speakers, 2 classes" in table
    assert "random stratified 75/25 split" in table and "speaker-independent 3-fold (pooled)" in table
    report = json.loads((out_dir / "report.json").read_text())
    assert report["labels"] == ["sad", "angry"] and report["mlp_params"]["max_iter"] == 40
    assert len(report["speaker"]["folds"]) == 3 and report["random"]["folds"][0]["n_test"] == 24
    assert report["feature_config"]["groups"] == ["mfcc", "mel", "chroma"]
    # The recipe the flags built, recorded in the report: the shipped one but for the flags given.
    assert Recipe.from_dict(report["recipe"]) == Recipe(features=FeatureConfig.tutorial(), augment=(), mlp={"max_iter": 40})
    assert report["calibration"]["temperatures"] and len(report["calibration"]["temperatures"]) == 3
    for png in ("confusion_matrix.png", "loss_curve.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*args, "--json", "--no-scaler"]) == 0  # features now come from the cache
    printed = json.loads(capsys.readouterr().out)
    assert printed["scaler"] is False
    assert printed == json.loads((out_dir / "report.json").read_text())


def test_train_then_predict(mini_corpus: Path, feature_cache: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "out" / "mini.joblib"
    args = ["train", "--corpus", str(mini_corpus), "--emotions", "angry,sad", "--features", "tutorial", "--folds", "2",
            "--max-iter", "60", "--augment", "noise20", "--out", str(model), "--report-dir", str(tmp_path / "rep"),
            "--cache-dir", str(feature_cache), "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {model}" in out and "speaker-independent 2-fold" in out
    bundle = load_bundle(model)
    assert bundle.labels == ("sad", "angry") and bundle.metadata["n_clips"] == 96
    assert bundle.feature_config.n_features == 180
    assert bundle.metadata["metrics"]["speaker"]["n_folds"] == 2
    # The temperature fitted beside the final model reaches both the bundle and its metadata.
    assert bundle.temperature == bundle.metadata["temperature"] and bundle.temperature != 1.0
    assert (tmp_path / "rep" / "report.json").is_file()
    # The bundle carries the recipe that made it; /retrain reads it back from the sidecar.
    recipe = Recipe(features=FeatureConfig.tutorial(), augment=("noise20",), mlp={"max_iter": 60})
    assert Recipe.from_bundle(bundle) == recipe == Recipe.from_bundle(model.with_suffix(".json"))
    assert bundle.normalizer is not None and bundle.metadata["inner_folds"] == 3
    assert bundle.pipeline.named_steps["scaler"].n_samples_seen_ == 2 * 96  # clean and noisy copies
    clip = next(mini_corpus.glob("Actor_01/03-01-05-02-*.flac"))
    assert main(["predict", "--model", str(model), "--json", str(clip)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert list(row["probabilities"]) == ["sad", "angry"]


def test_evaluate_speaker_protocol_new_conditions(
    mini_corpus: Path, feature_cache: Path, tmp_path: Path, capsys
) -> None:
    """The new recording conditions are scored as rows of the speaker protocol, with their change against clean."""
    out_dir = tmp_path / "reports"
    args = ["evaluate", "--corpus", str(mini_corpus), "--features", "tutorial", "--folds", "3", "--augment", "none",
            "--no-calibrate", "--max-iter", "40", "--condition", "phone,short1.5", "--out-dir", str(out_dir),
            "--cache-dir", str(feature_cache), "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    report = json.loads((out_dir / "report.json").read_text())
    clean = report["speaker"]
    for condition in ("phone", "short1.5"):
        variant = report["variants"][condition]
        assert 0.0 <= variant["uar_mean"] <= 1.0 and len(variant["folds"]) == 3
        line = next(ln for ln in table.splitlines() if ln.strip().startswith(condition + " "))
        drop = 100 * (variant["uar_mean"] - clean["uar_mean"])
        assert line.rstrip().endswith(f"{drop:+.1f}pt"), line
    # Another channel, other features: the phone band removes everything above 3.4 kHz.
    phone = report["variants"]["phone"]
    assert phone["confusion"] != clean["confusion"] or phone["uar"] != clean["uar"]


def test_several_corpora_and_protocol_errors(ravdess_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--protocol", "loco", "--corpus", str(ravdess_dir), "--max-clips-per-corpus", "20",
                 "--features", "tutorial", "--augment", "none", "--quiet", "--out-dir", str(tmp_path)]) == 1  # fmt: skip
    assert "needs at least two corpora" in capsys.readouterr().err
    assert main(["evaluate", "--corpus", str(ravdess_dir), "--model", "x.joblib", "--quiet"]) == 1
    assert "--model is for --protocol score" in capsys.readouterr().err
    assert main(["evaluate", "--format", "tess", "--corpus", "a", "--corpus", "b", "--quiet"]) == 1
    assert "reads one corpus" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "score", "--model", str(tmp_path / "none.joblib"), "--corpus",
                 str(ravdess_dir), "--quiet"]) == 1  # fmt: skip
    assert capsys.readouterr().err.startswith("error: No emotion model found")


# ------------------------------------------------------- no speech, explore
def _non_speech(folder: Path) -> list[Path]:
    """A 220 Hz square wave (FLAC) and white noise (WAV), 2 s at 16 kHz: loud, and no speech."""
    import numpy as np
    import soundfile as sf

    sr = 16000
    t = np.arange(2 * sr) / sr
    square, noise = folder / "square.flac", folder / "noise.wav"
    sf.write(square, 0.5 * np.sign(np.sin(2 * np.pi * 220.0 * t)), sr)
    sf.write(noise, np.random.default_rng(0).normal(0.0, 0.2, t.size).clip(-1, 1), sr)
    return [square, noise]


def test_predict_refuses_non_speech(fixture_clips: list[Path], tmp_path: Path, capsys) -> None:
    square, noise = _non_speech(tmp_path)
    message = "I couldn't hear any speech in that recording."
    code = main(["predict", str(square), str(noise), str(fixture_clips[3])])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert lines[:2] == [f"{square}: error: {message}", f"{noise}: error: {message}"]
    assert re.fullmatch(rf"{re.escape(str(fixture_clips[3]))}: angry \(\d\.\d\d\)", lines[2])  # speech still answered
    assert "Traceback" not in out + err
    assert main(["predict", "--json", str(square)]) == 1
    assert json.loads(capsys.readouterr().out) == {"file": str(square), "error": message}


def test_predict_non_speech_exit_status_subprocess(tmp_path: Path) -> None:
    square, _ = _non_speech(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ser_engine", "predict", str(square)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout == f"{square}: error: I couldn't hear any speech in that recording.\n"


def test_explore_through_ser(fixture_clips: list[Path], tmp_path: Path, capsys) -> None:
    assert main(["explore", "--help"]) == 0
    assert "ser explore" in capsys.readouterr().out
    corpus = tmp_path / "ravdess"
    for clip in fixture_clips:
        actor = corpus / f"Actor_{clip.stem[-2:]}"
        actor.mkdir(parents=True, exist_ok=True)
        (actor / clip.name).symlink_to(clip)
    out_dir = tmp_path / "explore"
    assert main(["explore", str(corpus), "--out-dir", str(out_dir)]) == 0
    index = out_dir / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    assert "<img" in index.read_text() and any(out_dir.glob("*.png"))
    assert main(["explore", str(tmp_path / "nope"), "--out-dir", str(out_dir)]) == 1
    assert "does not exist" in capsys.readouterr().err
