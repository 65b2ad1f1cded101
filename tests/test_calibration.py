"""Calibration: expected calibration error, temperature fitting and scaling."""

from __future__ import annotations

import numpy as np
import pytest

from ser_engine.calibration import expected_calibration_error, fit_temperature
from ser_engine.predict import apply_temperature


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_ece_of_calibrated_and_overconfident_models() -> None:
    rng = np.random.default_rng(0)
    n, k = 20000, 4
    logits = rng.normal(0, 2, size=(n, k))
    proba = _softmax(logits)
    y = np.array([rng.choice(k, p=p) for p in proba])  # labels drawn from the model itself: calibrated
    assert expected_calibration_error(proba, y) < 0.02
    sure = np.zeros((n, k))
    sure[np.arange(n), rng.integers(0, k, n)] = 1.0  # always 100 % sure, right 1 time in 4
    assert expected_calibration_error(sure, y) == pytest.approx(1 - np.mean(sure.argmax(1) == y), abs=1e-9)
    assert expected_calibration_error(np.zeros((0, k)), np.zeros(0, int)) == 0.0


def test_fit_temperature_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(1)
    n, k, true_t = 8000, 8, 2.5
    logits = rng.normal(0, 3, size=(n, k))
    y = np.array([rng.choice(k, p=p) for p in _softmax(logits / true_t)])
    overconfident = _softmax(logits)
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(true_t, rel=0.1)
    before = expected_calibration_error(overconfident, y)
    after = expected_calibration_error(apply_temperature(overconfident, t), y)
    assert after < 0.03 < before


def test_apply_temperature_keeps_ranking_and_sums() -> None:
    rng = np.random.default_rng(2)
    p = _softmax(rng.normal(0, 2, size=(50, 5)))
    np.testing.assert_array_equal(apply_temperature(p, 1.0), p)
    for t in (0.5, 3.0):
        q = apply_temperature(p, t)
        np.testing.assert_allclose(q.sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.argsort(q, axis=1), np.argsort(p, axis=1))
        assert (q.max(axis=1) < p.max(axis=1)).all() if t > 1 else (q.max(axis=1) > p.max(axis=1)).all()


def test_normalise_split_leaves_out_rows_without_a_degraded_copy() -> None:
    from ser_engine.calibration import normalise_split

    rng = np.random.default_rng(3)
    n = 40  # clips per speaker
    X = rng.normal(size=(3 * n, 4)) + np.repeat([0.0, 5.0, -5.0], n)[:, None]  # three speakers, offset voices
    groups = np.repeat(["a", "b", "fb"], n)
    noisy = X + rng.normal(scale=0.1, size=X.shape)
    noisy[groups == "fb"] = np.nan  # feedback given as features only: no degraded copy
    test = np.arange(0, n)  # speaker a is held out
    train = np.arange(n, 3 * n)
    Xtr, rows, Xte, nz = normalise_split(X, groups, train, test, "speaker", 2, {"noise": noisy})
    assert np.isfinite(Xtr).all() and Xtr.shape == (3 * n, 4)
    np.testing.assert_array_equal(rows, np.concatenate([train, np.arange(n, 2 * n)]))  # b's copies only
    # Each speaker standardised by its own clips (shrunk towards the fallback by 5 clips): the offset of 5 is gone.
    assert np.abs(Xtr[: 2 * n].reshape(2, n, 4).mean(axis=1)).max() < 1.0
    assert np.abs(Xte.mean(axis=0)).max() < 1.0
    assert nz is not None and nz.n_features == 4
    raw, raw_rows, _, none = normalise_split(X, groups, train, test, "none", 2, {"noise": noisy})
    assert none is None and np.array_equal(raw_rows, rows) and np.array_equal(raw[2 * n :], noisy[n : 2 * n])


def test_sample_weight_reaches_the_mlp() -> None:
    from ser_engine.training import build_pipeline, fit_pipeline

    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    flipped = 1 - y
    # The same rows twice with opposite labels: the weights decide which labelling the model learns.
    Xd, yd = np.vstack([X, X]), np.concatenate([y, flipped])
    for w_true, expect in ((5.0, y), (0.2, flipped)):
        pipe = build_pipeline(overrides={"hidden_layer_sizes": (8,), "alpha": 0.01, "max_iter": 300})
        fit_pipeline(pipe, Xd, yd, sample_weight=np.concatenate([np.full(300, w_true), np.ones(300)]))
        assert np.mean(pipe.predict(X.astype(np.float32)) == expect) > 0.9
