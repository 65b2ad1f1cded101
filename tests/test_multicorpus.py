"""Training on several corpora: recipe fields ``corpora``, ``codec`` and ``balance``, on real clips.

RAVDESS clips come from ``tests/data`` (16 kHz FLAC); Opus clips from the
emotiontts corpus in ``../shared/data`` (Ogg/Opus 32 kbit/s, four emotions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_engine import training
from ser_engine.audio import load_audio
from ser_engine.augment import apply_condition
from ser_engine.corpora import load_corpora, load_ravdess
from ser_engine.features import FeatureConfig, extract_features
from ser_engine.recipe import Recipe, RecipeModel

from .conftest import FIXTURES, RAVDESS_DIR, _require

DATA = RAVDESS_DIR.parent


@pytest.fixture(scope="module")
def emotiontts_dir() -> Path:
    folder = DATA / "emotiontts"
    _require((folder / "manifest.csv").is_file(), f"the emotiontts corpus is not in {DATA}")
    return folder


# ------------------------------------------------------------- the recipe
def test_recipe_corpora_codec_and_balance_round_trip_and_validate() -> None:
    r = Recipe(corpora=("RAVDESS", "nemo", "emotiontts", "nemo"), codec="opus32k", balance="corpus")
    assert r.corpora == ("emotiontts", "nemo", "ravdess")  # a sorted set of lower-case names
    d = json.loads(json.dumps(r.to_dict()))
    assert d["version"] == 3 and d["corpora"] == ["emotiontts", "nemo", "ravdess"] and d["codec"] == "opus32k"
    assert Recipe.from_dict(d) == r and hash(Recipe.from_dict(d)) == hash(r)
    assert "codec history opus32k" in r.describe() and "balance corpus" in r.describe()
    # A version-1 layout (no such keys) is the single-corpus recipe of before.
    old = {k: v for k, v in Recipe().to_dict().items() if k not in ("corpora", "codec", "balance")}
    assert Recipe.from_dict({**old, "version": 1}) == Recipe()
    for bad in ({"codec": "vinyl"}, {"codec": "opus32k|noise20"}, {"codec": ""}, {"balance": "speaker"},
                {"corpora": "ravdess"}, {"corpora": ("ravdess", " ")}):  # fmt: skip
        with pytest.raises(ValueError):
            Recipe(**bad)  # type: ignore[arg-type]


def test_select_keeps_the_named_corpora_and_refuses_an_absent_one(emotiontts_dir: Path) -> None:
    clips = load_corpora([FIXTURES, emotiontts_dir])
    assert Recipe().select(clips) == clips
    only = Recipe(corpora=("emotiontts",)).select(clips)
    assert only and {c.corpus for c in only} == {"emotiontts"} and len(only) == len(clips) - 4
    with pytest.raises(ValueError, match="nemo"):
        Recipe(corpora=("emotiontts", "nemo")).select(clips)


def test_balance_gives_every_corpus_the_same_total_weight() -> None:
    corpora = np.array(["nemo"] * 30 + ["emotiontts"] * 5 + ["ravdess"] * 15)
    y = np.array([0, 1] * 15 + [1] * 5 + [2] * 15)  # class 2 only in one corpus, class 1 in all three
    w = Recipe(balance="corpus").sample_weight(corpora, y)
    assert w is not None and w.shape == (50,) and np.isclose(w.mean(), 1.0)
    totals = [w[corpora == c].sum() for c in ("nemo", "emotiontts", "ravdess")]
    np.testing.assert_allclose(totals, [50 / 3] * 3)
    w = Recipe(balance="label").sample_weight(corpora, y)
    np.testing.assert_allclose([w[y == k].sum() for k in range(3)], [50 / 3] * 3)
    w = Recipe(balance="corpus+label").sample_weight(corpora, y)
    assert np.isclose(w.mean(), 1.0) and w[(corpora == "emotiontts")].min() > w[(corpora == "nemo") & (y == 1)].max()
    assert Recipe().sample_weight(corpora, y) is None
    # Rows of another source (feedback in /retrain) are not a corpus of their own when the recipe names its corpora.
    named = Recipe(balance="corpus", corpora=("nemo", "emotiontts", "ravdess"))
    w = named.sample_weight(np.concatenate([corpora, ["feedback"] * 2]), np.concatenate([y, [0, 0]]))
    assert w is not None and w.shape == (52,)
    np.testing.assert_allclose(w[-2:] / w[:50][corpora == "nemo"][0], [30 / (50 / 3)] * 2)


# ------------------------------------------------------------ codec history
def test_codec_history_is_given_to_flac_clips_only_and_cached_apart(tmp_path: Path, emotiontts_dir: Path) -> None:
    config = FeatureConfig.tutorial()
    flac = load_ravdess(FIXTURES)
    assert not any(training.has_codec_history(c.path, "opus32k") for c in flac)
    plain = training.featurize_conditions(flac, ["clean", "noise20"], config=config, cache_dir=tmp_path)
    coded = training.featurize_conditions(flac, ["clean", "noise20"], config=config, cache_dir=tmp_path, codec="opus32k")
    assert len(list(tmp_path.glob("features-*.npy"))) == 4  # the codec is part of the key
    for i, clip in enumerate(flac):
        y = apply_condition(load_audio(clip.path), "opus32k", seed=i)
        np.testing.assert_allclose(coded["clean"][i], extract_features(y=y, config=config), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(coded["noise20"][i],
                                   extract_features(y=apply_condition(y, "noise20", seed=i), config=config),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    # The round trip changes what the features see (Opus removes what it cannot hear).
    assert not np.allclose(coded["clean"], plain["clean"], rtol=1e-3, atol=1e-3)
    # Clips that went through Opus already are used as decoded, and share the cache with a codec-less call.
    ogg = load_corpora([emotiontts_dir])[:3]
    assert all(training.has_codec_history(c.path, "opus32k") for c in ogg)
    before = len(list(tmp_path.glob("features-*.npy")))
    a = training.featurize_conditions(ogg, ["clean"], config=config, cache_dir=tmp_path, codec="opus32k")["clean"]
    assert len(list(tmp_path.glob("features-*.npy"))) == before + 1
    b = training.featurize_conditions(ogg, ["clean"], config=config, cache_dir=tmp_path)["clean"]
    assert len(list(tmp_path.glob("features-*.npy"))) == before + 1
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown condition"):
        training.featurize_conditions(flac, ["clean"], config=config, codec="vinyl")


# ------------------------------------------------------ several corpora
def test_recipe_model_trains_on_the_union_of_two_corpora(ravdess_dir: Path, emotiontts_dir: Path) -> None:
    """RAVDESS has calm, emotiontts has not: calm is learnt from RAVDESS' clips alone, nothing is guessed."""
    emotions = ["neutral", "calm", "happy", "sad", "angry"]
    rav = [c for c in load_ravdess(ravdess_dir, emotions=emotions) if c.speaker in ("Actor_01", "Actor_02",
                                                                                         "Actor_03", "Actor_04")]
    tts = load_corpora([emotiontts_dir])
    clips = rav + tts
    labels = training.label_order(clips)
    assert labels == ("neutral", "calm", "happy", "sad", "angry")
    recipe = Recipe(features=FeatureConfig.tutorial(), augment=(), calibrate=False, mlp={"max_iter": 300},
                    corpora=("ravdess", "emotiontts"), codec="opus32k", balance="corpus")  # fmt: skip
    X = training.featurize_conditions(recipe.select(clips), ["clean"], config=recipe.features, n_jobs=2,
                                      codec=recipe.codec)["clean"]  # fmt: skip
    y = training.encode_labels(clips, labels)
    groups = np.array([c.speaker for c in clips])
    corpora = np.array([c.corpus for c in clips])
    with pytest.raises(ValueError, match="corpus of each"):
        RecipeModel(recipe).fit(X, y, groups)
    model = RecipeModel(recipe).fit(X, y, groups, corpora=corpora)
    assert model.classes_.tolist() == [0, 1, 2, 3, 4]
    # It learnt both corpora: well above chance (0.2) on its own training clips of each one.
    for name in ("ravdess", "emotiontts"):
        rows = corpora == name
        assert np.mean(model.predict(X[rows], groups[rows]) == y[rows]) > 0.6
    # emotiontts never says calm: its clips are rarely called calm.
    tts_rows = corpora == "emotiontts"
    assert np.mean(model.predict(X[tts_rows], groups[tts_rows]) == 1) < 0.1
    bundle = model.to_bundle(labels)
    assert Recipe.from_bundle(bundle) == recipe and bundle.labels == labels


