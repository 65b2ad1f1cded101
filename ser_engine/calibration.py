"""Calibration and the inner speaker-independent folds that evaluation and training share.

Temperature scaling (Guo et al. 2017, "On calibration of modern neural
networks", ICML) needs probabilities of clips the model was not trained
on.  Both :func:`ser_engine.evaluation.evaluate` (inside every outer
speaker fold) and the final fit of a model (:func:`choose_recipe`, called
by ``ser train`` and :func:`ser_engine.retrain.run_retrain`) get them the
same way: out-of-fold predictions of an inner ``GroupKFold`` over the
training speakers only (:func:`inner_oof`).  The same inner folds choose
the ``--nested-grid`` hyper-parameters.

This module depends on :mod:`ser_engine.training` (pipelines) and
:mod:`ser_engine.normalization`; :mod:`ser_engine.evaluation` and
:mod:`ser_engine.recipe` import it, and nothing here imports them, so
there is no import cycle between evaluation and training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from .normalization import SpeakerNormalizer
from .training import build_pipeline, fit_pipeline, mlp_params

__all__ = [
    "choose_recipe",
    "expected_calibration_error",
    "fit_temperature",
    "inner_oof",
    "normalise_split",
    "scored_rows",
]


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (Naeini et al. 2015; Guo et al. 2017).

    ``sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|`` over
    ``n_bins`` equal-width confidence bins ``(lo, hi]``.

    Parameters
    ----------
    proba : np.ndarray, shape (n_samples, n_classes)
    y_true : np.ndarray, shape (n_samples,), int
    n_bins : int, default 15

    Returns
    -------
    float
        In [0, 1]; 0 for an empty input.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[0] == 0:
        return 0.0
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def fit_temperature(proba: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out probabilities.

    Parameters
    ----------
    proba : np.ndarray, shape (n_samples, n_classes)
        Uncalibrated probabilities of clips the model was not trained on.
    y_true : np.ndarray, shape (n_samples,), int

    Returns
    -------
    float
        ``T`` in [0.05, 20] (bounded scalar search over ``log T``).
    """
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None))
    y_true = np.asarray(y_true, dtype=np.int64)

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(z.shape[0]), y_true]))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def normalise_split(
    X: np.ndarray, groups: np.ndarray, train: np.ndarray, test: np.ndarray, normalization: str, min_clips: int,
    augment: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, SpeakerNormalizer | None]:  # fmt: skip
    """Training rows normalised per training speaker, test rows per test speaker (own unlabelled clips).

    Parameters
    ----------
    X : np.ndarray, shape (n_rows, n_features)
        Raw features.
    groups : np.ndarray of str, shape (n_rows,)
        Speaker of each row.
    train, test : np.ndarray of int
        Row indices.
    normalization : {"none", "speaker"}
    min_clips : int
        :class:`~ser_engine.normalization.SpeakerNormalizer` ``min_clips``.
    augment : mapping of str to np.ndarray, shape (n_rows, n_features), optional
        Degraded copies of the rows.  A row that is NaN (no degraded copy
        exists, e.g. feedback given as a feature vector without its audio)
        is left out of the training set.

    Returns
    -------
    X_train : np.ndarray, shape (n_train_rows, n_features)
        The training rows, then the rows of every ``augment`` matrix (each
        degraded copy normalised per speaker from that speaker's degraded clips).
    rows : np.ndarray of int, shape (n_train_rows,)
        Index into ``X`` (and ``y``, sample weights) of each training row.
    X_test : np.ndarray, shape (test.size, n_features)
    normalizer : SpeakerNormalizer or None
        Fitted on the clean training rows (None without normalisation).
    """
    parts_rows = [train]
    for A in (augment or {}).values():
        parts_rows.append(train[np.isfinite(A[train]).all(axis=1)])
    matrices = [X, *(augment or {}).values()]
    rows = np.concatenate(parts_rows)
    if normalization == "none":
        return np.vstack([M[r] for M, r in zip(matrices, parts_rows, strict=True)]), rows, X[test], None
    nz = SpeakerNormalizer(min_clips=min_clips).fit(X[train], groups[train])
    parts = [nz.transform_groups(M[r], groups[r]) for M, r in zip(matrices, parts_rows, strict=True) if r.size]
    return np.vstack(parts), rows, nz.transform_groups(X[test], groups[test]), nz


