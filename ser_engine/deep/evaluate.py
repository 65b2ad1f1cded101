"""The MLP's evaluation protocols for the CRNN, with the same splits and report objects.

:func:`evaluate_crnn` is :func:`ser_engine.evaluation.evaluate` for the
CRNN: one stratified random split (same seed) and the same
``GroupKFold`` over speakers, scored by the same functions into an
:class:`~ser_engine.evaluation.EvaluationReport`.  :func:`evaluate_crnn_loco`
is :func:`ser_engine.evaluation.evaluate_loco`: for each corpus, train on
the others and score it into a :class:`~ser_engine.evaluation.CrossCorpusReport`.

Every fold's network is exported to ONNX and scored with onnxruntime
(:class:`~ser_engine.deep.onnx_model.CRNNModel`): the numbers are those of
the model the bot would run.  The CRNN has no speaker normalisation (each
clip's bands are mean-normalised on their own), so a corpus' "known
speakers" scores do not exist (``None``) and there is no ``fallback``
variant; no temperature is fitted (1.0), so its ECE is that of the raw
softmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..evaluation import CrossCorpusReport, EvaluationReport, _corpus_result, _protocol
from .frames import FrameConfig
from .onnx_model import CRNNModel, crnn_from_network
from .train import CRNNConfig, fit_crnn

__all__ = ["evaluate_crnn", "evaluate_crnn_loco", "fit_crnn_model"]


def _subset(frames: Sequence[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    return [frames[int(i)] for i in rows]


def fit_crnn_model(
    frames: Sequence[np.ndarray],
    y: np.ndarray,
    labels: Sequence[str],
    config: CRNNConfig,
    frame_config: FrameConfig,
    *,
    augment: Mapping[str, Sequence[np.ndarray]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[CRNNModel, list[float]]:
    """Train (:func:`~ser_engine.deep.train.fit_crnn`) and export to ONNX in one step.

    Parameters
    ----------
    frames : sequence of np.ndarray, each shape (n_frames_i, n_mels)
    y : np.ndarray, shape (n_clips,), int
    labels : sequence of str
        All class names (the output layer has one unit per label).
    config : CRNNConfig
    frame_config : FrameConfig
        Of ``frames``.
    augment : mapping of str to sequence of np.ndarray, optional
        Degraded versions of the same clips.
    metadata : mapping, optional
        Stored with the model.
    progress : bool, default False

    Returns
    -------
    model : CRNNModel
    losses : list of float
        Mean training loss per epoch.
    """
    net, losses = fit_crnn(frames, y, len(labels), config, augment=augment, progress=progress)
    return crnn_from_network(net, labels, frame_config, config.crop_frames, metadata), losses


def _fold(
    frames: Sequence[np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    labels: Sequence[str],
    config: CRNNConfig,
    frame_config: FrameConfig,
    augment: Mapping[str, Sequence[np.ndarray]],
) -> dict[str, Any]:
    model, losses = fit_crnn_model(_subset(frames, train), y[train], labels, config, frame_config,
                                   augment={c: _subset(v, train) for c, v in augment.items()} or None)  # fmt: skip
    return {"proba": model.predict_proba(_subset(frames, test)), "loss": losses}


def _run(jobs: list[tuple[Any, ...]], n_jobs: int) -> list[dict[str, Any]]:
    if n_jobs == 1:
        return [_fold(*j) for j in jobs]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs)(delayed(_fold)(*j) for j in jobs)


def _check(frames: Sequence[np.ndarray], y: np.ndarray, augment: Mapping[str, Sequence[np.ndarray]] | None,
           what: str) -> dict[str, Sequence[np.ndarray]]:  # fmt: skip
    if len(frames) != y.size:
        raise ValueError(f"{what}: {len(frames)} clips of frames, {y.size} labels")
    augment = dict(augment or {})
    for name, v in augment.items():
        if len(v) != y.size:
            raise ValueError(f"{what}: augmentation {name!r} has {len(v)} clips, expected {y.size}")
    return augment


def evaluate_crnn(
    frames: Sequence[np.ndarray],
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    labels: Sequence[str],
    config: CRNNConfig | None = None,
    frame_config: FrameConfig | None = None,
    folds: int = 6,
    test_size: float = 0.25,
    random_state: int | None = 0,
    augment: Mapping[str, Sequence[np.ndarray]] | None = None,
    n_jobs: int = 1,
) -> EvaluationReport:
    """Score the CRNN under ``ser evaluate``'s two protocols (random split and speaker folds).

    Parameters
    ----------
    frames : sequence of np.ndarray, each shape (n_frames_i, n_mels)
        Log-mel frames of each clip (:func:`~ser_engine.deep.frames.clip_frames`).
    y : np.ndarray, shape (n_clips,), int
        Class indices into ``labels``.
    groups : sequence of str, shape (n_clips,)
        Speaker of each clip.
    labels : sequence of str
    config : CRNNConfig, optional
    frame_config : FrameConfig, optional
        Of ``frames`` (recorded in the report).
    folds : int, default 6
        ``GroupKFold`` folds over speakers, as :func:`ser_engine.evaluation.evaluate`.
    test_size : float, default 0.25
        Test share of the random split (``train_test_split`` stratified, seed ``random_state``).
    random_state : int or None, default 0
    augment : mapping of str to sequence of np.ndarray, optional
        Degraded versions of every clip; each model trains on those of its training clips only.
    n_jobs : int, default 1
        joblib processes over the 1 + ``folds`` models.

    Returns
    -------
    EvaluationReport
        ``preset`` ``"crnn"``, ``mlp_params`` the CRNN configuration
        (``max_iter`` = epochs), normalisation ``"none"``, no calibration.

    Raises
    ------
    ValueError
        If lengths disagree or ``folds`` is not in 2..number of speakers.
    """
    from sklearn.model_selection import GroupKFold, train_test_split

    config = config or CRNNConfig()
    frame_config = frame_config or FrameConfig()
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    augment = _check(frames, y, augment, "evaluate_crnn")
    n_speakers = len(set(groups.tolist()))
    if not 2 <= folds <= n_speakers:
        raise ValueError(f"evaluate_crnn: need 2 <= folds <= number of speakers ({n_speakers}), got {folds}")
    index = np.arange(y.size)
    train, test = train_test_split(index, test_size=test_size, stratify=y, random_state=random_state)
    random_splits = [(np.sort(train), np.sort(test))]
    speaker_splits = list(GroupKFold(n_splits=folds).split(index, y, groups))
    splits = random_splits + speaker_splits
    outputs = _run([(frames, y, tr, te, labels, config, frame_config, augment) for tr, te in splits], n_jobs)

    def as_tuples(outs: list[dict[str, Any]]) -> list[tuple[np.ndarray, int, bool, list[float]]]:
        return [(o["proba"].argmax(axis=1), config.epochs, True, o["loss"]) for o in outs]

    share = f"{round((1 - test_size) * 100)}/{round(test_size * 100)}"
    return EvaluationReport(
        labels=list(labels), n_clips=int(y.size), n_speakers=n_speakers,
        class_counts={label: int(np.sum(y == i)) for i, label in enumerate(labels)},
        feature_config={"log_mel_frames": frame_config.to_dict()}, preset="crnn",
        mlp_params={**config.to_dict(), "max_iter": config.epochs}, scaler=False, random_state=random_state,
        random=_protocol("random", f"random stratified {share} split", random_splits, as_tuples(outputs[:1]), y,
                         groups, labels),
        speaker=_protocol("speaker", f"speaker-independent {folds}-fold (pooled)", speaker_splits,
                          as_tuples(outputs[1:]), y, groups, labels),
        normalization="none", augment=sorted(augment),
        recipe={"model": "crnn", "crnn": config.to_dict(), "frames": frame_config.to_dict(), "augment": sorted(augment)},
    )  # fmt: skip


def evaluate_crnn_loco(
    frames: Sequence[np.ndarray],
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    corpora: Sequence[str] | np.ndarray,
    *,
    labels: Sequence[str],
    config: CRNNConfig | None = None,
    frame_config: FrameConfig | None = None,
    augment: Mapping[str, Sequence[np.ndarray]] | None = None,
    unsure_below: float = 0.5,
    n_jobs: int = 1,
    max_clips_per_corpus: int | None = None,
) -> CrossCorpusReport:
    """Leave one corpus out with the CRNN, as :func:`ser_engine.evaluation.evaluate_loco` does with the MLP.

    Parameters
    ----------
    frames : sequence of np.ndarray, each shape (n_frames_i, n_mels)
    y : np.ndarray, shape (n_clips,), int
    groups : sequence of str, shape (n_clips,)
        Speakers.
    corpora : sequence of str, shape (n_clips,)
        Corpus of each clip; at least two distinct.
    labels : sequence of str
    config : CRNNConfig, optional
    frame_config : FrameConfig, optional
    augment : mapping of str to sequence of np.ndarray, optional
        Degraded versions of every clip (training rows only are used).
    unsure_below : float, default 0.5
        Threshold of the ``unsure`` share.
    n_jobs : int, default 1
        joblib processes over the held-out corpora.
    max_clips_per_corpus : int, optional
        Recorded in the report (the caller subsets).

    Returns
    -------
    CrossCorpusReport
        Only "new speaker" scores (``known`` None: no speaker statistics); temperatures 1.0.

    Raises
    ------
    ValueError
        If lengths disagree or fewer than two corpora are given.
    """
    config = config or CRNNConfig()
    frame_config = frame_config or FrameConfig()
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    corpora = np.asarray([str(c) for c in corpora])
    augment = _check(frames, y, augment, "evaluate_crnn_loco")
    if corpora.shape != y.shape or groups.shape != y.shape:
        raise ValueError(f"evaluate_crnn_loco: y {y.shape}, groups {groups.shape}, corpora {corpora.shape}")
    names = list(dict.fromkeys(corpora.tolist()))
    if len(names) < 2:
        raise ValueError(f"evaluate_crnn_loco: needs at least two corpora, got {names}")
    splits = [(np.flatnonzero(corpora != name), np.flatnonzero(corpora == name)) for name in names]
    outputs = _run([(frames, y, tr, te, labels, config, frame_config, augment) for tr, te in splits], n_jobs)
    rows = [
        _corpus_result(name, y[te], groups[te], labels, {"new": out["proba"]}, {}, unsure_below, n_train=int(tr.size))
        for name, (tr, te), out in zip(names, splits, outputs, strict=True)
    ]
    aug = ", ".join(sorted(augment)) or "none"
    return CrossCorpusReport(
        protocol="loco",
        description=(f"leave-one-corpus-out over {', '.join(names)}: each corpus scored by the CRNN trained on the "
                     f"others (log-mel frames, {config.epochs} epochs, augmentation {aug}, no temperature)"),
        labels=list(labels), rows=rows, unsure_below=float(unsure_below), max_clips_per_corpus=max_clips_per_corpus,
        recipe={"model": "crnn", "crnn": config.to_dict(), "frames": frame_config.to_dict(), "augment": sorted(augment)},
        temperatures={name: 1.0 for name in names},
    )  # fmt: skip
