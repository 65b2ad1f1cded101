"""Per-speaker normalisation: Welford statistics, fallback, shrinkage, bundles and the Predictor."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import joblib
import numpy as np
import pytest

from ser_engine.bundle import ModelBundle, load_bundle, save_bundle, sidecar_path
from ser_engine.corpora import load_ravdess
from ser_engine.features import FeatureConfig
from ser_engine.normalization import SpeakerNormalizer, SpeakerStats
from ser_engine.predict import Predictor
from ser_engine.training import featurize, train_model

FIXTURES = Path(__file__).resolve().parent / "data"


def _speakers(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three speakers whose features differ in offset and scale."""
    X = np.vstack([rng.normal(loc, scale, size=(40, 6)) for loc, scale in ((0, 1), (5, 2), (-3, 0.5))])
    return X, np.repeat(["a", "b", "c"], 40)


def test_welford_updates_match_numpy() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(3.0, 2.0, size=(50, 4))
    stats = SpeakerStats.empty(4)
    for row in X[:20]:
        stats = stats.update(row)  # one at a time (Welford)
    stats = stats.update(X[20:])  # then a batch (Chan et al.)
    assert stats.n == 50
    np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.variance, X.var(axis=0), rtol=1e-10)
    assert np.isnan(SpeakerStats.empty(4).variance).all()
    with pytest.raises(ValueError):
        stats.update(np.zeros(3))


def test_transform_groups_standardises_each_speaker() -> None:
    X, g = _speakers(np.random.default_rng(2))
    nz = SpeakerNormalizer(prior_weight=0.0).fit(X, g)
    Z = nz.transform_groups(X, g)
    for s in "abc":
        np.testing.assert_allclose(Z[g == s].mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(Z[g == s].std(axis=0), 1.0, atol=1e-9)
    # Fallback: overall mean, pooled within-speaker std (not the std of the pooled data).
    np.testing.assert_allclose(nz.fallback_mean, X.mean(axis=0))
    pooled = np.sqrt(np.mean([X[g == s].var(axis=0) for s in "abc"], axis=0))
    np.testing.assert_allclose(nz.fallback_std, pooled)
    assert (nz.fallback_std < X.std(axis=0)).all()


def test_fallback_below_min_clips_and_shrinkage() -> None:
    X, g = _speakers(np.random.default_rng(3))
    nz = SpeakerNormalizer(min_clips=5, prior_weight=5.0).fit(X, g)
    b = X[g == "b"]
    few = SpeakerStats.of(b[:4])
    np.testing.assert_allclose(nz.transform(b, few), nz.transform(b))  # 4 < 5 clips: fallback
    assert not nz.uses_speaker_stats(few) and not nz.uses_speaker_stats(None)
    enough = SpeakerStats.of(b[:10])
    assert nz.uses_speaker_stats(enough)
    Z = nz.transform(b, enough)
    # Halfway (10 own clips vs 5 prior ones) between fallback and the speaker's raw statistics.
    mean = (10 * enough.mean + 5 * nz.fallback_mean) / 15
    var = (10 * enough.variance + 5 * nz.fallback_std**2) / 15
    np.testing.assert_allclose(Z, (b - mean) / np.sqrt(var))
    # Speaker b sits at +5: its own statistics centre it, the fallback does not.
    assert abs(Z.mean()) < 1.0 < nz.transform(b).mean()


def test_std_floor_and_duck_typed_stats() -> None:
    X, g = _speakers(np.random.default_rng(4))
    nz = SpeakerNormalizer(min_clips=2, prior_weight=0.0, std_floor=0.1).fit(X, g)

    class BotStats:  # the bot's RunningStats has the same three fields
        def __init__(self, s: SpeakerStats) -> None:
            self.n, self.mean, self.m2 = s.n, s.mean, s.m2

    same = np.tile(X[:1], (6, 1))  # six identical clips: zero variance
    Z = nz.transform(X[:3], BotStats(SpeakerStats.of(same)))
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z, (X[:3] - X[0]) / (0.1 * nz.fallback_std), atol=1e-9)
    with pytest.raises(ValueError):
        nz.transform(X[:1], SpeakerStats.of(np.zeros((6, 5))))
    with pytest.raises(ValueError):
        SpeakerNormalizer(min_clips=1)
    with pytest.raises(ValueError):
        SpeakerNormalizer().transform(X)  # not fitted
    again = SpeakerNormalizer.from_dict(json.loads(json.dumps(nz.to_dict())))
    np.testing.assert_allclose(again.transform(X), nz.transform(X))


