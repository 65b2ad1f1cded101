"""One recipe for ``ser train``, ``ser evaluate`` and ``/retrain``; the retrain gate on real RAVDESS data.

The gate tests retrain on 4 actors x 4 emotions (128 clips) with 4
speaker-independent folds and ``max_iter`` 200, as the bot's admin tests
do; the features (clean and the shipped recipe's three degraded copies)
are extracted once for the module into a shared cache.
"""

from __future__ import annotations

import ast
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ser_engine.bundle import DEFAULT_MODEL_PATH, load_bundle, sidecar_path
from ser_engine.cache import FeatureCache
from ser_engine.errors import ModelIntegrityError
from ser_engine.corpora import load_ravdess
from ser_engine.features import FeatureConfig
from ser_engine.predict import Predictor
from ser_engine.recipe import Recipe, RecipeModel
from ser_engine.registry import ModelRegistry
from ser_engine.retrain import RetrainJob, RetrainSpec, run_retrain

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SIDECAR = sidecar_path(DEFAULT_MODEL_PATH)
SUBSET = ["calm", "happy", "sad", "angry"]
SPEAKERS = ["01", "02", "03", "04"]


# ------------------------------------------------------------------ recipe
def test_recipe_round_trips_and_validates() -> None:
    r = Recipe(features=FeatureConfig.tutorial(), normalization="none", augment=("pitch+1", "noise20", "noise20"),
               calibrate=False, inner_folds=4, inner_fits=2, preset="tutorial",
               mlp={"hidden_layer_sizes": [16, 8], "max_iter": 7}, scaler=False, seed=None,
               grid=({"alpha": 1.0},), unsure_below=0.4)  # fmt: skip
    assert r.augment == ("noise20", "pitch+1")  # a sorted set
    assert r.mlp_params()["hidden_layer_sizes"] == (16, 8) and r.mlp_params()["max_iter"] == 7
    d = r.to_dict()
    again = Recipe.from_dict(json.loads(json.dumps(d)))
    assert again == r and hash(again) == hash(r) and again.to_dict() == d
    assert r.with_mlp(max_iter=9).mlp == {"hidden_layer_sizes": (16, 8), "max_iter": 9} and r.mlp["max_iter"] == 7
    with pytest.raises(AttributeError):
        r.seed = 3  # type: ignore[misc]  # frozen
    for bad in ({"preset": "giant"}, {"normalization": "global"}, {"augment": ("vinyl",)}, {"augment": ("clean",)},
                {"inner_folds": 1}, {"inner_fits": 5}, {"min_clips": 1}, {"unsure_below": 2.0}):  # fmt: skip
        with pytest.raises(ValueError):
            Recipe(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown keys"):
        Recipe.from_dict({**d, "dropout": 0.5})
    with pytest.raises(ValueError, match="newer"):
        Recipe.from_dict({**d, "version": 99})


def test_from_bundle_of_the_shipped_model_is_the_shipped_recipe() -> None:
    # The shipped bundle predates saved recipes: reconstructed from the fields its sidecar has.
    sidecar = json.loads(SHIPPED_SIDECAR.read_text())
    assert "recipe" not in sidecar["metadata"]
    r = Recipe.from_bundle(SHIPPED_SIDECAR)
    assert r == Recipe() and Recipe.from_bundle(DEFAULT_MODEL_PATH) == r
    assert r.features == FeatureConfig() and r.features.n_features == 2378
    assert (r.normalization, r.min_clips) == ("speaker", 5)
    assert r.augment == ("noise20", "opus24k", "pitch+1")
    assert (r.calibrate, r.inner_folds, r.inner_fits) == (True, 3, None)
    assert (r.preset, r.scaler, r.seed, r.unsure_below) == ("default", True, 0, 0.5)
    params = r.mlp_params()
    assert params["hidden_layer_sizes"] == (64,) and params["alpha"] == 3.0 and params["max_iter"] == 500
    assert params["batch_size"] == 256 and params["learning_rate_init"] == 0.001
    assert Recipe.from_bundle(load_bundle(DEFAULT_MODEL_PATH)) == r  # the loaded bundle says the same
    # An old /retrain bundle: plain scaler + MLP, no normalisation, no temperature.
    old = {**sidecar, "temperature": 1.0, "metadata": {
        "preset": "default", "scaler": True, "random_state": 0,
        "mlp_params": {**sidecar["metadata"]["mlp_params"], "max_iter": 200}}}  # fmt: skip
    plain = Recipe.from_bundle(old)
    assert plain == Recipe(normalization="none", augment=(), calibrate=False, inner_folds=5, mlp={"max_iter": 200})
    # A bundle that saved its recipe gives it back as saved.
    saved = {**sidecar, "metadata": {**sidecar["metadata"], "recipe": plain.to_dict()}}
    assert Recipe.from_bundle(saved) == plain


def _ser_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "ser_engine" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):  # module level and inside functions alike
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_import_cycle_between_training_evaluation_and_calibration() -> None:
    modules = [p.stem for p in (ROOT / "ser_engine").glob("*.py") if p.stem not in ("__init__", "__main__")]
    graph = {m: _ser_imports(m) & set(modules) for m in modules}
    assert "calibration" in graph["evaluation"] and "training" in graph["calibration"]
    assert not graph["training"] & {"evaluation", "calibration", "recipe"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    for m in ("training", "evaluation", "calibration", "recipe"):
        assert not reaches(m, m, {m}), f"ser_engine.{m} imports itself through a cycle"


# --------------------------------------------------- the gate on real data
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrain-cache")


def _registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 1
    return registry


def _spec(ravdess_dir: Path, registry: ModelRegistry, cache_dir: Path, **kw: object) -> RetrainSpec:
    args: dict[str, object] = {"emotions": SUBSET, "speakers": SPEAKERS, "folds": 4, "max_iter": 200, "margin": 0.02,
                               "n_jobs": 2, **kw}  # fmt: skip
    return RetrainSpec(corpus_dirs=[str(ravdess_dir)], registry_dir=str(registry.root), cache_dir=str(cache_dir),
                       **args)  # type: ignore[arg-type]


def test_retraining_the_shipped_recipe_is_promoted_and_ships_it(ravdess_dir: Path, cache_dir: Path,
                                                                tmp_path: Path) -> None:  # fmt: skip
    registry = _registry(tmp_path)
    # Feedback of a fifth voice (actor 05, given as feature vectors): the candidate trains on it,
    # the active recipe does not, so the two sides of the gate are really two fits.
    fb_clips = [c for c in load_ravdess(ravdess_dir, emotions=SUBSET) if c.speaker == "Actor_05"]
    assert len(fb_clips) == 32
    fb_X = FeatureCache(cache_dir).featurize([c.path for c in fb_clips], n_jobs=2)
    messages: list[dict] = []
    spec = _spec(ravdess_dir, registry, cache_dir, feedback_X=fb_X.tolist(), feedback_labels=[c.label for c in fb_clips],
                 feedback_users=[555] * len(fb_clips), requested_by="test")  # fmt: skip
    result = run_retrain(spec, messages.append)

    shipped = Recipe().with_mlp(max_iter=200)
    assert Recipe.from_dict(result["candidate_recipe"]) == shipped == Recipe.from_dict(result["reference_recipe"])
    assert result["n_clips"] == 128 and result["n_feedback"] == 32 and result["folds"] == 4
    cand, ref = result["candidate"]["macro_f1"], result["reference"]["macro_f1"]
    assert ref > 0.5, result  # the active recipe is far above chance (0.25) on voices it never heard
    assert result["promoted"] and cand >= ref - 0.02, result
    stages = [m["stage"] for m in messages]
    assert stages[0] == "features" and {"evaluating", "fitting", "saving"} <= set(stages)
    assert sum("active recipe" in m["detail"] for m in messages) == 4  # the reference was fitted in every fold

    # The registered bundle carries the recipe, its speaker normalisation and its temperature.
    version = result["version"]
    assert version == 2 and registry.active_version == 1  # run_retrain never activates
    bundle = registry.load(version)
    assert Recipe.from_bundle(bundle) == shipped
    assert Recipe.from_bundle(registry.versions_dir / f"v{version:04d}.json") == shipped  # in the sidecar too
    assert bundle.normalizer is not None and bundle.normalizer.min_clips == 5 and bundle.normalizer.n_features == 2378
    assert bundle.temperature == result["temperature"] == bundle.metadata["temperature"]
    assert bundle.temperature != 1.0 and 0.05 <= bundle.temperature <= 20
    assert bundle.metadata["augment"] == ["noise20", "opus24k", "pitch+1"] and bundle.metadata["inner_folds"] == 3
    # Trained on the clean clips, three degraded copies of each, and the feedback rows.
    assert bundle.pipeline.named_steps["scaler"].n_samples_seen_ == 4 * 128 + 32
    comparison = bundle.metadata["comparison"]
    assert comparison["promoted"] and comparison["reference_version"] == 1 and not comparison["same_recipe"]
    # Promoted, it serves: a strong angry clip of a training actor is recognised.
    registry.activate(version)
    clip = next((ravdess_dir / "Actor_01").glob("03-01-05-02-01-01-01.flac"))
    prediction = Predictor(registry.load_active()[1]).predict(clip)
    assert prediction.label == "angry" and set(prediction.probabilities) == set(SUBSET)


def test_a_weaker_recipe_is_refused_and_the_active_model_keeps_serving(ravdess_dir: Path, cache_dir: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    registry = _registry(tmp_path)
    pointer = (registry.root / "active.json").read_bytes()
    # 24 chroma statistics, no speaker normalisation, no augmentation, two hidden units.
    weak = Recipe(features=FeatureConfig(groups=("chroma",), stats=("mean", "std")), normalization="none",
                  augment=(), calibrate=False, mlp={"hidden_layer_sizes": (2,)})  # fmt: skip
    result = run_retrain(_spec(ravdess_dir, registry, cache_dir, recipe=weak))
    cand, ref = result["candidate"]["macro_f1"], result["reference"]["macro_f1"]
    assert not result["promoted"] and cand < ref - 0.02, result
    assert Recipe.from_dict(result["reference_recipe"]) == Recipe().with_mlp(max_iter=200)
    assert "below the active model's" in result["reason"]
    # Stored for the record, never activated: active.json is byte-identical and v1 serves.
    assert (registry.root / "active.json").read_bytes() == pointer
    assert registry.version_numbers() == [1, 2] and registry.active_version == 1
    assert registry.load_active()[1].metadata["data_fingerprint"] == load_bundle(DEFAULT_MODEL_PATH).metadata[
        "data_fingerprint"]  # fmt: skip
    stored = registry.load(2)
    assert Recipe.from_bundle(stored) == weak.with_mlp(max_iter=200) and stored.normalizer is None


def test_recipe_model_follows_estimator_conventions(ravdess_dir: Path, cache_dir: Path) -> None:
    clips = [c for c in load_ravdess(ravdess_dir, emotions=["sad", "angry"]) if c.speaker[-2:] in SPEAKERS]
    X = FeatureCache(cache_dir).featurize([c.path for c in clips], n_jobs=2)
    y = np.array([0 if c.label == "sad" else 1 for c in clips])
    groups = [c.speaker for c in clips]
    recipe = Recipe(augment=(), inner_folds=2, mlp={"max_iter": 100})
    model = RecipeModel(recipe)
    assert not hasattr(model, "pipeline_")
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(X)
    assert model.fit(X, y, groups) is model
    assert model.normalizer_ is not None and model.temperature_ != 1.0 and list(model.classes_) == [0, 1]
    P = model.predict_proba(X, groups)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X, groups), P.argmax(axis=1))  # the temperature keeps labels
    assert np.mean(model.predict(X, groups) == y) > 0.9  # its own training clips
    with pytest.raises(ValueError, match="augmentation"):
        RecipeModel(Recipe()).fit(X, y, groups)
    bundle = model.to_bundle(["sad", "angry"], {"note": "x"})
    assert Recipe.from_bundle(bundle) == replace(recipe, mlp={"max_iter": 100}) and bundle.metadata["note"] == "x"


