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

Across corpora (issue 12), :class:`CrossCorpusReport` with one row per corpus:

``loco``
    Leave one corpus out (:func:`evaluate_loco`): for each corpus, the
    recipe is trained on all the others and scores it.
``score``
    An existing model bundle scored on corpora it never saw
    (:func:`score_bundle`), e.g. the shipped RAVDESS model as the baseline.

Each row gives UAR over the emotions that corpus has and over the four
every corpus has (:data:`COMMON_EMOTIONS`), for new speakers (fallback
statistics) and known ones (their own statistics), with ECE and the share
of unsure answers (:func:`score_held_out`).

Everything works on a precomputed feature matrix, so features are
extracted once per run (see :func:`ser_engine.training.featurize`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)
from sklearn.model_selection import GroupKFold, train_test_split

from .bundle import ModelBundle, _json_default
from .calibration import expected_calibration_error, fit_temperature, inner_oof, normalise_split, scored_rows
from .predict import apply_temperature
from .recipe import Recipe, RecipeModel
from .training import build_pipeline, fit_pipeline, mlp_params

__all__ = [
    "COMMON_EMOTIONS",
    "CalibrationResult",
    "CorpusResult",
    "CrossCorpusReport",
    "EvaluationReport",
    "FoldResult",
    "HeldOutScore",
    "ProtocolResult",
    "bundle_proba",
    "evaluate",
    "evaluate_loco",
    "expected_calibration_error",
    "fit_temperature",
    "plot_confusion_matrix",
    "plot_loss_curves",
    "score",
    "score_bundle",
    "score_held_out",
    "stratified_subset",
    "write_cross_report",
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
            lines.append(f"{'  clips':<{col}} {'accuracy':>9} {'macro-F1':>9} {'UAR':>7}  {'acc. drop':>9} {'UAR drop':>9}")
            sp = self.speaker
            lines.append(f"{'  clean (as above)':<{col}} {sp.accuracy_mean:>9.3f} {sp.macro_f1_mean:>9.3f} {sp.uar_mean:>7.3f}")
            for name, p in self.variants.items():
                what = "fallback stats only (new speaker)" if name == "fallback" else name
                lines.append(
                    f"{'  ' + what:<{col}} {p.accuracy_mean:>9.3f} {p.macro_f1_mean:>9.3f} {p.uar_mean:>7.3f}"
                    f"  {100 * (p.accuracy_mean - sp.accuracy_mean):>+8.1f}pt {100 * (p.uar_mean - sp.uar_mean):>+7.1f}pt"
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


# ------------------------------------------------------------ across corpora
#: The emotions every corpus of ``../shared/data`` has (issue 12: RAVDESS, nEMO, ASED, EMOVO, URDU,
#: emotiontts): cross-corpus scores on these four are comparable between corpora (chance 0.25).
COMMON_EMOTIONS: Final[tuple[str, ...]] = ("angry", "happy", "neutral", "sad")


@dataclass
class HeldOutScore:
    """Scores of one held-out corpus, its speakers normalised one way.

    Attributes
    ----------
    n_clips : int
        Clips scored.
    uar, macro_f1, accuracy : float
        Over the emotions the corpus has, the answer being the argmax over
        every output of the model (answering an emotion the corpus lacks,
        e.g. ``calm`` for nEMO, counts as an error).
    per_class_recall : dict of str to float
        Recall of each emotion the corpus has; emotions it lacks are left
        out (masked), not scored 0.
    uar4, macro_f1_4, accuracy4 : float
        On the clips of :data:`COMMON_EMOTIONS` only, answered by the argmax
        over those four classes' probabilities renormalised to sum to 1 (the
        model's other outputs folded out); UAR over the ones the corpus has.
        NaN if it has none.
    ece, ece4 : float
        Expected calibration error (15 equal-width bins,
        :func:`ser_engine.calibration.expected_calibration_error`) of the
        calibrated probabilities, all outputs / the renormalised four.
    unsure : float
        Share of clips whose confidence (largest calibrated probability of
        all outputs) is below the recipe's ``unsure_below``.
    confident_accuracy : float
        Accuracy of the other clips (NaN if every answer is unsure).
    """

    n_clips: int
    uar: float
    macro_f1: float
    accuracy: float
    per_class_recall: dict[str, float]
    uar4: float
    macro_f1_4: float
    accuracy4: float
    ece: float
    ece4: float
    unsure: float
    confident_accuracy: float


def score_held_out(
    proba: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    unsure_below: float,
    common: Sequence[str] = COMMON_EMOTIONS,
) -> HeldOutScore:
    """Score calibrated probabilities of one held-out corpus (:class:`HeldOutScore`).

    Parameters
    ----------
    proba : np.ndarray, shape (n_clips, len(labels))
        Calibrated class probabilities, rows summing to 1 (a column of a
        class the model never saw holds 0).
    y : np.ndarray, shape (n_clips,), int
        True class indices into ``labels``.
    labels : sequence of str
        The model's classes.
    unsure_below : float
        Confidence threshold of the unsure flag.
    common : sequence of str, default :data:`COMMON_EMOTIONS`
        Classes of the folded-out scores (``uar4`` ...); those missing from
        ``labels`` are ignored.

    Returns
    -------
    HeldOutScore

    Raises
    ------
    ValueError
        If shapes disagree or ``y`` is empty.
    """
    P = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if P.ndim != 2 or P.shape != (y.size, len(labels)) or y.size == 0:
        raise ValueError(f"score_held_out: proba {P.shape}, y {y.shape}, {len(labels)} labels disagree or are empty")
    present = np.unique(y)
    pred = P.argmax(axis=1)
    recall = recall_score(y, pred, labels=present, average=None, zero_division=0)
    conf = P.max(axis=1)
    confident = conf >= unsure_below
    correct = pred == y
    nan = float("nan")
    uar4 = f1_4 = acc4 = ece4 = nan
    cols = np.array([labels.index(e) for e in common if e in labels], dtype=np.int64)
    rows = np.isin(y, cols)
    if rows.any():
        P4 = P[np.ix_(rows, cols)]
        total = P4.sum(axis=1, keepdims=True)
        # A model that gives all four ~0 (it never learnt them) answers uniformly among them.
        P4 = np.where(total > 0, P4 / np.where(total > 0, total, 1.0), 1.0 / cols.size)
        position = {int(c): k for k, c in enumerate(cols)}
        y4 = np.array([position[int(v)] for v in y[rows]], dtype=np.int64)
        pred4 = P4.argmax(axis=1)
        present4 = np.unique(y4)
        uar4 = float(recall_score(y4, pred4, labels=present4, average="macro", zero_division=0))
        f1_4 = float(f1_score(y4, pred4, labels=present4, average="macro", zero_division=0))
        acc4 = float(np.mean(pred4 == y4))
        ece4 = expected_calibration_error(P4, y4)
    return HeldOutScore(
        n_clips=int(y.size),
        uar=float(np.mean(recall)),
        macro_f1=float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        accuracy=float(np.mean(correct)),
        per_class_recall={labels[int(k)]: float(r) for k, r in zip(present, recall, strict=True)},
        uar4=uar4,
        macro_f1_4=f1_4,
        accuracy4=acc4,
        ece=expected_calibration_error(P, y),
        ece4=ece4,
        unsure=float(1.0 - confident.mean()),
        confident_accuracy=float(correct[confident].mean()) if confident.any() else nan,
    )


@dataclass
class CorpusResult:
    """One held-out corpus: its scores for new and for known speakers, clean and degraded.

    Attributes
    ----------
    corpus : str
        ``Clip.corpus``.
    n_clips, n_speakers : int
        Of the held-out corpus (as scored).
    n_train : int
        Clean clips the model trained on (0 when an existing model is scored).
    labels : list of str
        Emotions the corpus has.
    new : HeldOutScore
        Every speaker new: features normalised with the training speakers'
        fallback statistics (what the bot does for a user's first notes).
    known : HeldOutScore or None
        Each speaker normalised with the statistics of their own (unlabelled)
        clips; None where that measures nothing (``own_speaker_stats``
        False in :data:`ser_engine.corpora.CORPORA`, e.g. URDU, whose
        speakers mostly have one emotion each).
    conditions : dict of str to dict of str to HeldOutScore
        Condition (e.g. ``"phone"``) -> ``{"new": ..., "known": ...}``
        (``"known"`` absent when ``known`` is None): the same model on the
        held-out clips degraded that way.
    """

    corpus: str
    n_clips: int
    n_speakers: int
    n_train: int
    labels: list[str]
    new: HeldOutScore
    known: HeldOutScore | None
    conditions: dict[str, dict[str, HeldOutScore]] = field(default_factory=dict)


#: Fields of :class:`HeldOutScore` averaged into the ``mean`` row.
_MEAN_KEYS: Final[tuple[str, ...]] = ("uar", "macro_f1", "accuracy", "uar4", "macro_f1_4", "accuracy4", "ece",
                                      "ece4", "unsure", "confident_accuracy")  # fmt: skip


def _mean_scores(scores: Sequence[HeldOutScore]) -> dict[str, float]:
    out = {}
    for key in _MEAN_KEYS:
        values = np.array([getattr(s, key) for s in scores], dtype=np.float64)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


@dataclass
class CrossCorpusReport:
    """Scores of held-out corpora, one :class:`CorpusResult` each; JSON-serialisable.

    Attributes
    ----------
    protocol : str
        ``"loco"`` (leave one corpus out: train on the others, score it) or
        ``"score"`` (an existing model on corpora it never saw).
    description : str
        One line saying what was trained and scored.
    labels : list of str
        The model's classes.
    rows : list of CorpusResult
        One per corpus, in the order given.
    unsure_below : float
        Confidence threshold of ``unsure``.
    conditions : list of str
        Degradations the held-out clips were also scored under.
    max_clips_per_corpus : int or None
        Stratified subset size per corpus, None for every clip.
    recipe : dict or None
        :meth:`ser_engine.recipe.Recipe.to_dict` of the recipe trained (``loco``).
    model : dict or None
        ``path``, ``model_version`` and ``temperature`` of the scored bundle (``score``).
    temperatures : dict of str to float
        ``loco``: held-out corpus -> the temperature the recipe fitted on the other corpora.
    """

    protocol: str
    description: str
    labels: list[str]
    rows: list[CorpusResult]
    unsure_below: float
    conditions: list[str] = field(default_factory=list)
    max_clips_per_corpus: int | None = None
    recipe: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    temperatures: dict[str, float] = field(default_factory=dict)

    def mean(self) -> dict[str, Any]:
        """Unweighted means over corpora (NaN entries skipped).

        Returns
        -------
        dict
            ``{"new": {...}, "known": {...}, "min_uar4_new": float}``: the
            :data:`_MEAN_KEYS` means for new speakers, for known ones (over
            the corpora scored that way) and the lowest 4-emotion UAR of a
            new speaker (the issue's "no corpus below 0.40").
        """
        known = [r.known for r in self.rows if r.known is not None]
        uar4 = [r.new.uar4 for r in self.rows if np.isfinite(r.new.uar4)]
        return {
            "new": _mean_scores([r.new for r in self.rows]),
            "known": _mean_scores(known) if known else {},
            "min_uar4_new": float(min(uar4)) if uar4 else float("nan"),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, numbers and strings (``json.dumps``-able), with the ``mean`` added."""
        out = json.loads(json.dumps(asdict(self), default=_json_default))
        out["mean"] = json.loads(json.dumps(self.mean(), default=_json_default))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrossCorpusReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. a ``report.json``; its ``mean`` is recomputed).

        Raises
        ------
        KeyError, TypeError
            If ``data`` is not such a dict.
        """

        def held_out(d: Mapping[str, Any] | None) -> HeldOutScore | None:
            return None if d is None else HeldOutScore(**d)

        fields_ = {k: v for k, v in data.items() if k != "mean"}
        rows = []
        for r in data["rows"]:
            conditions = {c: {k: held_out(v) for k, v in m.items()} for c, m in r["conditions"].items()}
            rows.append(CorpusResult(**{**r, "new": held_out(r["new"]), "known": held_out(r["known"]),
                                        "conditions": conditions}))  # fmt: skip
        fields_["rows"] = rows
        return cls(**fields_)

    def table(self) -> str:
        """A plain-text table: one row per corpus and the mean; then one block per condition.

        Returns
        -------
        str
            Several lines, no trailing newline.
        """

        def num(value: float | None, width: int = 6) -> str:
            return f"{'-':>{width}}" if value is None or not np.isfinite(value) else f"{value:>{width}.3f}"

        head = (
            f"{'corpus':<12} {'clips':>6} {'spk':>4} {'emo':>3} |{'UAR':>6} {'UAR4':>6} {'F1':>6} {'acc':>6}"
            f" |{'UAR':>6} {'UAR4':>6} |{'ECE':>6} {'ECE4':>6} {'unsure':>6} {'c.acc':>6}"
        )
        lines = [
            self.description,
            (
                f"UAR over the emotions each corpus has; UAR4 over {'/'.join(COMMON_EMOTIONS)} (other outputs folded "
                f"out, chance 0.25); ECE 15 bins; unsure: confidence below {self.unsure_below:.2f}, c.acc: accuracy "
                "of the confident answers"
            ),
            f"{'':<29}| {'new speakers (global statistics)':<28}| {'known spk.':<13}| new speakers",
            head,
        ]

        def row(
            name: str, clips: str, spk: str, emo: str, new: Mapping[str, float], known: Mapping[str, float] | None
        ) -> str:
            k = known or {}
            return (
                f"{name:<12} {clips:>6} {spk:>4} {emo:>3} |{num(new['uar'])} {num(new['uar4'])} {num(new['macro_f1'])}"
                f" {num(new['accuracy'])} |{num(k.get('uar'))} {num(k.get('uar4'))} |{num(new['ece'])}"
                f" {num(new['ece4'])} {num(new['unsure'])} {num(new['confident_accuracy'])}"
            )

        for r in self.rows:
            lines.append(row(r.corpus, str(r.n_clips), str(r.n_speakers), str(len(r.labels)), asdict(r.new),
                             None if r.known is None else asdict(r.known)))  # fmt: skip
        mean = self.mean()
        lines.append(row("mean", str(sum(r.n_clips for r in self.rows)), str(sum(r.n_speakers for r in self.rows)),
                         "", mean["new"], mean["known"] or None))  # fmt: skip
        lines.append(f"lowest UAR4 (new speakers): {num(mean['min_uar4_new'], 0).strip()}")
        skipped = [r.corpus for r in self.rows if r.known is None]
        if skipped:
            lines.append(f"known speakers not scored for {', '.join(skipped)}: its speakers are tied to one emotion "
                         "(own statistics would erase it)")  # fmt: skip
        for condition in self.conditions:
            lines += [
                "",
                f"condition {condition} (vs clean: change in points, negative = worse); new speakers | known:",
                f"{'corpus':<12} |{'UAR':>6} {'vs cl':>6} {'UAR4':>6} {'vs cl':>6} {'ECE':>6} |{'UAR':>6} {'vs cl':>6}",
            ]
            drops_new: list[float] = []
            drops4_new: list[float] = []
            for r in self.rows:
                c = r.conditions.get(condition, {})
                n = c.get("new")
                if n is None:
                    continue
                kn = c.get("known")
                d4 = 100 * (n.uar4 - r.new.uar4)
                drops_new.append(100 * (n.uar - r.new.uar))
                drops4_new.append(d4)
                k_text = (f" |{num(kn.uar)} {100 * (kn.uar - r.known.uar):>+6.1f}" if kn is not None and r.known
                          else f" |{num(None)} {num(None)}")  # fmt: skip
                lines.append(
                    f"{r.corpus:<12} |{num(n.uar)} {100 * (n.uar - r.new.uar):>+6.1f} {num(n.uar4)} "
                    f"{d4 if np.isfinite(d4) else float('nan'):>+6.1f} {num(n.ece)}{k_text}"
                )
            if drops_new:
                mean4 = float(np.nanmean(drops4_new)) if np.isfinite(drops4_new).any() else float("nan")
                lines.append(f"{'mean':<12} |{'':>6} {float(np.mean(drops_new)):>+6.1f} {'':>6} {mean4:>+6.1f}")
        return "\n".join(lines)


def stratified_subset(clips: Sequence[Any], max_per_corpus: int, seed: int = 0) -> list[Any]:
    """At most ``max_per_corpus`` clips of each corpus, stratified by emotion, reproducibly.

    Parameters
    ----------
    clips : sequence of Clip
        Clips of one or more corpora (``Clip.corpus``, ``Clip.label``).
    max_per_corpus : int
        Clips kept per corpus (all of a smaller corpus).
    seed : int, default 0
        Seed of the draw (``sklearn.model_selection.train_test_split``).

    Returns
    -------
    list of Clip
        In the input order.

    Raises
    ------
    ValueError
        If ``max_per_corpus`` < 1.
    """
    if max_per_corpus < 1:
        raise ValueError(f"stratified_subset: max_per_corpus must be >= 1, got {max_per_corpus}")
    keep: set[int] = set()
    for corpus in dict.fromkeys(c.corpus for c in clips):
        idx = np.array([i for i, c in enumerate(clips) if c.corpus == corpus])
        if idx.size <= max_per_corpus:
            keep.update(idx.tolist())
            continue
        strata = np.array([clips[i].label for i in idx])
        try:
            chosen, _ = train_test_split(idx, train_size=max_per_corpus, stratify=strata, random_state=seed)
        except ValueError:  # fewer clips than classes or a one-clip class: a plain draw
            chosen = np.random.default_rng(seed).choice(idx, size=max_per_corpus, replace=False)
        keep.update(int(i) for i in chosen)
    return [c for i, c in enumerate(clips) if i in keep]


def _full_proba(P: np.ndarray, classes: np.ndarray, n_labels: int) -> np.ndarray:
    out = np.zeros((P.shape[0], n_labels))
    out[:, classes] = P
    return out


def _loco_fold(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    recipe: Recipe,
    augment: Mapping[str, np.ndarray],
    variants: Mapping[str, np.ndarray],
    n_labels: int,
    known: bool,
    corpora: np.ndarray,
) -> dict[str, Any]:
    model = RecipeModel(recipe).fit(X[train], y[train], groups[train],
                                    augment={c: A[train] for c, A in augment.items()} or None,
                                    corpora=corpora[train])  # fmt: skip

    def both(Z: np.ndarray) -> dict[str, np.ndarray]:
        out = {"new": _full_proba(model.predict_proba(Z), model.classes_, n_labels)}
        if known:
            out["known"] = _full_proba(model.predict_proba(Z, groups[test]), model.classes_, n_labels)
        return out

    return {
        "clean": both(X[test]),
        "conditions": {c: both(V[test]) for c, V in variants.items()},
        "temperature": model.temperature_,
    }


def evaluate_loco(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    corpora: Sequence[str] | np.ndarray,
    *,
    labels: Sequence[str],
    recipe: Recipe,
    augment: Mapping[str, np.ndarray] | None = None,
    variants: Mapping[str, np.ndarray] | None = None,
    own_speaker_stats: Mapping[str, bool] | None = None,
    n_jobs: int = 1,
    max_clips_per_corpus: int | None = None,
) -> CrossCorpusReport:
    """Leave one corpus out: for each corpus, train the recipe on the others and score it.

    Each model is :class:`ser_engine.recipe.RecipeModel` fitted exactly as
    ``ser train`` fits the recipe (speaker normalisation of the training
    speakers, the degraded copies of ``augment``, the temperature from inner
    speaker folds), on every clip of the other corpora.  The held-out
    corpus is scored for new speakers (fallback statistics) and for known
    ones (each speaker's own clips), see :class:`CorpusResult`; training on
    several corpora and scoring one never seen is the cross-corpus protocol
    of Schuller et al. (2010), "Cross-corpus acoustic emotion recognition:
    variances and strategies", IEEE TAC 1(2).

    Parameters
    ----------
    X : np.ndarray, shape (n_clips, n_features)
        Raw features of the clean clips of every corpus.
    y : np.ndarray, shape (n_clips,), int
        Class indices into ``labels``.
    groups : sequence of str, shape (n_clips,)
        Speaker of each clip (unique across corpora).
    corpora : sequence of str, shape (n_clips,)
        Corpus of each clip; at least two distinct.
    labels : sequence of str
        Class names (the union over corpora; a corpus without an emotion
        gives no examples of it).
    recipe : Recipe
        What to train.
    augment : mapping of str to np.ndarray, shape (n_clips, n_features), optional
        The recipe's degraded training copies (keys ⊇ ``recipe.augment``).
    variants : mapping of str to np.ndarray, shape (n_clips, n_features), optional
        Condition -> features of the same clips degraded (scored, held-out rows only).
    own_speaker_stats : mapping of str to bool, optional
        Corpus -> whether known-speaker scores mean anything (default:
        :data:`ser_engine.corpora.CORPORA`, True for corpora it lacks).
    n_jobs : int, default 1
        Fit the held-out folds in this many joblib processes.
    max_clips_per_corpus : int, optional
        Recorded in the report (the caller subsets).

    Returns
    -------
    CrossCorpusReport

    Raises
    ------
    ValueError
        If shapes disagree, fewer than two corpora are given, or an
        augmentation of the recipe is missing.
    """
    from .corpora import corpus_info

    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    corpora = np.asarray([str(c) for c in corpora])
    if X.ndim != 2 or not y.shape == groups.shape == corpora.shape == (X.shape[0],):
        raise ValueError(f"evaluate_loco: X {X.shape}, y {y.shape}, groups {groups.shape}, corpora {corpora.shape}")
    names = list(dict.fromkeys(corpora.tolist()))
    if len(names) < 2:
        raise ValueError(f"evaluate_loco: needs at least two corpora, got {names}")
    augment = {c: np.asarray((augment or {})[c]) for c in recipe.augment if c in (augment or {})}
    missing = [c for c in recipe.augment if c not in augment]
    if missing:
        raise ValueError(f"evaluate_loco: no features for the augmentation(s) {missing}")
    variants = dict(variants or {})
    for name, V in {**augment, **variants}.items():
        if np.shape(V) != X.shape:
            raise ValueError(f"evaluate_loco: {name!r} has shape {np.shape(V)}, expected {X.shape}")

    def has_own_stats(name: str) -> bool:
        if own_speaker_stats is not None and name in own_speaker_stats:
            return bool(own_speaker_stats[name])
        info = corpus_info(name)
        return True if info is None else info.own_speaker_stats

    # The recipe's own corpus list names what ``ser train`` trains on; here every other corpus given trains
    # (its balance and its left-out-corpus temperature then run over them).
    recipe = replace(recipe, corpora=())
    n_labels = len(labels)
    jobs = [(np.flatnonzero(corpora != name), np.flatnonzero(corpora == name), has_own_stats(name)) for name in names]
    if n_jobs == 1:
        outputs = [_loco_fold(X, y, groups, tr, te, recipe, augment, variants, n_labels, kn, corpora)
                   for tr, te, kn in jobs]
    else:
        from joblib import Parallel, delayed

        outputs = Parallel(n_jobs=n_jobs)(
            delayed(_loco_fold)(X, y, groups, tr, te, recipe, augment, variants, n_labels, kn, corpora) for tr, te, kn in jobs
        )
    rows = []
    for name, (train, test, _), out in zip(names, jobs, outputs, strict=True):
        rows.append(_corpus_result(name, y[test], groups[test], labels, out["clean"], out["conditions"],
                                   recipe.unsure_below, n_train=int(train.size)))  # fmt: skip
    return CrossCorpusReport(
        protocol="loco",
        description=(
            f"leave-one-corpus-out over {', '.join(names)}: each corpus scored by the recipe trained on the others "
            f"({recipe.describe()})"
        ),
        labels=list(labels),
        rows=rows,
        unsure_below=recipe.unsure_below,
        conditions=list(variants),
        max_clips_per_corpus=max_clips_per_corpus,
        recipe=recipe.to_dict(),
        temperatures={name: float(out["temperature"]) for name, out in zip(names, outputs, strict=True)},
    )


def _corpus_result(
    name: str,
    y: np.ndarray,
    groups: np.ndarray,
    labels: Sequence[str],
    clean: Mapping[str, np.ndarray],
    conditions: Mapping[str, Mapping[str, np.ndarray]],
    unsure_below: float,
    n_train: int,
) -> CorpusResult:
    def scores(probas: Mapping[str, np.ndarray]) -> dict[str, HeldOutScore]:
        return {k: score_held_out(P, y, list(labels), unsure_below=unsure_below) for k, P in probas.items()}

    base = scores(clean)
    return CorpusResult(
        corpus=name,
        n_clips=int(y.size),
        n_speakers=len(set(groups.tolist())),
        n_train=n_train,
        labels=[labels[int(k)] for k in np.unique(y)],
        new=base["new"],
        known=base.get("known"),
        conditions={c: scores(p) for c, p in conditions.items()},
    )


def bundle_proba(bundle: ModelBundle, X: np.ndarray, groups: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Calibrated probabilities of a bundle for raw feature rows, as :class:`~ser_engine.predict.Predictor` gives them.

    Parameters
    ----------
    bundle : ModelBundle
    X : np.ndarray, shape (n_rows, bundle.feature_config.n_features)
        Raw features (:func:`ser_engine.features.extract_features`).
    groups : sequence of str, shape (n_rows,), optional
        Speakers: each one's rows normalised with the statistics of those
        same rows (speakers with fewer than ``min_clips`` rows: fallback);
        None: every row with the fallback statistics (a new speaker).

    Returns
    -------
    np.ndarray, shape (n_rows, len(bundle.labels)), float64
        Temperature-scaled; a column of a class the model never saw holds 0.
    """
    Z = np.asarray(X, dtype=np.float32)
    nz = bundle.normalizer
    if nz is not None:
        Z = nz.transform(Z) if groups is None else nz.transform_groups(Z, np.asarray([str(g) for g in groups]))
    P = apply_temperature(bundle.pipeline.predict_proba(Z), bundle.temperature)
    return _full_proba(P, np.asarray(bundle.pipeline.classes_, dtype=np.int64), len(bundle.labels))


def score_bundle(
    bundle: ModelBundle,
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    corpora: Sequence[str] | np.ndarray,
    *,
    variants: Mapping[str, np.ndarray] | None = None,
    unsure_below: float | None = None,
    own_speaker_stats: Mapping[str, bool] | None = None,
    model_path: str | None = None,
    max_clips_per_corpus: int | None = None,
) -> CrossCorpusReport:
    """Score an existing model on corpora it never saw: the same table as :func:`evaluate_loco`.

    Parameters
    ----------
    bundle : ModelBundle
    X : np.ndarray, shape (n_clips, bundle.feature_config.n_features)
        Raw features of the clean clips.
    y : np.ndarray, shape (n_clips,), int
        Class indices into ``bundle.labels``.
    groups, corpora : sequence of str, shape (n_clips,)
        Speaker and corpus of each clip.
    variants : mapping of str to np.ndarray, shape (n_clips, n_features), optional
        Condition -> features of the same clips degraded that way.
    unsure_below : float, optional
        Default: the bundle's ``metadata["unsure_below"]`` (else 0.5).
    own_speaker_stats : mapping of str to bool, optional
        As :func:`evaluate_loco`.  Known-speaker scores also need a bundle
        that normalises per speaker.
    model_path : str, optional
        Recorded in the report.
    max_clips_per_corpus : int, optional
        Recorded in the report.

    Returns
    -------
    CrossCorpusReport

    Raises
    ------
    ValueError
        If shapes disagree.
    """
    from .corpora import corpus_info

    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    corpora = np.asarray([str(c) for c in corpora])
    if X.ndim != 2 or not y.shape == groups.shape == corpora.shape == (X.shape[0],):
        raise ValueError(f"score_bundle: X {X.shape}, y {y.shape}, groups {groups.shape}, corpora {corpora.shape}")
    variants = dict(variants or {})
    if unsure_below is None:
        unsure_below = float(bundle.metadata.get("unsure_below", 0.5))
    labels = list(bundle.labels)
    rows = []
    for name in dict.fromkeys(corpora.tolist()):
        idx = np.flatnonzero(corpora == name)
        info = corpus_info(name)
        own = own_speaker_stats.get(name) if own_speaker_stats and name in own_speaker_stats else (
            True if info is None else info.own_speaker_stats)  # fmt: skip
        known = bool(own) and bundle.normalizer is not None

        def both(Z: np.ndarray, idx: np.ndarray = idx, known: bool = known) -> dict[str, np.ndarray]:
            out = {"new": bundle_proba(bundle, Z[idx])}
            if known:
                out["known"] = bundle_proba(bundle, Z[idx], groups[idx])
            return out

        rows.append(_corpus_result(name, y[idx], groups[idx], labels, both(X),
                                   {c: both(V) for c, V in variants.items()}, unsure_below, n_train=0))  # fmt: skip
    return CrossCorpusReport(
        protocol="score",
        description=f"the model {model_path or bundle.model_version} scored on corpora it never saw",
        labels=labels,
        rows=rows,
        unsure_below=float(unsure_below),
        conditions=list(variants),
        max_clips_per_corpus=max_clips_per_corpus,
        model={"path": model_path, "model_version": bundle.model_version, "temperature": float(bundle.temperature)},
    )


def write_cross_report(report: CrossCorpusReport, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` (:meth:`CrossCorpusReport.to_dict`) into ``out_dir`` (created if missing).

    Returns
    -------
    pathlib.Path
        The JSON file.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