@pytest.fixture(scope="module")
def speaker_bundle() -> tuple[ModelBundle, np.ndarray, list]:
    """A real model on the four fixture clips, speaker-normalised, with a temperature."""
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    X = featurize(clips, config=config)
    bundle = train_model(clips, feature_config=config, preset="tutorial", overrides={"max_iter": 50}, X=X,
                         normalization="speaker", min_clips=2, temperature=2.0, unsure_below=0.6)  # fmt: skip
    return bundle, X, clips


def test_bundle_records_normalisation(speaker_bundle, tmp_path: Path) -> None:
    bundle = speaker_bundle[0]
    assert bundle.normalizer is not None and bundle.metadata["normalization"] == "speaker"
    path = save_bundle(bundle, tmp_path / "spk.joblib")
    side = json.loads(sidecar_path(path).read_text())
    assert side["format"] == 2 and side["temperature"] == 2.0
    assert side["normalization"]["kind"] == "speaker" and side["normalization"]["min_clips"] == 2
    loaded = load_bundle(path)
    assert loaded.temperature == 2.0 and loaded.metadata["unsure_below"] == 0.6
    np.testing.assert_array_equal(loaded.normalizer.fallback_std, bundle.normalizer.fallback_std)


def test_predictor_uses_speaker_stats_and_temperature(speaker_bundle) -> None:
    bundle, X, clips = speaker_bundle
    predictor = Predictor(bundle)
    clip = clips[0].path
    plain = predictor.predict(clip)
    assert plain.normalization == "fallback" and plain.features is not None
    np.testing.assert_allclose(plain.features, X[0], rtol=1e-5, atol=1e-5)
    assert plain.unsure == (plain.confidence < 0.6)
    assert plain.top_two[0] == plain.label and len(plain.top_two) == 2
    assert plain.probabilities[plain.top_two[1]] == sorted(plain.probabilities.values())[-2]

    few = SpeakerStats.of(X[:1])
    assert predictor.predict(clip, speaker_stats=few).probabilities == plain.probabilities
    stats = SpeakerStats.of(X)
    own = predictor.predict(clip, speaker_stats=stats)
    assert own.normalization == "speaker" and own.probabilities != plain.probabilities
    # The temperature only softens: same ranking, lower confidence than T = 1.
    sharp = Predictor(ModelBundle(bundle.pipeline, bundle.labels, bundle.feature_config, {}, bundle.normalizer))
    raw = sharp.predict(clip, speaker_stats=stats)
    assert raw.label == own.label and raw.confidence > own.confidence
    assert sharp.unsure_below == 0.0 and not raw.unsure
    assert Predictor(bundle, unsure_below=1.0).predict(clip).unsure


def test_format_1_bundle_still_loads(tmp_path: Path) -> None:
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    X = featurize(clips, config=config)
    bundle = train_model(clips, feature_config=config, preset="tutorial", overrides={"max_iter": 30}, X=X)
    payload = {"format": 1, "pipeline": bundle.pipeline, "labels": list(bundle.labels),
               "feature_config": config.to_dict(), "metadata": {}}  # fmt: skip
    buffer = io.BytesIO()
    joblib.dump(payload, buffer)
    path = tmp_path / "old.joblib"
    path.write_bytes(buffer.getvalue())
    save_bundle(bundle, tmp_path / "new.joblib")
    side = json.loads((tmp_path / "new.json").read_text())
    side.update(format=1, sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), metadata={})
    del side["normalization"], side["temperature"]
    sidecar_path(path).write_text(json.dumps(side))
    old = load_bundle(path)
    assert old.normalizer is None and old.temperature == 1.0
    p = Predictor(old).predict(clips[0].path)
    assert p.normalization == "none" and not p.unsure
    np.testing.assert_allclose(list(p.probabilities.values()), bundle.pipeline.predict_proba(X[:1])[0], rtol=1e-5)
