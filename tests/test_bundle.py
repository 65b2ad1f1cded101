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

from ser_engine.bundle import HMAC_KEY_ENV, ModelBundle, load_bundle, save_bundle, sidecar_path, sign_bundle
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


# ------------------------------------------------------------------ signing
KEY = "correct horse battery staple"


def _swap_joblib(path: Path, data: bytes) -> None:
    """What someone without the key can do: replace the joblib and write its new SHA-256 and size into the sidecar."""
    path.write_bytes(data)
    side = _sidecar(path)
    side["sha256"] = hashlib.sha256(data).hexdigest()
    side["size_bytes"] = len(data)
    sidecar_path(path).write_text(json.dumps(side, indent=2))


def test_signed_round_trip_and_wrong_key(small_bundle, tmp_path: Path, monkeypatch) -> None:
    bundle, X = small_bundle
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)
    path = save_bundle(bundle, tmp_path / "signed.joblib", hmac_key=KEY)
    side = _sidecar(path)
    assert len(side["hmac_sha256"]) == 64 and int(side["hmac_sha256"], 16) >= 0
    for f in (path, sidecar_path(path)):  # the key is written nowhere
        assert KEY.encode() not in f.read_bytes()
    loaded = load_bundle(path, hmac_key=KEY)
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), bundle.pipeline.predict_proba(X))
    assert loaded.sha256 == side["sha256"] and loaded.model_version == f"signed@sha256:{side['sha256']}"
    # Only the content counts, not the layout: a re-indented sidecar still verifies.
    sidecar_path(path).write_text(json.dumps(dict(reversed(list(side.items())))))
    assert load_bundle(path, hmac_key=KEY).labels == bundle.labels
    with pytest.raises(ModelIntegrityError, match="signature does not match") as info:
        load_bundle(path, hmac_key="wrong-key-1234")
    assert KEY not in str(info.value) and "wrong-key-1234" not in str(info.value)
    # The key from the environment, for saving and loading.
    monkeypatch.setenv(HMAC_KEY_ENV, KEY)
    env_signed = save_bundle(bundle, tmp_path / "env.joblib")
    assert _sidecar(env_signed)["hmac_sha256"] and load_bundle(env_signed).labels == bundle.labels
    monkeypatch.setenv(HMAC_KEY_ENV, "wrong-key-1234")
    with pytest.raises(ModelIntegrityError, match="signature"):
        load_bundle(env_signed)
    # Any edit of a signed value breaks the signature.
    monkeypatch.setenv(HMAC_KEY_ENV, KEY)
    side = _sidecar(env_signed)
    side["metadata"]["n_clips"] += 1
    sidecar_path(env_signed).write_text(json.dumps(side))
    with pytest.raises(ModelIntegrityError, match="signature"):
        load_bundle(env_signed)


def test_swapped_joblib_with_a_rewritten_hash_needs_the_key(small_bundle, tmp_path: Path, monkeypatch) -> None:
    bundle, X = small_bundle
    monkeypatch.setenv(HMAC_KEY_ENV, KEY)
    path = save_bundle(bundle, tmp_path / "m.joblib")
    # A different but valid model file (uncompressed), its hash written into the sidecar by someone without the key.
    other = io.BytesIO()
    joblib.dump(joblib.load(path), other, compress=0)
    _swap_joblib(path, other.getvalue())
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        load_bundle(path)
    # Documented limit: without a key the hash alone cannot tell, and the swapped file loads.
    monkeypatch.delenv(HMAC_KEY_ENV)
    assert load_bundle(path).sha256 == hashlib.sha256(other.getvalue()).hexdigest()
    # With a key the refusal comes before unpickling: a booby-trapped pickle never runs.
    monkeypatch.setenv(HMAC_KEY_ENV, KEY)
    marker = tmp_path / "unpickled"
    trap = io.BytesIO()
    joblib.dump({"format": 2, "pipeline": _Tripwire(marker)}, trap)
    _swap_joblib(path, trap.getvalue())
    with pytest.raises(ModelIntegrityError, match="signature"):
        load_bundle(path)
    assert not marker.exists()


def test_unsigned_bundles_are_refused_only_when_a_key_is_set(saved: Path, monkeypatch) -> None:
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)
    assert "hmac_sha256" not in _sidecar(saved) and load_bundle(saved).labels
    monkeypatch.setenv(HMAC_KEY_ENV, KEY)
    with pytest.raises(ModelIntegrityError, match="not signed"):
        load_bundle(saved)
    assert load_bundle(saved, hmac_key=b"").labels  # an explicit empty key turns the check off
    # An operator signs a bundle they trust (e.g. the shipped model) once; from then on it loads.
    sign_bundle(saved)
    assert load_bundle(saved).labels and load_bundle(saved, hmac_key=KEY).labels
    with pytest.raises(ModelIntegrityError, match="signature"):
        load_bundle(saved, hmac_key="wrong-key-1234")
    monkeypatch.delenv(HMAC_KEY_ENV)
    with pytest.raises(ValueError, match="no key"):
        sign_bundle(saved)
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    before = sidecar_path(saved).read_bytes()
    with pytest.raises(ModelIntegrityError, match="altered"):
        sign_bundle(saved, hmac_key=KEY)  # a damaged bundle is not blessed
    assert sidecar_path(saved).read_bytes() == before
