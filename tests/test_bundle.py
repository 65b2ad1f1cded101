"""Model bundles: round trip, integrity before unpickling, version checks, atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import pytest

from ser_engine.bundle import ModelBundle, load_bundle, save_bundle, sidecar_path
from ser_engine.corpora import load_ravdess
from ser_engine.errors import ModelCompatibilityError, ModelIntegrityError, ModelNotFoundError
from ser_engine.features import FeatureConfig
from ser_engine.training import featurize, train_model

FIXTURES = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def small_bundle() -> tuple[ModelBundle, np.ndarray]:
    """A real model: the four fixture clips (four emotions), tutorial features, 50 epochs."""
    clips = load_ravdess(FIXTURES)
    config = FeatureConfig.tutorial()
    X = featurize(clips, config=config)
    bundle = train_model(clips, feature_config=config, preset="tutorial", overrides={"max_iter": 50}, X=X)
    return bundle, X


@pytest.fixture()
def saved(small_bundle, tmp_path: Path) -> Path:
    return save_bundle(small_bundle[0], tmp_path / "m" / "model.joblib")


def _sidecar(path: Path) -> dict:
    return json.loads(sidecar_path(path).read_text())


def test_round_trip(small_bundle, saved: Path) -> None:
    bundle, X = small_bundle
    assert saved.is_file() and sidecar_path(saved).is_file()
    side = _sidecar(saved)
    assert side["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert side["size_bytes"] == saved.stat().st_size
    assert side["labels"] == ["neutral", "happy", "sad", "angry"]
    assert side["feature_config"] == FeatureConfig.tutorial().to_dict()
    assert set(side["versions"]) == {"python", "numpy", "scikit-learn", "librosa", "joblib"}
    meta = side["metadata"]
    assert meta["n_clips"] == 4 and meta["class_counts"] == {"neutral": 1, "happy": 1, "sad": 1, "angry": 1}
    assert len(meta["data_fingerprint"]) == 64
    created = datetime.fromisoformat(meta["created_at"])
    assert created.tzinfo is not None and created.utcoffset() == timezone.utc.utcoffset(None)

    loaded = load_bundle(saved)
    assert loaded.labels == bundle.labels
    assert loaded.feature_config == bundle.feature_config
    assert loaded.metadata == meta
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), bundle.pipeline.predict_proba(X))
    # Bundles are small: the optimiser state is not kept.
    assert not hasattr(loaded.pipeline.named_steps["mlp"], "_optimizer")
    assert oct(saved.stat().st_mode & 0o777) == oct(0o644)


class _Tripwire:
    """Unpickling this touches a file: proof that bytes were unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_altered_bundle_is_refused_before_unpickling(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    joblib.dump({"format": 1, "pipeline": _Tripwire(marker)}, buffer)
    saved.write_bytes(buffer.getvalue())  # the sidecar keeps the old hash
    with pytest.raises(ModelIntegrityError, match="altered or damaged"):
        load_bundle(saved)
    assert not marker.exists()
    # Sanity check of the tripwire itself: unpickled, it does fire.
    joblib.load(io.BytesIO(buffer.getvalue()))
    assert marker.exists()


def test_flipped_byte_and_truncation_are_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        load_bundle(saved)
    saved.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelIntegrityError):
        load_bundle(saved)


def test_pinned_hash(saved: Path) -> None:
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert load_bundle(saved, expected_sha256=digest.upper()).labels
    with pytest.raises(ModelIntegrityError, match="pinned"):
        load_bundle(saved, expected_sha256="0" * 64)


def test_missing_files(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        load_bundle(tmp_path / "nothing.joblib")
    assert str(tmp_path) not in info.value.user_message  # no server paths in user messages
    with pytest.raises(ModelNotFoundError):
        load_bundle(tmp_path)  # a folder
    sidecar_path(saved).unlink()
    with pytest.raises(ModelIntegrityError, match="cannot be verified"):
        load_bundle(saved)


def test_sidecar_edits(saved: Path) -> None:
    original = _sidecar(saved)

    def write(side: dict) -> None:
        sidecar_path(saved).write_text(json.dumps(side))

    side = json.loads(json.dumps(original))
    side["versions"]["scikit-learn"] = "0.24.2"
    write(side)
    with pytest.raises(ModelCompatibilityError, match="scikit-learn 0.24.2"):
        load_bundle(saved)

    side = json.loads(json.dumps(original))
    side["feature_config"]["version"] = 99
    write(side)
    with pytest.raises(ModelCompatibilityError, match="feature version 99"):
        load_bundle(saved)

    side = json.loads(json.dumps(original))
    side["format"] = 7
    write(side)
    with pytest.raises(ModelCompatibilityError, match="bundle format"):
        load_bundle(saved)

    side = json.loads(json.dumps(original))
    side["labels"] = list(reversed(side["labels"]))  # hash still matches, description lies
    write(side)
    with pytest.raises(ModelIntegrityError, match="does not match its description"):
        load_bundle(saved)

    sidecar_path(saved).write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="unreadable"):
        load_bundle(saved)

    write(original)
    assert load_bundle(saved).labels == tuple(original["labels"])


def test_failed_save_keeps_the_previous_bundle(small_bundle, saved: Path, monkeypatch) -> None:
    bundle, _ = small_bundle
    before = saved.read_bytes(), sidecar_path(saved).read_bytes()
    bad = ModelBundle(bundle.pipeline, bundle.labels, bundle.feature_config, {"oops": object()})
    with pytest.raises(TypeError):
        save_bundle(bad, saved)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_bundle(bundle, saved)
    monkeypatch.undo()
    assert (saved.read_bytes(), sidecar_path(saved).read_bytes()) == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.joblib", "model.json"]  # no temp files left
    assert load_bundle(saved).labels == bundle.labels


def test_bundle_validation(small_bundle, tmp_path: Path) -> None:
    bundle, _ = small_bundle
    with pytest.raises(ValueError, match=".joblib"):
        save_bundle(bundle, tmp_path / "model.pkl")
    with pytest.raises(ValueError, match="classes"):
        ModelBundle(bundle.pipeline, ("a", "b"), bundle.feature_config)
    with pytest.raises(ValueError, match="distinct"):
        ModelBundle(bundle.pipeline, ("a", "a", "b", "c"), bundle.feature_config)