def test_a_temperature_from_left_out_corpora_is_more_honest_on_an_unseen_corpus(ravdess_dir: Path,
                                                                                emotiontts_dir: Path) -> None:
    """Trained on RAVDESS (4 actors) and emotiontts, scored on EMOVO as new speakers, over the four shared emotions."""
    from ser_engine.calibration import expected_calibration_error

    emovo_dir = DATA / "emovo"
    _require((emovo_dir / "manifest.csv").is_file(), f"the EMOVO corpus is not in {DATA}")
    four = ["neutral", "happy", "sad", "angry"]
    rav = [c for c in load_ravdess(ravdess_dir, emotions=four) if c.speaker in ("Actor_01", "Actor_02", "Actor_03",
                                                                                   "Actor_04", "Actor_05", "Actor_06")]
    clips = rav + load_corpora([emotiontts_dir])
    labels = training.label_order(clips)
    base = Recipe(features=FeatureConfig.tutorial(), augment=(), mlp={"max_iter": 300}, codec="opus32k")
    X = training.featurize_conditions(clips, ["clean"], config=base.features, n_jobs=2, codec=base.codec)["clean"]
    y = training.encode_labels(clips, labels)
    groups = np.array([c.speaker for c in clips])
    corpora = np.array([c.corpus for c in clips])
    unseen = [c for c in load_corpora([emovo_dir], emotions=four)]
    Xu = training.featurize_conditions(unseen, ["clean"], config=base.features, n_jobs=2)["clean"]
    yu = training.encode_labels(unseen, labels)
    with pytest.raises(ValueError, match="corpus of each"):
        RecipeModel(replace_recipe(base, calibrate_on="corpora")).fit(X, y, groups)
    with pytest.raises(ValueError, match="two corpora"):
        RecipeModel(replace_recipe(base, calibrate_on="corpora")).fit(X[corpora == "ravdess"], y[corpora == "ravdess"],
                                                                      groups[corpora == "ravdess"],
                                                                      corpora=corpora[corpora == "ravdess"])
    eces = {}
    for on in ("speakers", "corpora"):
        model = RecipeModel(replace_recipe(base, calibrate_on=on)).fit(X, y, groups, corpora=corpora)
        eces[on] = (model.temperature_, expected_calibration_error(model.predict_proba(Xu), yu))
    (t_speakers, ece_speakers), (t_corpora, ece_corpora) = eces["speakers"], eces["corpora"]
    # Away from home the model is over-confident: the left-out corpora ask for a larger temperature ...
    assert t_corpora > t_speakers > 0.5
    # ... and its confidence on a corpus neither temperature saw is closer to its accuracy.
    assert ece_corpora < ece_speakers


