"""Training and evaluation: presets, features, fingerprints, both protocols on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ser_engine import training
from ser_engine.audio import load_audio
from ser_engine.corpora import Clip, load_ravdess
from ser_engine.evaluation import EvaluationReport, evaluate, score, write_report
from ser_engine.features import FeatureConfig, extract_features
from ser_engine.training import (
    PRESETS,
    build_pipeline,
    data_fingerprint,
    encode_labels,
    featurize,
    label_order,
    train_model,
)

FIXTURES = Path(__file__).resolve().parent / "data"


# ------------------------------------------------------------------ presets
def test_tutorial_preset_is_the_classic_recipe() -> None:
    assert PRESETS["tutorial"] == {
        "hidden_layer_sizes": (300,), "alpha": 0.01, "batch_size": 256, "epsilon": 1e-08,
        "learning_rate": "adaptive", "max_iter": 500,
    }  # fmt: skip


def test_build_pipeline() -> None:
    pipe = build_pipeline("tutorial", random_state=3)
    assert [name for name, _ in pipe.steps] == ["scaler", "mlp"]
    assert pipe.named_steps["mlp"].hidden_layer_sizes == (300,) and pipe.named_steps["mlp"].random_state == 3
    bare = build_pipeline("tutorial", scaler=False, overrides={"max_iter": 7})
    assert [name for name, _ in bare.steps] == ["mlp"] and bare.named_steps["mlp"].max_iter == 7
    assert PRESETS["tutorial"]["max_iter"] == 500  # overrides never leak into the preset
    for name in PRESETS:
        assert build_pipeline(name).named_steps["mlp"].get_params()["alpha"] == PRESETS[name]["alpha"]
    with pytest.raises(ValueError, match="unknown preset"):
        build_pipeline("huge")


# ---------------------------------------------------- labels and fingerprint
def test_label_order_and_encoding() -> None:
    clips = [Clip(Path(f"{i}.wav"), label, "s", "x") for i, label in enumerate(["sad", "zz", "neutral", "sad"])]
    assert label_order(clips) == ("neutral", "sad", "zz")
    np.testing.assert_array_equal(encode_labels(clips, ("neutral", "sad", "zz")), [1, 2, 0, 1])
    with pytest.raises(ValueError, match="'zz'"):
        encode_labels(clips, ("neutral", "sad"))


def test_data_fingerprint(tmp_path: Path) -> None:
    clips = load_ravdess(FIXTURES)
    digest = data_fingerprint(clips)
    assert len(digest) == 64
    assert data_fingerprint(list(reversed(clips))) == digest  # order does not matter
    copy = tmp_path / "elsewhere"
    shutil.copytree(FIXTURES, copy)
    copied = load_ravdess(copy)
    assert data_fingerprint(copied) == digest  # location does not matter
    data = bytearray(copied[0].path.read_bytes())
    data[-1] ^= 0xFF
    copied[0].path.write_bytes(bytes(data))
    assert data_fingerprint(copied) != digest  # content does
    assert data_fingerprint(clips[:3]) != digest
    with pytest.raises(ValueError):
        data_fingerprint([])


# ----------------------------------------------------------------- features
def test_featurize_matches_extract_features_and_caches(tmp_path: Path, monkeypatch) -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig()
    X = featurize(clips, config=config, cache_dir=tmp_path)
    assert X.shape == (4, config.n_features) and X.dtype == np.float32
    for row, clip in zip(X, clips, strict=True):
        np.testing.assert_allclose(row, extract_features(y=load_audio(clip.path), config=config), rtol=1e-6)
    assert len(list(tmp_path.glob("features-*.npy"))) == 1

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(training, "extract_many", no_extraction)
    np.testing.assert_array_equal(featurize(clips, config=config, cache_dir=tmp_path), X)
    with pytest.raises(AssertionError, match="extracted again"):  # another config is another key
        featurize(clips, config=FeatureConfig.tutorial(), cache_dir=tmp_path)


def test_featurize_in_parallel_equals_serial() -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    # Worker processes may run BLAS with another thread count: equal up to float32 rounding.
    np.testing.assert_allclose(featurize(clips, config=config, n_jobs=2), featurize(clips, config=config), rtol=1e-5, atol=1e-6)


def test_train_model_metadata_and_errors() -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    X = featurize(clips, config=config)
    bundle = train_model(clips, feature_config=config, preset="tutorial", X=X, metrics={"uar": 0.5})
    meta = bundle.metadata
    assert bundle.labels == ("neutral", "happy", "sad", "angry")
    assert meta["preset"] == "tutorial" and meta["scaler"] is True and meta["metrics"] == {"uar": 0.5}
    assert meta["n_clips"] == 4 and meta["n_speakers"] == 4 and meta["corpora"] == ["ravdess"]
    assert meta["data_fingerprint"] == data_fingerprint(clips)
    assert meta["mlp_params"]["hidden_layer_sizes"] == [300]
    assert set(meta["versions"]) == {"python", "numpy", "scikit-learn", "librosa", "joblib"}
    assert meta["created_at"].endswith("+00:00")
    # The fitted pipeline tells its four training clips apart.
    np.testing.assert_array_equal(bundle.pipeline.predict(X), encode_labels(clips, bundle.labels))
    with pytest.raises(ValueError, match="shape"):
        train_model(clips, feature_config=config, X=X[:, :10])
    with pytest.raises(ValueError, match="two emotions"):
        train_model(clips[:1], feature_config=config, X=X[:1])
    with pytest.raises(ValueError, match="no training clip"):
        train_model(clips[:2], feature_config=config, X=X[:2], labels=("neutral", "happy", "sad"))


# ------------------------------------------------ evaluation, synthetic data
def _synthetic(n_speakers: int = 8, per_class: int = 6, n_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.tile(np.repeat(np.arange(n_classes), per_class), n_speakers)
    groups = np.repeat([f"spk{i}" for i in range(n_speakers)], n_classes * per_class)
    X = np.eye(n_classes)[y] * 3.0 + rng.normal(size=(y.size, n_classes))
    X = np.hstack([X, rng.normal(size=(y.size, 5))])
    return X, y, groups


def test_evaluation_protocols_on_synthetic_data() -> None:
    X, y, groups = _synthetic()
    labels = ["a", "b", "c"]
    report = evaluate(X, y, groups, labels=labels, preset="default", folds=4, overrides={"max_iter": 200})
    spk = report.speaker
    assert len(spk.folds) == 4
    held_out = [set(f.test_speakers) for f in spk.folds]
    assert all(len(s) == 2 for s in held_out)
    assert set().union(*held_out) == {f"spk{i}" for i in range(8)}
    assert sum(len(s) for s in held_out) == 8  # every speaker tested exactly once
    assert np.asarray(spk.confusion).sum() == y.size
    np.testing.assert_array_equal(np.asarray(spk.confusion).sum(axis=1), [48, 48, 48])
    rnd = report.random
    assert len(rnd.folds) == 1 and rnd.folds[0].n_test == 36
    np.testing.assert_array_equal(np.asarray(rnd.confusion).sum(axis=1), [12, 12, 12])  # stratified
    # Pooled numbers agree with the pooled confusion matrix.
    C = np.asarray(spk.confusion, dtype=float)
    assert spk.accuracy == pytest.approx(np.trace(C) / C.sum())
    assert spk.uar == pytest.approx(np.mean(np.diag(C) / C.sum(axis=1)))
    assert spk.uar == pytest.approx(np.mean(list(spk.per_class_recall.values())))
    assert spk.uar_mean == pytest.approx(np.mean([f.uar for f in spk.folds]))
    assert spk.uar > 0.8  # the classes are separable by construction
    json.dumps(report.to_dict())
    assert "speaker-independent 4-fold" in report.table()
    with pytest.raises(ValueError, match="folds"):
        evaluate(X, y, groups, labels=labels, folds=9)
    with pytest.raises(ValueError, match="disagree"):
        evaluate(X[:-1], y, groups, labels=labels)
    with pytest.raises(ValueError, match="indices"):
        evaluate(X, y + 1, groups, labels=labels)


def test_score_handles_absent_classes() -> None:
    s = score(np.array([0, 0, 1]), np.array([0, 1, 1]), n_labels=3)
    assert s["recall"] == [0.5, 1.0, 0.0]
    assert s["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert s["accuracy"] == pytest.approx(2 / 3)


# ----------------------------------------------------- evaluation, real data
@pytest.fixture(scope="module")
def half_corpus(ravdess_dir: Path):
    """Actors 1-12 (720 clips, 8 emotions) with the default features, extracted once."""
    clips = [c for c in load_ravdess(ravdess_dir) if int(c.speaker[-2:]) <= 12]
    X = featurize(clips, config=FeatureConfig(), n_jobs=2)
    labels = label_order(clips)
    return clips, X, encode_labels(clips, labels), np.array([c.speaker for c in clips]), labels


def test_real_evaluation_both_protocols(half_corpus, tmp_path: Path) -> None:
    clips, X, y, groups, labels = half_corpus
    report = evaluate(X, y, groups, labels=labels, folds=3, n_jobs=2, feature_config=FeatureConfig().to_dict())
    assert isinstance(report, EvaluationReport)
    assert report.n_clips == 720 and report.n_speakers == 12 and len(labels) == 8
    spk = report.speaker
    assert sorted(s for f in spk.folds for s in f.test_speakers) == sorted(set(groups))
    assert np.asarray(spk.confusion).sum() == 720 and np.asarray(report.random.confusion).sum() == 180
    # Learns far above chance (UAR 1/8) for voices it never heard ...
    assert spk.uar > 0.35
    # ... and the random split, which hears every voice in training, overstates it.
    assert report.random.uar > spk.uar
    paths = write_report(report, tmp_path / "rep")
    assert json.loads(paths["json"].read_text())["speaker"]["uar"] == pytest.approx(spk.uar)
    import matplotlib.image

    for key in ("confusion", "loss"):
        image = matplotlib.image.imread(paths[key])
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500


def test_real_training_fits_its_data(half_corpus) -> None:
    clips, X, y, groups, labels = half_corpus
    bundle = train_model(clips, X=X, feature_config=FeatureConfig(), labels=labels)
    assert bundle.metadata["class_counts"] == {e: (48 if e == "neutral" else 96) for e in labels}
    assert bundle.metadata["converged"] is True
    assert np.mean(bundle.pipeline.predict(X) == y) > 0.9


def test_real_speaker_normalisation_calibration_and_fallback(half_corpus) -> None:
    _, X, y, groups, labels = half_corpus
    X, y, groups = X[::2], y[::2], groups[::2]  # 30 clips per actor keep it quick
    small = {"hidden_layer_sizes": (32,), "max_iter": 150}
    raw = evaluate(X, y, groups, labels=labels, folds=3, overrides=small)
    spk = evaluate(X, y, groups, labels=labels, folds=3, overrides=small, normalization="speaker", calibrate=True)
    assert raw.normalization == "none" and not raw.variants and raw.calibration is None
    # Standardising each held-out voice by its own unlabelled clips helps on voices never heard.
    assert spk.speaker.accuracy_mean > raw.speaker.accuracy_mean + 0.02
    # A new speaker (fallback statistics only) is harder than one whose clips are known.
    assert spk.variants["fallback"].accuracy_mean < spk.speaker.accuracy_mean
    cal = spk.calibration
    assert cal is not None and len(cal.temperatures) == 3 and all(0.05 <= t <= 20 for t in cal.temperatures)
    assert cal.ece_after < cal.ece_before + 0.01
    assert 0.0 < cal.coverage < 1.0 and cal.confident_accuracy > cal.accuracy
    assert cal.accuracy == pytest.approx(spk.speaker.accuracy)  # temperature never changes the label
    table = spk.table()
    assert "fallback stats only" in table and "ECE (15 bins" in table
    json.dumps(spk.to_dict())
    json.dumps(spk.summary())


def test_inner_fits_hold_out_whole_speakers_for_the_temperature(half_corpus) -> None:
    from ser_engine.calibration import choose_recipe, inner_oof, scored_rows

    _, X, y, groups, _ = half_corpus
    X, y, groups = X[::2], y[::2], groups[::2]
    small = {"hidden_layer_sizes": (32,), "max_iter": 150}
    recipe = ("default", True, 0, int(y.max()) + 1)
    everything = np.arange(y.size)
    one = inner_oof(X, y, groups, everything, recipe, "speaker", 5, small, 3, inner_fits=1)
    scored = scored_rows(one)
    # One of three inner folds: a third of the speakers, each with all or none of their clips.
    assert len(set(groups[scored])) == 4 and not set(groups[scored]) & set(groups[~scored])
    np.testing.assert_allclose(one[scored].sum(axis=1), 1.0)
    # Those rows are what the full inner CV predicts for them (the same fold, the same model).
    full = inner_oof(X, y, groups, everything, recipe, "speaker", 5, small, 3)
    assert scored_rows(full).all()
    np.testing.assert_allclose(one[scored], full[scored])
    _, temperature = choose_recipe(X, y, groups, normalization="speaker", overrides=small, inner_folds=3, inner_fits=1)
    assert 0.05 <= temperature <= 20 and np.isfinite(temperature)


def test_nested_grid_chooses_inside_training_folds(half_corpus) -> None:
    _, X, y, groups, labels = half_corpus
    grid = [{"alpha": 1000.0, "max_iter": 30}, {"alpha": 1.0, "max_iter": 100}]
    report = evaluate(X[::2], y[::2], groups[::2], labels=labels, folds=3, normalization="speaker", grid=grid)
    # A huge L2 penalty cannot fit; the inner CV must see that in every fold.
    assert report.selected == [grid[1]] * 3


def test_featurize_condition_degrades_and_caches(tmp_path: Path) -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    clean = training.featurize_condition(clips, "clean", config=config)
    np.testing.assert_allclose(clean, featurize(clips, config=config), rtol=1e-5, atol=1e-5)
    noisy = training.featurize_condition(clips, "noise10", config=config, cache_dir=tmp_path)
    assert noisy.shape == clean.shape and not np.allclose(noisy, clean, rtol=1e-2)
    assert len(list(tmp_path.glob("features-*.npy"))) == 1
    np.testing.assert_array_equal(training.featurize_condition(clips, "noise10", config=config, cache_dir=tmp_path), noisy)
    with pytest.raises(ValueError, match="unknown condition"):
        training.featurize_condition(clips, "vinyl", config=config)


def test_featurize_conditions_decodes_once_and_matches_one_condition_at_a_time(tmp_path: Path) -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    both = training.featurize_conditions(clips, ["noise20", "gain-6", "noise20"], config=config, n_jobs=2,
                                         cache_dir=tmp_path)  # fmt: skip
    assert list(both) == ["noise20", "gain-6"]
    for condition, X in both.items():  # worker processes and this one may round float32 sums differently
        np.testing.assert_allclose(X, training.featurize_condition(clips, condition, config=config), rtol=1e-5, atol=1e-6)
    # Each condition has its own cache file, read back by the one-condition call.
    assert len(list(tmp_path.glob("features-*.npy"))) == 2
    (tmp_path / "unused").mkdir()
    np.testing.assert_array_equal(
        training.featurize_condition(clips, "gain-6", config=config, cache_dir=tmp_path), both["gain-6"]
    )
    with pytest.raises(ValueError, match="unknown condition"):
        training.featurize_conditions(clips, ["noise20", "vinyl"], config=config)


def test_train_model_with_augmentation_and_speaker_normalisation() -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    X = featurize(clips, config=config)
    noisy = training.featurize_condition(clips, "noise20", config=config)
    bundle = train_model(clips, feature_config=config, preset="tutorial", overrides={"max_iter": 30}, X=X,
                         normalization="speaker", augment={"noise20": noisy})  # fmt: skip
    assert bundle.metadata["augment"] == ["noise20"] and bundle.metadata["n_clips"] == 4
    assert bundle.pipeline.named_steps["scaler"].n_samples_seen_ == 8  # clean and noisy copies
    assert bundle.normalizer.n_features == 180
    with pytest.raises(ValueError, match="augment"):
        train_model(clips, feature_config=config, X=X, augment={"noise20": noisy[:2]})