# ------------------------------------------------- errors of the child process
def test_child_failures_reach_the_parent_for_the_log_not_for_users(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    # An expected failure (a SERError) comes with a message fit for users.
    job = RetrainJob(RetrainSpec(corpus_dirs=[str(tmp_path / "nowhere")], registry_dir=str(registry.root)))
    job.start()
    job.wait(timeout=120)
    assert job.error_type == "CorpusError" and job.error is not None and job.error.startswith("CorpusError: ")
    assert job.user_message is not None and "nowhere" in job.user_message and "Traceback" not in job.user_message
    # An unexpected one: type and message for the log, nothing for users (the caller shows an error id).
    spec = RetrainSpec(corpus_dirs=[str(tmp_path)], registry_dir=str(registry.root))
    spec.recipe = {"preset": "giant"}  # type: ignore[assignment]  # only the child converts it, and fails
    job = RetrainJob(spec)
    job.start()
    job.wait(timeout=120)
    assert job.error_type == "ValueError" and "unknown preset 'giant'" in (job.error or "")
    assert job.user_message is None
    assert registry.active_version == 1


def test_the_retrain_child_starts_without_secrets_and_signs_what_it_registers(
    ravdess_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/retrain``'s child: no DISCORD_TOKEN / DATABASE_URL / signing key in its environment, yet a signed version."""
    from ser_engine.bundle import sign_bundle

    key = "test-signing-key-" + "k" * 16
    registry = _registry(tmp_path)
    sign_bundle(registry._bundle_path(1), hmac_key=key)  # the adopted shipped model, signed by its operator
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token-never-in-children")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret-password@db/ser")
    monkeypatch.setenv("SER_MODEL_HMAC_KEY", key)
    job = RetrainJob(_spec(ravdess_dir, registry, cache_dir, speakers=SPEAKERS[:3], folds=3, max_iter=50))
    job.start()
    assert job.pid is not None
    # Read the environment once the child runs Python (its first progress message): before that the pid may
    # still be the launcher's /bin/sh, whose exec of `env -i python` replaces the environment.
    deadline = time.monotonic() + 120
    while not job.poll() and not job.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job.finished, job.error
    environ = Path(f"/proc/{job.pid}/environ").read_bytes()  # the child's initial environment, as the kernel keeps it
    job.wait(timeout=300)
    assert b"DISCORD_TOKEN" not in environ and b"DATABASE_URL" not in environ and b"SER_MODEL_HMAC_KEY" not in environ
    assert b"secret" not in environ and key.encode() not in environ
    assert job.error is None, job.error
    version = int(job.result["version"])  # type: ignore[index]
    assert load_bundle(registry._bundle_path(version), hmac_key=key).labels  # signed with the parent's key
    with pytest.raises(ModelIntegrityError):
        load_bundle(registry._bundle_path(version), hmac_key="another-key-" + "x" * 16)