def _inner_fold(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, a: np.ndarray, b: np.ndarray, recipe: tuple[Any, ...],
    normalization: str, min_clips: int, overrides: Mapping[str, Any], augment: Mapping[str, np.ndarray] | None,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Fit on rows ``a``, predict rows ``b``: (classes, probabilities of shape (b.size, n_classes_seen))."""
    preset, scaler, random_state, _ = recipe
    Xa, rows, Xb, _ = normalise_split(X, groups, a, b, normalization, min_clips, augment)
    pipe = build_pipeline(preset, scaler=scaler, random_state=random_state, overrides=overrides)
    fit_pipeline(pipe, Xa, y[rows], sample_weight=None if sample_weight is None else sample_weight[rows])
    return pipe.classes_, pipe.predict_proba(Xb)


def inner_oof(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, train: np.ndarray, recipe: tuple[Any, ...],
    normalization: str, min_clips: int, overrides: Mapping[str, Any] | None, inner_folds: int,
    augment: Mapping[str, np.ndarray] | None = None, n_jobs: int = 1, inner_fits: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Out-of-fold probabilities over ``train`` from an inner GroupKFold by speaker.

    With ``inner_fits`` < ``inner_folds`` only the first ``inner_fits``
    inner folds are fitted and the rows of the others stay NaN
    (:func:`scored_rows`): a held-out split of whole speakers, as in the full
    cross-validation, for a fraction of its fits.

    scikit-learn's MLP divides the L2 penalty by the number of training
    samples, so an inner model, trained on fewer clips, would be more
    strongly regularised (and less over-confident) than the model fitted on
    all of ``train``.  ``alpha`` is therefore scaled by the inner training
    size over ``train.size``: the same penalty per clip, so the inner
    predictions' confidence matches the final model's.  Uses at most as
    many folds as ``train`` has speakers; ``n_jobs`` > 1 fits the inner
    folds in that many joblib processes.

    Parameters
    ----------
    X : np.ndarray, shape (n_rows, n_features)
    y : np.ndarray, shape (n_rows,), int
    groups : np.ndarray of str, shape (n_rows,)
    train : np.ndarray of int
        Rows to cross-validate over.
    recipe : tuple
        ``(preset, scaler, random_state, n_labels)``.
    normalization, min_clips, augment
        As :func:`normalise_split`.
    overrides : mapping, optional
        ``MLPClassifier`` keyword arguments replacing the preset's.
    inner_folds : int
    n_jobs : int, default 1
    inner_fits : int, optional
    sample_weight : np.ndarray, shape (n_rows,), optional
        Weight of each row in the MLP's loss (degraded copies weigh as their row).

    Returns
    -------
    np.ndarray, shape (train.size, n_labels)
        Probabilities; rows of unfitted inner folds are NaN.

    Raises
    ------
    ValueError
        If ``train`` holds fewer than two speakers.
    """
    preset, _, _, n_labels = recipe
    proba = np.full((train.size, n_labels), np.nan)
    alpha = float(mlp_params(preset, overrides)["alpha"])
    n_speakers = len(set(groups[train].tolist()))
    if n_speakers < 2:
        raise ValueError("evaluate: the inner speaker-independent CV needs at least two training speakers")
    splits = list(GroupKFold(n_splits=min(inner_folds, n_speakers)).split(train, groups=groups[train]))
    splits = splits[: inner_fits or len(splits)]
    jobs = [
        (X, y, groups, train[itr], train[ite], recipe, normalization, min_clips,
         {**(overrides or {}), "alpha": alpha * itr.size / train.size}, augment, sample_weight)
        for itr, ite in splits
    ]  # fmt: skip
    if n_jobs > 1:
        from joblib import Parallel, delayed

        # Worker processes even for a single inner fold: `ser train` fits the final model in this
        # process meanwhile, and two fits in one process contend for the GIL.  n_jobs itself (not
        # fewer) reuses the pool that feature extraction started.
        outs = Parallel(n_jobs=n_jobs)(delayed(_inner_fold)(*job) for job in jobs)
    else:
        outs = [_inner_fold(*job) for job in jobs]
    for (_, ite), (classes, p) in zip(splits, outs, strict=True):
        proba[ite] = 0.0
        proba[np.ix_(ite, classes)] = p
    return proba


def scored_rows(proba: np.ndarray) -> np.ndarray:
    """Rows of :func:`inner_oof` probabilities that an inner fold predicted (bool mask, shape (n_rows,))."""
    return ~np.isnan(proba[:, 0])


def choose_recipe(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    preset: str = "default",
    scaler: bool = True,
    overrides: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    normalization: str = "none",
    min_clips: int = 5,
    grid: Sequence[Mapping[str, Any]] | None = None,
    calibrate: bool = True,
    inner_folds: int = 5,
    augment: Mapping[str, np.ndarray] | None = None,
    n_jobs: int = 1,
    inner_fits: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[dict[str, Any] | None, float]:
    """Hyper-parameters and temperature for a final model, by speaker-independent CV on its training data.

    Out-of-fold predictions of a ``GroupKFold(inner_folds)`` over the
    speakers pick the best ``grid`` entry (by accuracy) and fit the
    temperature (:func:`fit_temperature`) -- the same procedure
    :func:`ser_engine.evaluation.evaluate` runs inside each training fold.

    Parameters
    ----------
    X : np.ndarray, shape (n_clips, n_features)
        Raw features.
    y : np.ndarray, shape (n_clips,), int
    groups : sequence of str, shape (n_clips,)
        Speakers.
    preset, scaler, overrides, random_state, normalization, min_clips
        The recipe (see :func:`ser_engine.training.train_model`).
    grid : sequence of mapping, optional
        ``MLPClassifier`` overrides to choose from.
    calibrate : bool, default True
        Fit a temperature (else 1.0).
    inner_folds : int, default 5
    augment : mapping of str to np.ndarray, optional
        Degraded copies' features (shape of ``X``; NaN rows: no copy) added to every inner training set.
    n_jobs : int, default 1
        Fit the inner folds in this many joblib processes.
    inner_fits : int, optional
        Fit only the first ``inner_fits`` inner folds (default all); see
        :func:`ser_engine.evaluation.evaluate`.
    sample_weight : np.ndarray, shape (n_clips,), optional
        Weight of each row in the MLP's loss.

    Returns
    -------
    overrides : dict or None
        ``overrides`` updated with the chosen grid entry.
    temperature : float
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    everything = np.arange(y.size)
    recipe = (preset, scaler, random_state, int(y.max()) + 1)
    proba = None
    if grid:
        best = -1.0
        chosen: Mapping[str, Any] = {}
        for candidate in grid:
            p = inner_oof(X, y, groups, everything, recipe, normalization, min_clips,
                          {**(overrides or {}), **candidate}, inner_folds, augment, n_jobs, inner_fits,
                          sample_weight)  # fmt: skip
            acc = float(np.mean(p[scored_rows(p)].argmax(axis=1) == y[scored_rows(p)]))
            if acc > best:
                best, chosen, proba = acc, candidate, p
        overrides = {**(overrides or {}), **chosen}
    if not calibrate:
        return (dict(overrides) if overrides else None), 1.0
    if proba is None:
        proba = inner_oof(X, y, groups, everything, recipe, normalization, min_clips, overrides, inner_folds, augment,
                          n_jobs, inner_fits, sample_weight)  # fmt: skip
    scored = scored_rows(proba)
    return (dict(overrides) if overrides else None), fit_temperature(proba[scored], y[scored])
