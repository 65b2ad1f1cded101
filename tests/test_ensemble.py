"""A recipe with members: a pool of per-corpus experts (ser_engine.ensemble), on real clips.

RAVDESS clips (16 kHz FLAC, ``../shared/data/ravdess-16k``) and the emotiontts
corpus (Ogg/Opus, four emotions, no calm) from ``../shared/data``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ser_engine import training
from ser_engine.bundle import load_bundle
from ser_engine.cli import main as ser_main
from ser_engine.corpora import load_corpora, load_ravdess
from ser_engine.ensemble import LogOpinionPool
from ser_engine.features import FeatureConfig
from ser_engine.recipe import Recipe, RecipeModel

from .conftest import RAVDESS_DIR, _require

DATA = RAVDESS_DIR.parent
FOUR_ACTORS = ("Actor_01", "Actor_02", "Actor_03", "Actor_04")
EMOTIONS = ["neutral", "calm", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def emotiontts_dir() -> Path:
    folder = DATA / "emotiontts"
    _require((folder / "manifest.csv").is_file(), f"the emotiontts corpus is not in {DATA}")
    return folder


def pool_recipe(**outer: object) -> Recipe:
    tutorial = FeatureConfig.tutorial()
    home = Recipe(features=tutorial, corpora=("ravdess",), augment=("noise20",), calibrate=False, mlp={"max_iter": 200})
    every = Recipe(features=tutorial, corpora=("ravdess", "emotiontts"), augment=(), balance="corpus+label",
                   calibrate=False, mlp={"max_iter": 200})  # fmt: skip
    return Recipe(features=tutorial, members=(home, every), **outer)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def two_corpora(ravdess_dir: Path, emotiontts_dir: Path) -> dict[str, object]:
    rav = [c for c in load_ravdess(ravdess_dir, emotions=EMOTIONS) if c.speaker in FOUR_ACTORS]
    clips = rav + load_corpora([emotiontts_dir])
    labels = training.label_order(clips)
    config = FeatureConfig.tutorial()
    m = training.featurize_conditions(rav, ["clean", "noise20"], config=config, n_jobs=2)
    tts = training.featurize_conditions(clips[len(rav):], ["clean"], config=config, n_jobs=2)
    return {
        "clips": clips, "labels": labels, "X": np.vstack([m["clean"], tts["clean"]]),
        # emotiontts has no noisy copies: its rows are NaN (the RAVDESS-only member trains on them alone).
        "noise20": np.vstack([m["noise20"], np.full_like(tts["clean"], np.nan)]),
        "y": training.encode_labels(clips, labels), "groups": np.array([c.speaker for c in clips]),
        "corpora": np.array([c.corpus for c in clips]),
    }  # fmt: skip


def test_a_pool_recipe_takes_the_union_of_its_members_and_round_trips() -> None:
    r = pool_recipe(calibrate_on="corpora")
    assert r.augment == ("noise20",) and r.corpora == ("emotiontts", "ravdess")
    assert r.augment_for("ravdess") == ("noise20",) and r.augment_for("EmotionTTS") == ()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["version"] == 3 and len(d["members"]) == 2 and d["members"][0]["corpora"] == ["ravdess"]
    assert Recipe.from_dict(d) == r and hash(Recipe.from_dict(d)) == hash(r)
    assert r.describe().startswith("pool of 2 members [corpora ravdess")
    member = r.members[0]
    for bad in ({"members": (r,)},  # a member with members
                {"members": (Recipe(),)},  # other features than the recipe's
                {"members": (member,), "calibrate_on": "speakers"}):  # fmt: skip
        with pytest.raises(ValueError):
            Recipe(features=FeatureConfig.tutorial(), **bad)  # type: ignore[arg-type]


def test_the_pool_is_the_geometric_mean_of_its_members(two_corpora: dict) -> None:
    t = two_corpora
    model = RecipeModel(pool_recipe(calibrate=False)).fit(t["X"], t["y"], t["groups"], augment={"noise20": t["noise20"]},
                                                          corpora=t["corpora"])  # fmt: skip
    pool = model.pipeline_.named_steps["pool"]
    assert isinstance(pool, LogOpinionPool) and len(pool.estimators) == 2
    assert model.classes_.tolist() == [0, 1, 2, 3, 4]
    Z = model.normalizer_.transform(t["X"])
    P = pool.predict_proba(Z)
    members = [np.clip(e.predict_proba(Z), 1e-9, 1.0) for e in pool.estimators]  # the pool's floor
    expected = np.sqrt(members[0] * members[1])
    np.testing.assert_allclose(P, expected / expected.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-9)
    # Each member learnt what it was given: the RAVDESS-only expert knows the RAVDESS actors well.
    rav = t["corpora"] == "ravdess"
    own = model.normalizer_.transform_groups(t["X"][rav], t["groups"][rav])
    assert np.mean(pool.estimators[0].predict(own) == t["y"][rav]) > 0.6
    assert np.mean(model.predict(t["X"][rav], t["groups"][rav]) == t["y"][rav]) > 0.9
    tts = ~rav
    own = model.normalizer_.transform_groups(t["X"][tts], t["groups"][tts])
    assert np.mean(pool.estimators[1].predict(own) == t["y"][tts]) > 0.6
    # A member without training clips drops out (a leave-one-corpus-out fold without RAVDESS).
    alone = RecipeModel(pool_recipe(calibrate=False)).fit(t["X"][tts], t["y"][tts], t["groups"][tts],
                                                          augment={"noise20": t["noise20"][tts]},
                                                          corpora=t["corpora"][tts])  # fmt: skip
    assert len(alone.pipeline_.named_steps["pool"].estimators) == 1
    with pytest.raises(ValueError, match="corpus of each"):
        RecipeModel(pool_recipe(calibrate=False)).fit(t["X"], t["y"], t["groups"], augment={"noise20": t["noise20"]})


def test_a_class_one_member_lacks_is_scored_by_the_others(two_corpora: dict) -> None:
    """emotiontts has no calm: a member trained on it alone neither votes for calm nor against it."""
    t = two_corpora
    tutorial = FeatureConfig.tutorial()
    recipe = Recipe(features=tutorial, calibrate=False, members=(
        Recipe(features=tutorial, corpora=("ravdess",), augment=(), calibrate=False, mlp={"max_iter": 200}),
        Recipe(features=tutorial, corpora=("emotiontts",), augment=(), calibrate=False, mlp={"max_iter": 200})))
    model = RecipeModel(recipe).fit(t["X"], t["y"], t["groups"], corpora=t["corpora"])
    pool = model.pipeline_.named_steps["pool"]
    home, tts = pool.estimators
    calm = t["labels"].index("calm")
    assert calm in home.classes_ and calm not in tts.classes_
    Z = model.normalizer_.transform(t["X"])
    P = pool.predict_proba(Z)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    # Before renormalising, calm's score is the home expert's own probability.
    ph, pt = np.clip(home.predict_proba(Z), 1e-9, 1.0), np.clip(tts.predict_proba(Z), 1e-9, 1.0)  # the pool's floor
    shared = [list(home.classes_).index(k) for k in tts.classes_]
    raw = np.zeros_like(P)
    raw[:, list(home.classes_).index(calm)] = ph[:, list(home.classes_).index(calm)]
    for j, k in enumerate(tts.classes_):
        raw[:, list(pool.classes_).index(k)] = np.sqrt(ph[:, shared[j]] * pt[:, j])
    np.testing.assert_allclose(P, raw / raw.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-9)
    rav = t["corpora"] == "ravdess"  # each actor normalised with all their clips, then the calm ones
    called = model.predict(t["X"][rav], t["groups"][rav])[t["y"][rav] == calm]
    assert np.mean(called == calm) > 0.5


def test_ser_train_fits_a_pool_recipe_and_the_bundle_predicts(tmp_path: Path, ravdess_dir: Path,
                                                              emotiontts_dir: Path, capsys) -> None:  # fmt: skip
    recipe_file = tmp_path / "pool.json"
    recipe_file.write_text(json.dumps(pool_recipe(calibrate_on="corpora").to_dict()))
    out = tmp_path / "pool.joblib"
    args = ["train", "--recipe", str(recipe_file), "--corpus", str(ravdess_dir), "--corpus", str(emotiontts_dir),
            "--emotions", ",".join(EMOTIONS), "--max-clips-per-corpus", "60", "--jobs", "2", "--quiet"]  # fmt: skip
    # The speaker protocol cannot weigh corpora: a short answer, nothing written.
    assert ser_main(args + ["--out", str(out)]) == 1
    assert "--no-eval" in capsys.readouterr().err and not out.exists()
    assert ser_main(args + ["--out", str(out), "--no-eval"]) == 0
    printed = capsys.readouterr().out
    assert "120 clips of emotiontts, ravdess" in printed
    bundle = load_bundle(out)
    assert Recipe.from_bundle(bundle) == pool_recipe(calibrate_on="corpora")
    assert bundle.temperature > 0 and bundle.metadata["licence"].startswith("CC BY-NC-SA 4.0")
    assert isinstance(bundle.pipeline.named_steps["pool"], LogOpinionPool)
    angry = sorted(p for p in (ravdess_dir / "Actor_05").glob("03-01-05-02-*.flac"))[0]
    assert ser_main(["predict", str(angry), "--model", str(out), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["label"] in EMOTIONS and abs(sum(answer["probabilities"].values()) - 1.0) < 1e-6
