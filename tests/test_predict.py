"""Prediction with the shipped model: real clips, voice notes, signals, errors, threads."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from ser_engine.audio import AudioLimits, load_audio
from ser_engine.bundle import DEFAULT_MODEL_PATH, load_bundle
from ser_engine.corpora import RAVDESS_EMOTIONS, load_ravdess, parse_ravdess_name
from ser_engine.errors import (
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
    UndecodableAudioError,
)
from ser_engine.normalization import SpeakerStats
from ser_engine.predict import Prediction, Predictor
from ser_engine.training import data_fingerprint


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


def _check(p: Prediction, labels: tuple[str, ...]) -> None:
    assert list(p.probabilities) == list(labels)
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
    assert p.confidence == max(p.probabilities.values()) == p.probabilities[p.label]


def test_shipped_model_metadata(predictor: Predictor) -> None:
    assert predictor.labels == RAVDESS_EMOTIONS
    meta = predictor.bundle.metadata
    assert meta["n_clips"] == 1440 and meta["n_speakers"] == 24
    assert meta["preset"] == "default" and meta["scaler"] is True
    for protocol in ("random", "speaker"):
        assert 1 / 8 < meta["metrics"][protocol]["uar"] <= 1.0
    assert DEFAULT_MODEL_PATH.stat().st_size < 5 * 2**20


def test_shipped_model_was_trained_on_this_corpus(predictor: Predictor, ravdess_dir: Path) -> None:
    assert predictor.bundle.metadata["data_fingerprint"] == data_fingerprint(load_ravdess(ravdess_dir))


def test_predict_fixture_clips(predictor: Predictor, fixture_clips: list[Path], ravdess_dir: Path) -> None:
    # The four fixture clips were in the training set: once the model knows the
    # speaker's voice (statistics of 12 of that actor's clips, every fifth, so
    # spread over the emotions) it must know them.
    corpus = load_ravdess(ravdess_dir)
    for clip in fixture_clips:
        actor = parse_ravdess_name(clip).speaker
        others = [c.path for c in corpus if c.speaker == actor][::5]
        stats = SpeakerStats.of(np.vstack([predictor.predict(o).features for o in others]))
        p = predictor.predict(clip, speaker_stats=stats)
        _check(p, predictor.labels)
        assert p.normalization == "speaker"
        assert p.label == parse_ravdess_name(clip).emotion
        assert p.duration_s == pytest.approx(sf.info(clip).duration, abs=1e-3)
        fallback = predictor.predict(clip)
        _check(fallback, predictor.labels)
        assert fallback.normalization == "fallback" and fallback.probabilities != p.probabilities


def test_shipped_model_is_calibrated_and_speaker_normalised(predictor: Predictor) -> None:
    bundle = predictor.bundle
    assert bundle.normalizer is not None and bundle.normalizer.min_clips == predictor.min_clips == 5
    assert bundle.metadata["normalization"] == "speaker"
    assert 0.5 < bundle.temperature < 3.0 and predictor.unsure_below == bundle.metadata["unsure_below"]
    calibration = bundle.metadata["metrics"]["calibration"]
    assert calibration["ece_after"] < calibration["ece_before"]


def test_bytes_and_path_agree(predictor: Predictor, angry_clip: Path) -> None:
    a, b = predictor.predict(angry_clip), predictor.predict(angry_clip.read_bytes())
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.label = "calm"  # type: ignore[misc]
    assert a.to_dict()["probabilities"] == a.probabilities


def test_voice_note_of_an_angry_clip(predictor: Predictor, angry_clip: Path, voice_note_factory) -> None:
    note = voice_note_factory(angry_clip)
    p = predictor.predict(note.read_bytes())
    _check(p, predictor.labels)
    assert p.label == "angry"
    assert p.duration_s == pytest.approx(sf.info(angry_clip).duration, abs=0.05)


def test_predict_signal_resamples(predictor: Predictor, angry_clip: Path) -> None:
    y16 = load_audio(angry_clip)
    at16 = predictor.predict_signal(y16)
    from_file = predictor.predict(angry_clip)
    assert at16.label == from_file.label and at16.duration_s == from_file.duration_s
    assert at16.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    y48 = soxr.resample(y16, 16_000, 48_000)
    at48 = predictor.predict_signal(y48, sr=48_000)
    assert at48.label == at16.label
    assert at48.duration_s == pytest.approx(at16.duration_s, abs=1e-3)
    for label in predictor.labels:
        assert at48.probabilities[label] == pytest.approx(at16.probabilities[label], abs=0.05)


def test_signal_errors(predictor: Predictor) -> None:
    with pytest.raises(EmptyAudioError):
        predictor.predict_signal(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioTooShortError):
        predictor.predict_signal(np.full(1600, 0.1, dtype=np.float32))
    with pytest.raises(SilentAudioError):
        predictor.predict_signal(np.zeros(16_000, dtype=np.float32))
    with pytest.raises(ValueError):
        predictor.predict_signal(np.zeros((2, 16_000), dtype=np.float32))
    short = Predictor(predictor.bundle, limits=AudioLimits(max_duration_s=1.0))
    with pytest.raises(AudioTooLongError):
        short.predict_signal(np.full(32_000, 0.1, dtype=np.float32))


def test_undecodable_input(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(UndecodableAudioError):
        predictor.predict(b"this is not audio at all" * 100)
    with pytest.raises(UndecodableAudioError):
        predictor.predict(tmp_path / "missing.ogg")


def test_threads_share_one_predictor(predictor: Predictor, fixture_clips: list[Path]) -> None:
    serial = [predictor.predict(c) for c in fixture_clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(predictor.predict, fixture_clips * 2))
    for got, want in zip(parallel, serial * 2, strict=True):
        assert got.label == want.label
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-6)


def test_predictor_from_a_loaded_bundle(predictor: Predictor, angry_clip: Path) -> None:
    again = Predictor(load_bundle(DEFAULT_MODEL_PATH))
    assert again.predict(angry_clip) == predictor.predict(angry_clip)
    assert "angry" in repr(again)


def test_predictions_name_the_model_that_made_them(predictor: Predictor, angry_clip: Path, tmp_path: Path) -> None:
    import json
    import pickle

    from ser_engine.registry import ModelRegistry

    sha = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())["sha256"]
    first = predictor.predict(angry_clip)
    # "<file stem>@sha256:<hex of the .joblib>", what stored analyses record.
    assert first.model_version == predictor.model_version == f"ravdess-8class@sha256:{sha}"
    assert first.to_dict()["model_version"] == first.model_version
    again = pickle.loads(pickle.dumps(first))  # crosses from worker processes this way
    assert again == first and again.model_version == first.model_version
    assert json.loads(json.dumps(first.to_dict()))["model_version"] == first.model_version

    registry = ModelRegistry(tmp_path / "reg")
    registry.import_file(DEFAULT_MODEL_PATH)
    from_registry = Predictor(registry.load(1)).predict(angry_clip)
    assert from_registry.model_version == f"v1@sha256:{sha}"
    assert from_registry.probabilities == first.probabilities  # same model, new name

    named = Predictor(predictor.bundle, model_version="v7@sha256:" + "a" * 64)
    assert named.predict_signal(load_audio(angry_clip)).model_version == "v7@sha256:" + "a" * 64
    # A bundle changed in memory is no longer the file it came from.
    changed = dataclasses.replace(predictor.bundle, temperature=2.0)
    assert changed.sha256 is None and Predictor(changed).model_version == "unsaved"
    with pytest.raises(ValueError, match="model_version"):
        Predictor(predictor.bundle, model_version="x" * 129)
    with pytest.raises(ValueError, match="model_version"):
        Predictor(predictor.bundle, model_version="")
