"""Evaluation under two protocols, always reported together.

``random``
    The tutorials' protocol: one stratified random 75/25 split of the clips.
    Every RAVDESS actor speaks the same two sentences in every emotion, so
    this puts the same voices (and near-identical takes) on both sides and
    overstates accuracy.  Reported for comparison with published tutorials.
``speaker``
    Speaker-independent: ``GroupKFold`` over speakers (RAVDESS: actors), so
    no voice is both trained and tested on.  Default 6 folds = 4 held-out
    actors per fold.  Reported as the mean (and standard deviation) over
    folds and "pooled" over all out-of-fold predictions.  This is the number
    to quote and the one hyper-parameters are chosen on.

Metrics: accuracy; macro-F1; UAR (unweighted average recall = balanced
accuracy = mean per-class recall, the headline metric of the INTERSPEECH
Computational Paralinguistics challenges, Schuller et al. 2009); per-class
recall; confusion matrix (rows: true class, columns: predicted class).

Everything works on a precomputed feature matrix, so features are
extracted once per run (see :func:`ser_engine.training.featurize`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)
from sklearn.model_selection import GroupKFold, train_test_split

from .bundle import _json_default
from .calibration import expected_calibration_error, fit_temperature, inner_oof, normalise_split, scored_rows
from .predict import apply_temperature
from .training import build_pipeline, fit_pipeline, mlp_params

__all__ = [
    "CalibrationResult",
    "EvaluationReport",
    "FoldResult",
    "ProtocolResult",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "plot_confusion_matrix",
    "plot_loss_curves",
    "score",
    "write_report",
]


@dataclass
class FoldResult:
    """Scores of one train/test split.

    Attributes
    ----------
    accuracy, macro_f1, uar : float
        In [0, 1].
    n_train, n_test : int
        Number of clips.
    test_speakers : list of str
        Speakers held out (all speakers for the random split).
    n_iter : int
        MLP epochs run.
    converged : bool
        False if the MLP stopped at ``max_iter`` before its tolerance criterion.
    loss_curve : list of float
        Training loss per epoch (cross-entropy plus L2 penalty).
    """

    accuracy: float
    macro_f1: float
    uar: float
    n_train: int
    n_test: int
    test_speakers: list[str]
    n_iter: int
    converged: bool
    loss_curve: list[float] = field(repr=False)


@dataclass
class ProtocolResult:
    """Scores of one protocol; pooled over all its test predictions.

    Attributes
    ----------
    name : str
        ``"random"`` or ``"speaker"``.
    description : str
        One line saying how the data was split.
    accuracy, macro_f1, uar : float
        Pooled over every test prediction of the protocol.
    per_class_recall : dict of str to float
        Pooled recall of each label.
    confusion : list of list of int, shape (n_labels, n_labels)
        Pooled counts; rows true labels, columns predicted, in label order.
    folds : list of FoldResult
        One per split (one for ``random``).
    accuracy_mean, accuracy_std, macro_f1_mean, macro_f1_std, uar_mean, uar_std : float
        Over folds (std 0 for a single split).
    """

    name: str
    description: str
    accuracy: float
    macro_f1: float
    uar: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]
    folds: list[FoldResult]
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    uar_mean: float
    uar_std: float


@dataclass
class EvaluationReport:
    """Both protocols' results and the recipe they measured; JSON-serialisable.

    Attributes
    ----------
    labels : list of str
    n_clips, n_speakers : int
    class_counts : dict of str to int
    feature_config : dict
        ``FeatureConfig.to_dict()`` of the features, if given.
    preset : str
    mlp_params : dict
    scaler : bool
    random_state : int or None
    random : ProtocolResult
        Stratified random split.
    speaker : ProtocolResult
        Speaker-independent GroupKFold (held-out speakers normalised from
        their own unlabelled clips when ``normalization == "speaker"``).
    normalization : str
        ``"none"`` or ``"speaker"``.
    variants : dict of str to ProtocolResult
        The same speaker-independent models on other versions of the
        held-out clips: ``"fallback"`` (held-out speakers normalised with the
        training speakers' fallback statistics only) and one entry per
        degraded condition (e.g. ``"opus24k"``, normalised from the
        speaker's own degraded clips).
    calibration : CalibrationResult or None
        Temperature scaling fitted on training speakers, scored on held-out ones.
    selected : list of dict
        Per speaker fold, the ``MLPClassifier`` overrides chosen by the inner
        speaker-independent CV (empty without a grid).
    augment : list of str
        Training-time augmentations (degraded copies of the training clips).
    recipe : dict or None
        :meth:`ser_engine.recipe.Recipe.to_dict` of the recipe scored, when it was run as one
        (``ser evaluate``, ``ser train``).
    """

    labels: list[str]
    n_clips: int
    n_speakers: int
    class_counts: dict[str, int]
    feature_config: dict[str, Any] | None
    preset: str
    mlp_params: dict[str, Any]
    scaler: bool
    random_state: int | None
    random: ProtocolResult
    speaker: ProtocolResult
    normalization: str = "none"
    variants: dict[str, ProtocolResult] = field(default_factory=dict)
    calibration: CalibrationResult | None = None
    selected: list[dict[str, Any]] = field(default_factory=list)
    augment: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, numbers and strings (``json.dumps``-able)."""
        return json.loads(json.dumps(asdict(self), default=_json_default))

    def summary(self) -> dict[str, Any]:
        """Headline numbers of both protocols, small enough for bundle metadata.

        Returns
        -------
        dict
            ``{"random": {...}, "speaker": {...}}`` with pooled accuracy,
            macro-F1, UAR, fold means/stds and per-class recall, plus the
            split descriptions.
        """
        out: dict[str, Any] = {}
        for p in (self.random, self.speaker):
            out[p.name] = {
                "description": p.description,
                "accuracy": p.accuracy,
                "macro_f1": p.macro_f1,
                "uar": p.uar,
                "uar_mean": p.uar_mean,
                "uar_std": p.uar_std,
                "accuracy_mean": p.accuracy_mean,
                "macro_f1_mean": p.macro_f1_mean,
                "per_class_recall": dict(p.per_class_recall),
                "n_folds": len(p.folds),
            }
        out["normalization"] = self.normalization
        out["augment"] = list(self.augment)
        for name, p in self.variants.items():
            out[f"speaker_{name}"] = {"accuracy_mean": p.accuracy_mean, "macro_f1_mean": p.macro_f1_mean,
                                      "uar_mean": p.uar_mean, "accuracy": p.accuracy}  # fmt: skip
        if self.calibration is not None:
            out["calibration"] = asdict(self.calibration)
        if self.selected:
            out["selected"] = list(self.selected)
        return out

    def table(self) -> str:
        """A readable plain-text table of both protocols.

        Returns
        -------
        str
            Several lines, no trailing newline.
        """
        width = max(16, *(len(label) for label in self.labels))
        col = 40
        lines = [
            (
                f"{self.n_clips} clips, {self.n_speakers} speakers, {len(self.labels)} classes "
                f"(chance UAR {1 / len(self.labels):.3f}); preset {self.preset}, "
                f"scaler {'yes' if self.scaler else 'no'}, normalisation {self.normalization}, "
                f"augmentation {', '.join(self.augment) or 'none'}"
            ),
            "",
            f"{'protocol':<{col}} {'accuracy':>9} {'macro-F1':>9} {'UAR':>7}",
        ]
        for p in (self.random, self.speaker):
            lines.append(f"{p.description:<{col}} {p.accuracy:>9.3f} {p.macro_f1:>9.3f} {p.uar:>7.3f}")
            if len(p.folds) > 1:
                lines.append(
                    f"{'  mean +- std over folds':<{col}} {p.accuracy_mean:>5.3f}+-{p.accuracy_std:.3f}"
                    f" {p.macro_f1_mean:>5.3f}+-{p.macro_f1_std:.3f} {p.uar_mean:>5.3f}+-{p.uar_std:.3f}"
                )
        fits = [f for p in (self.random, self.speaker) for f in p.folds]
        epochs = [f.n_iter for f in fits]
        stopped = sum(not f.converged for f in fits)
        lines.append(
            f"MLP epochs per fit: {min(epochs)}-{max(epochs)} (max_iter {self.mlp_params.get('max_iter')}; "
            f"{stopped} of {len(fits)} fits stopped there unconverged)"
        )
        if self.variants:
            lines += ["", f"speaker-independent, other versions of the held-out clips (mean over folds; normalisation {self.normalization}):"]
            lines.append(f"{'  clips':<{col}} {'accuracy':>9} {'macro-F1':>9} {'UAR':>7}  {'acc. drop':>9}")
            sp = self.speaker
            lines.append(f"{'  clean (as above)':<{col}} {sp.accuracy_mean:>9.3f} {sp.macro_f1_mean:>9.3f} {sp.uar_mean:>7.3f}")
            for name, p in self.variants.items():
                what = "fallback stats only (new speaker)" if name == "fallback" else name
                lines.append(
                    f"{'  ' + what:<{col}} {p.accuracy_mean:>9.3f} {p.macro_f1_mean:>9.3f} {p.uar_mean:>7.3f}"
                    f"  {100 * (p.accuracy_mean - sp.accuracy_mean):>+8.1f}pt"
                )
        if self.selected:
            lines += ["", "hyper-parameters chosen by inner speaker-independent CV, per fold: "
                      + "; ".join(json.dumps(d, sort_keys=True) for d in self.selected)]  # fmt: skip
        if self.calibration is not None:
            c = self.calibration
            lines += [
                "",
                f"calibration (temperature fitted on training speakers, per fold T {min(c.temperatures):.2f}-{max(c.temperatures):.2f}):",
                (
                    f"  ECE (15 bins, held-out speakers, pooled): {c.ece_before:.3f} before, {c.ece_after:.3f} after"
                    f" (mean over folds {c.ece_after_mean:.3f})"
                ),
                (
                    f"  unsure below confidence {c.unsure_below:.2f}: coverage {c.coverage:.3f}, accuracy of confident"
                    f" answers {c.confident_accuracy:.3f} (all answers {c.accuracy:.3f}); truth in top two of unsure"
                    f" ones {c.unsure_top2:.3f}"
                ),
            ]
        lines += ["", f"{'recall per class':<{width}} {'random':>8} {'speaker':>8}"]
        for label in self.labels:
            lines.append(
                f"{label:<{width}} {self.random.per_class_recall[label]:>8.3f} {self.speaker.per_class_recall[label]:>8.3f}"
            )
        return "\n".join(lines)


def score(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1, UAR, per-class recall and confusion of integer labels.

    Parameters
    ----------
    y_true, y_pred : np.ndarray, shape (n,), int
        Class indices in ``0 .. n_labels - 1``.
    n_labels : int

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``uar`` (floats), ``recall`` (list of
        ``n_labels`` floats; 0 for a class absent from ``y_true``) and
        ``confusion`` (``n_labels`` x ``n_labels`` list of int, rows true).
    """
    classes = np.arange(n_labels)
    recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "uar": float(balanced_accuracy_score(y_true, y_pred)),
        "recall": [float(r) for r in recall],
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).astype(int).tolist(),
    }


@dataclass
class CalibrationResult:
    """Calibration of the speaker-independent models' probabilities.

    Attributes
    ----------
    temperatures : list of float
        Per outer fold, fitted on out-of-fold predictions of an inner
        ``GroupKFold`` over that fold's training speakers only.
    ece_before, ece_after : float
        Expected calibration error (15 equal-width bins) over all held-out
        predictions, before and after temperature scaling.
    ece_after_mean : float
        Mean over folds of the calibrated ECE.
    unsure_below : float
        Confidence threshold of the ``unsure`` flag.
    coverage : float
        Share of held-out clips answered confidently (calibrated confidence
        >= ``unsure_below``).
    confident_accuracy : float
        Accuracy on those clips.
    accuracy : float
        Accuracy on all held-out clips.
    unsure_top2 : float
        Share of unsure clips whose true label is among the two most probable.
    """

    temperatures: list[float]
    ece_before: float
    ece_after: float
    ece_after_mean: float
    unsure_below: float
    coverage: float
    confident_accuracy: float
    accuracy: float
    unsure_top2: float


def _fit_predict(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    preset: str,
    scaler: bool,
    random_state: int | None,
    overrides: Mapping[str, Any] | None,
    groups: np.ndarray | None = None,
    normalization: str = "none",
    min_clips: int = 5,
    variants: Mapping[str, np.ndarray] | None = None,
    grid: Sequence[Mapping[str, Any]] | None = None,
    calibrate: bool = False,
    inner_folds: int = 5,
    augment: Mapping[str, np.ndarray] | None = None,
    inner_fits: int | None = None,
) -> dict[str, Any]:
    n_labels = int(y.max()) + 1
    if groups is None:
        groups = np.arange(y.size).astype(str)
    selected: dict[str, Any] | None = None
    inner_proba = None
    if grid:
        best = -1.0
        for candidate in grid:
            merged = {**(overrides or {}), **candidate}
            p = inner_oof(X, y, groups, train, (preset, scaler, random_state, n_labels), normalization, min_clips,
                          merged, inner_folds, augment, inner_fits=inner_fits)  # fmt: skip
            acc = float(np.mean(p[scored_rows(p)].argmax(axis=1) == y[train][scored_rows(p)]))
            if acc > best:
                best, selected, inner_proba = acc, dict(candidate), p
        overrides = {**(overrides or {}), **(selected or {})}
    temperature = 1.0
    if calibrate:
        if inner_proba is None:
            inner_proba = inner_oof(X, y, groups, train, (preset, scaler, random_state, n_labels), normalization,
                                    min_clips, overrides, inner_folds, augment, inner_fits=inner_fits)  # fmt: skip
        scored = scored_rows(inner_proba)
        temperature = fit_temperature(inner_proba[scored], y[train][scored])
    Xtr, rows, Xte, nz = normalise_split(X, groups, train, test, normalization, min_clips, augment)
    pipe = build_pipeline(preset, scaler=scaler, random_state=random_state, overrides=overrides)
    converged = fit_pipeline(pipe, Xtr, y[rows])
    mlp = pipe.named_steps["mlp"]

    def proba_of(Z: np.ndarray) -> np.ndarray:
        P = np.zeros((Z.shape[0], n_labels))
        P[:, pipe.classes_] = pipe.predict_proba(Z)
        return P

    probas = {"": proba_of(Xte)}
    if nz is not None:
        probas["fallback"] = proba_of(nz.transform(X[test]))
    for name, Xv in (variants or {}).items():
        Zv = Xv[test] if nz is None else nz.transform_groups(Xv[test], groups[test])
        probas[name] = proba_of(Zv)
    return {
        "probas": probas,
        "n_iter": int(mlp.n_iter_),
        "converged": converged,
        "loss": [float(v) for v in mlp.loss_curve_],
        "temperature": temperature,
        "selected": selected,
    }


def _protocol(
    name: str,
    description: str,
    splits: list[tuple[np.ndarray, np.ndarray]],
    outputs: list[tuple[np.ndarray, int, bool, list[float]]],
    y: np.ndarray,
    groups: np.ndarray,
    labels: Sequence[str],
) -> ProtocolResult:
    n = len(labels)
    folds = []
    for (train, test), (pred, n_iter, converged, loss) in zip(splits, outputs, strict=True):
        s = score(y[test], pred, n)
        folds.append(
            FoldResult(
                accuracy=s["accuracy"],
                macro_f1=s["macro_f1"],
                uar=s["uar"],
                n_train=int(train.size),
                n_test=int(test.size),
                test_speakers=sorted({str(g) for g in groups[test]}),
                n_iter=n_iter,
                converged=converged,
                loss_curve=loss,
            )
        )
    test_all = np.concatenate([t for _, t in splits])
    pred_all = np.concatenate([o[0] for o in outputs])
    pooled = score(y[test_all], pred_all, n)

    def ms(key: str) -> tuple[float, float]:
        values = np.array([getattr(f, key) for f in folds])
        return float(values.mean()), float(values.std())

    (acc_m, acc_s), (f1_m, f1_s), (uar_m, uar_s) = ms("accuracy"), ms("macro_f1"), ms("uar")
    return ProtocolResult(
        name=name,
        description=description,
        accuracy=pooled["accuracy"],
        macro_f1=pooled["macro_f1"],
        uar=pooled["uar"],
        per_class_recall=dict(zip(labels, pooled["recall"], strict=True)),
        confusion=pooled["confusion"],
        folds=folds,
        accuracy_mean=acc_m,
        accuracy_std=acc_s,
        macro_f1_mean=f1_m,
        macro_f1_std=f1_s,
        uar_mean=uar_m,
        uar_std=uar_s,
    )


def evaluate(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    labels: Sequence[str],
    preset: str = "default",
    scaler: bool = True,
    overrides: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    folds: int = 6,
    test_size: float = 0.25,
    feature_config: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
    normalization: str = "none",
    min_clips: int = 5,
    variants: Mapping[str, np.ndarray] | None = None,
    grid: Sequence[Mapping[str, Any]] | None = None,
    calibrate: bool = False,
    unsure_below: float = 0.5,
    inner_folds: int = 5,
    augment: Mapping[str, np.ndarray] | None = None,
    inner_fits: int | None = None,
) -> EvaluationReport:
    """Score a training recipe under both protocols on precomputed features.

    Parameters
    ----------
    X : np.ndarray, shape (n_clips, n_features)
        Feature matrix (e.g. from :func:`ser_engine.training.featurize`).
    y : np.ndarray, shape (n_clips,), int
        Class indices into ``labels``.
    groups : sequence of str, shape (n_clips,)
        Speaker of each clip (``Clip.speaker``).
    labels : sequence of str
        Class names.
    preset, scaler, overrides, random_state
        The recipe, as for :func:`ser_engine.training.build_pipeline`; the
        same seed is used for the random split and every model.
    folds : int, default 6
        Number of ``GroupKFold`` folds over speakers (at most the number of
        speakers).
    test_size : float, default 0.25
        Test fraction of the random split.
    feature_config : mapping, optional
        ``FeatureConfig.to_dict()``, recorded in the report.
    n_jobs : int, default 1
        Fit the 1 + ``folds`` models in this many joblib processes.
    normalization : {"none", "speaker"}, default "none"
        ``"speaker"``: standardise features per speaker
        (:class:`~ser_engine.normalization.SpeakerNormalizer`): training
        speakers with their own statistics, held-out speakers with those of
        their own unlabelled test clips; the ``"fallback"`` variant scores the
        same models on held-out clips normalised with the training speakers'
        fallback statistics only (a speaker never heard before).
    min_clips : int, default 5
        ``SpeakerNormalizer.min_clips``.
    variants : mapping of str to np.ndarray, optional
        Name -> feature matrix of the same clips under a degradation (shape
        of ``X``, e.g. Opus round trip); the speaker-independent models are
        also scored on them (test rows only).
    grid : sequence of mapping, optional
        ``MLPClassifier`` overrides to choose from, per speaker fold, by an
        inner ``GroupKFold`` over that fold's training speakers (nested
        cross-validation; the held-out speakers never influence the choice).
    calibrate : bool, default False
        Fit a temperature per speaker fold on inner out-of-fold predictions
        of its training speakers and report calibration on the held-out ones.
    unsure_below : float, default 0.5
        Confidence threshold for the coverage numbers of the calibration.
    inner_folds : int, default 5
        Folds of the inner speaker-independent CV (grid and calibration).
        Calibration needs inner models close to the outer one: with 5 inner
        folds (16 of 20 training actors) the fitted temperatures matched the
        held-out speakers' (ECE 0.035 on RAVDESS), with 3 (13 actors) they
        came out too low (ECE 0.058).
    inner_fits : int, optional
        Fit only the first ``inner_fits`` of the ``inner_folds`` inner folds
        (default all): the grid and temperature are chosen on the clips of
        those folds' held-out speakers only.  ``inner_folds=3,
        inner_fits=1`` trains the inner model on the same share of speakers
        as a 3-fold CV for a third of its cost.
    augment : mapping of str to np.ndarray, optional
        Name -> feature matrix of the same clips under a degradation (shape
        of ``X``): training-time augmentation; every model (speaker folds,
        inner folds and the random split) also trains on the degraded copies
        of its training clips, never on those of its test clips.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    ValueError
        If shapes disagree, a class has fewer than two clips (stratified
        split), ``folds`` < 2 or exceeds the number of speakers, ``preset``
        or ``normalization`` is unknown.
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    n_labels = len(labels)
    if X.ndim != 2 or y.shape != (X.shape[0],) or groups.shape != y.shape:
        raise ValueError(f"evaluate: X {X.shape}, y {y.shape} and groups {groups.shape} disagree")
    if y.size and (y.min() < 0 or y.max() >= n_labels):
        raise ValueError("evaluate: y must hold indices into labels")
    if normalization not in ("none", "speaker"):
        raise ValueError(f"evaluate: normalization must be 'none' or 'speaker', got {normalization!r}")
    for name, Xv in {**(variants or {}), **(augment or {})}.items():
        if np.shape(Xv) != X.shape:
            raise ValueError(f"evaluate: variant {name!r} has shape {np.shape(Xv)}, expected {X.shape}")
    n_speakers = len(set(groups.tolist()))
    if not 2 <= folds <= n_speakers:
        raise ValueError(f"evaluate: need 2 <= folds <= number of speakers ({n_speakers}), got {folds}")
    params = mlp_params(preset, overrides)  # validates the preset

    index = np.arange(y.size)
    train, test = train_test_split(index, test_size=test_size, stratify=y, random_state=random_state)
    random_splits = [(np.sort(train), np.sort(test))]
    speaker_splits = [(tr, te) for tr, te in GroupKFold(n_splits=folds).split(X, y, groups)]

    base = (preset, scaler, random_state, overrides)
    common = {"groups": groups, "normalization": normalization, "min_clips": min_clips, "augment": augment}
    jobs: list[tuple[Any, ...]] = [(X, y, *random_splits[0], *base, common, {})]
    speaker_kw = {"variants": variants, "grid": grid, "calibrate": calibrate, "inner_folds": inner_folds,
                  "inner_fits": inner_fits}  # fmt: skip
    jobs += [(X, y, tr, te, *base, common, speaker_kw) for tr, te in speaker_splits]
    if n_jobs == 1:
        outputs = [_fit_predict(*j[:8], **j[8], **j[9]) for j in jobs]
    else:
        from joblib import Parallel, delayed

        outputs = Parallel(n_jobs=n_jobs)(delayed(_fit_predict)(*j[:8], **j[8], **j[9]) for j in jobs)

    def as_tuples(outs: list[dict[str, Any]], key: str) -> list[tuple[np.ndarray, int, bool, list[float]]]:
        return [(o["probas"][key].argmax(axis=1), o["n_iter"], o["converged"], o["loss"]) for o in outs]

    random_result = _protocol(
        "random",
        f"random stratified {round((1 - test_size) * 100)}/{round(test_size * 100)} split",
        random_splits,
        as_tuples(outputs[:1], ""),
        y,
        groups,
        labels,
    )
    spk = outputs[1:]
    speaker_result = _protocol(
        "speaker",
        f"speaker-independent {folds}-fold (pooled)",
        speaker_splits,
        as_tuples(spk, ""),
        y,
        groups,
        labels,
    )
    variant_results = {
        key: _protocol(
            f"speaker_{key}", f"speaker-independent {folds}-fold, {key}", speaker_splits, as_tuples(spk, key), y, groups,
            labels,
        )
        for key in spk[0]["probas"]
        if key
    }
    calibration = None
    if calibrate:
        y_te = [y[te] for _, te in speaker_splits]
        raw = [o["probas"][""] for o in spk]
        cal = [apply_temperature(P, o["temperature"]) for P, o in zip(raw, spk, strict=True)]
        P_all, y_all = np.vstack(cal), np.concatenate(y_te)
        conf = P_all.max(axis=1)
        confident = conf >= unsure_below
        correct = P_all.argmax(axis=1) == y_all
        top2 = np.argsort(-P_all, axis=1)[:, :2]
        in_top2 = (top2 == y_all[:, None]).any(axis=1)
        calibration = CalibrationResult(
            temperatures=[float(o["temperature"]) for o in spk],
            ece_before=expected_calibration_error(np.vstack(raw), y_all),
            ece_after=expected_calibration_error(P_all, y_all),
            ece_after_mean=float(np.mean([expected_calibration_error(P, t) for P, t in zip(cal, y_te, strict=True)])),
            unsure_below=float(unsure_below),
            coverage=float(confident.mean()),
            confident_accuracy=float(correct[confident].mean()) if confident.any() else float("nan"),
            accuracy=float(correct.mean()),
            unsure_top2=float(in_top2[~confident].mean()) if (~confident).any() else float("nan"),
        )
    return EvaluationReport(
        labels=list(labels),
        n_clips=int(y.size),
        n_speakers=n_speakers,
        class_counts={label: int(np.sum(y == i)) for i, label in enumerate(labels)},
        feature_config=dict(feature_config) if feature_config is not None else None,
        preset=preset,
        mlp_params={k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        scaler=scaler,
        random_state=random_state,
        random=random_result,
        speaker=speaker_result,
        normalization=normalization,
        variants=variant_results,
        calibration=calibration,
        selected=[o["selected"] for o in spk if o["selected"] is not None],
        augment=sorted(augment or {}),
    )


def _figure(width: float, height: float) -> Any:
    # The object-oriented API with an explicit Agg canvas: no pyplot, no
    # global backend switch, safe in threads and on headless servers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_confusion_matrix(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """PNG of both protocols' pooled confusion matrices, row-normalised.

    Parameters
    ----------
    report : EvaluationReport
    path : str or os.PathLike
        Output ``.png`` file; its folder must exist.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    labels = report.labels
    fig = _figure(6.0 * 2, 5.2)
    axes = fig.subplots(1, 2)
    for ax, p in zip(axes, (report.random, report.speaker), strict=True):
        counts = np.asarray(p.confusion, dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        image = ax.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{p.description}\nUAR {p.uar:.3f}, accuracy {p.accuracy:.3f}", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="recall (row-normalised)")
    fig.savefig(path, format="png")
    return Path(path)


def plot_loss_curves(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """PNG of the MLP's training loss per epoch for every fitted model.

    Parameters
    ----------
    report : EvaluationReport
    path : str or os.PathLike
        Output ``.png`` file; its folder must exist.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _figure(7.0, 4.5)
    ax = fig.subplots()
    for k, fold in enumerate(report.speaker.folds):
        ax.plot(range(1, len(fold.loss_curve) + 1), fold.loss_curve, lw=1, alpha=0.8,
                label=f"speaker fold {k + 1} (test {', '.join(fold.test_speakers)})")  # fmt: skip
    rnd = report.random.folds[0]
    ax.plot(range(1, len(rnd.loss_curve) + 1), rnd.loss_curve, "k--", lw=1.5, label="random split")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy + L2)")
    ax.set_yscale("log")
    ax.set_title(f"MLP training loss, preset {report.preset}")
    ax.legend(fontsize=6, loc="upper right")
    fig.savefig(path, format="png")
    return Path(path)


def write_report(report: EvaluationReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, ``confusion_matrix.png`` and ``loss_curve.png``.

    Parameters
    ----------
    report : EvaluationReport
    out_dir : str or os.PathLike
        Folder, created if missing.

    Returns
    -------
    dict of str to pathlib.Path
        Keys ``json``, ``confusion``, ``loss``.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return {
        "json": json_path,
        "confusion": plot_confusion_matrix(report, folder / "confusion_matrix.png"),
        "loss": plot_loss_curves(report, folder / "loss_curve.png"),
    }