def replace_recipe(recipe: Recipe, **changes: object) -> Recipe:
    from dataclasses import replace

    return replace(recipe, **changes)  # type: ignore[arg-type]


def test_retrain_refuses_a_recipe_whose_corpora_are_not_configured(ravdess_dir: Path, tmp_path: Path) -> None:
    """A /retrain of a multi-corpus recipe with only RAVDESS configured: a clear CorpusError, nothing registered."""
    from ser_engine.bundle import DEFAULT_MODEL_PATH
    from ser_engine.errors import CorpusError
    from ser_engine.registry import ModelRegistry
    from ser_engine.retrain import RetrainSpec, run_retrain

    registry = ModelRegistry(tmp_path / "registry")
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 1
    spec = RetrainSpec(corpus_dirs=[str(ravdess_dir)], registry_dir=str(registry.root), cache_dir=str(tmp_path / "c"),
                       emotions=["happy", "sad"], speakers=["01", "02"], folds=2, max_iter=20,
                       recipe=Recipe(corpora=("ravdess", "nemo"), augment=()))  # fmt: skip
    with pytest.raises(CorpusError, match="nemo") as caught:
        run_retrain(spec)
    assert "ravdess" in str(caught.value)
    assert registry.version_numbers() == [1] and registry.active_version == 1


def test_retrain_gives_the_clips_the_recipes_codec_history(ravdess_dir: Path, tmp_path: Path) -> None:
    """/retrain of a recipe with ``codec``: the registered model was fitted on the Opus-coded clips."""
    from ser_engine.bundle import DEFAULT_MODEL_PATH
    from ser_engine.registry import ModelRegistry
    from ser_engine.retrain import RetrainSpec, run_retrain

    registry = ModelRegistry(tmp_path / "registry")
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 1
    emotions, speakers = ["calm", "happy", "sad", "angry"], ["01", "02", "03", "04"]
    recipe = Recipe(augment=(), codec="opus32k", calibrate=False, mlp={"max_iter": 50})
    spec = RetrainSpec(corpus_dirs=[str(ravdess_dir)], registry_dir=str(registry.root), cache_dir=str(tmp_path / "c"),
                       emotions=emotions, speakers=speakers, folds=2, max_iter=50, n_jobs=2,
                       recipe=recipe)  # fmt: skip
    result = run_retrain(spec)
    assert result["n_clips"] == 128 and Recipe.from_dict(result["candidate_recipe"]).codec == "opus32k"
    bundle = registry.load(result["version"])
    assert Recipe.from_bundle(bundle).codec == "opus32k"
    clips = [c for c in load_ravdess(ravdess_dir, emotions=emotions) if c.speaker[-2:] in speakers]
    matrices = {codec: training.featurize_conditions(clips, ["clean"], n_jobs=2, codec=codec)["clean"]
                for codec in (None, "opus32k")}  # fmt: skip
    assert bundle.normalizer is not None
    # The fallback statistics are the training clips' mean: that of the coded clips, not of the FLAC ones.
    np.testing.assert_allclose(bundle.normalizer.fallback_mean, matrices["opus32k"].mean(axis=0), rtol=1e-4, atol=1e-4)
    assert not np.allclose(bundle.normalizer.fallback_mean, matrices[None].mean(axis=0), rtol=1e-3, atol=1e-3)
