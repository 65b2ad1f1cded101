"""``ser train --model crnn`` and ``ser evaluate --model crnn``: the CLI's CRNN paths.

The recipe flags mean what they mean for the MLP where they apply: the
corpora, ``--max-clips-per-corpus``, ``--emotions``, ``--augment`` (the same
degraded copies, seeded the same way), ``--seed``, ``--folds``,
``--unsure-below``, ``--jobs``, ``--cache-dir``; the MLP's own (preset,
features, speaker normalisation, calibration) do not apply.  ``--epochs``
sets the CRNN's training epochs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import SERError
from .frames import FRAMES_VERSION, FrameConfig, clip_frames
from .train import CRNNConfig

__all__ = ["crnn_config", "evaluate_command", "load_frames", "score_command", "train_command"]


def crnn_config(args: argparse.Namespace, recipe: Any) -> CRNNConfig:
    """The :class:`CRNNConfig` of the command line (``--epochs``, ``--seed``)."""
    epochs = getattr(args, "epochs", None) or CRNNConfig().epochs
    return CRNNConfig(epochs=int(epochs), seed=int(recipe.seed or 0))


def load_frames(clips: list[Any], conditions: list[str], frame_config: FrameConfig, *, n_jobs: int = 1,
                cache_dir: Path | None = None, progress: bool = False) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """Log-mel frames of the clips per condition, cached in ``cache_dir`` (one ``.npz`` per condition).

    Parameters
    ----------
    clips : list of Clip
    conditions : list of str
        ``"clean"`` and degradations of :data:`ser_engine.augment.CONDITIONS`.
    frame_config : FrameConfig
    n_jobs : int, default 1
    cache_dir : Path, optional
        Key: the data fingerprint, the file names in order, the frame
        configuration, the condition and :data:`~ser_engine.augment.CONDITIONS_VERSION`.
    progress : bool, default False

    Returns
    -------
    dict of str to list of np.ndarray, each shape (n_frames_i, n_mels)
    """
    from ..augment import CONDITIONS_VERSION
    from ..training import data_fingerprint

    out: dict[str, list[np.ndarray]] = {}
    files: dict[str, Path] = {}
    if cache_dir is not None and clips:
        base = data_fingerprint(clips) + json.dumps(frame_config.to_dict(), sort_keys=True) + f"f{FRAMES_VERSION}"
        base += "\n" + "\n".join(Path(c.path).name for c in clips)
        for condition in conditions:
            key = hashlib.sha256(f"{base}\n{condition} v{CONDITIONS_VERSION}".encode()).hexdigest()[:24]
            files[condition] = Path(cache_dir) / f"frames-{key}.npz"
            if files[condition].is_file():
                with np.load(files[condition]) as z:
                    lengths, data = z["lengths"], z["frames"]
                if lengths.size == len(clips):
                    out[condition] = np.split(data, np.cumsum(lengths)[:-1])
    todo = [c for c in conditions if c not in out]
    if todo:
        new = clip_frames([c.path for c in clips], todo, config=frame_config, n_jobs=n_jobs, progress=progress)
        for condition, frames in new.items():
            out[condition] = frames
            if condition in files:
                files[condition].parent.mkdir(parents=True, exist_ok=True)
                tmp = files[condition].with_suffix(".tmp.npz")
                np.savez(tmp, lengths=np.array([f.shape[0] for f in frames]), frames=np.concatenate(frames))
                tmp.replace(files[condition])
    return {c: out[c] for c in conditions}


def _prepare(args: argparse.Namespace, err: TextIO, recipe: Any, clips: list[Any], labels: tuple[str, ...],
             ) -> tuple[dict[str, list[np.ndarray]], np.ndarray, np.ndarray, FrameConfig]:  # fmt: skip
    from ..training import encode_labels

    frame_config = FrameConfig()
    if not args.quiet:
        print(f"{len(clips)} clips, {len({c.speaker for c in clips})} speakers, {len(labels)} emotions; CRNN on "
              f"{frame_config.n_mels} log-mel bands, augmentation {', '.join(recipe.augment) or 'none'}",
              file=err)  # fmt: skip
    frames = load_frames(clips, ["clean", *recipe.augment], frame_config, n_jobs=args.jobs, cache_dir=args.cache_dir,
                         progress=not args.quiet)  # fmt: skip
    return frames, encode_labels(clips, labels), np.array([c.speaker for c in clips]), frame_config


def evaluate_command(args: argparse.Namespace, out: TextIO, err: TextIO, recipe: Any, clips: list[Any],
                     labels: tuple[str, ...]) -> int:  # fmt: skip
    """``ser evaluate --model crnn`` (``--protocol speaker`` or ``loco``): print and write the report.

    Returns
    -------
    int
        Exit status 0.

    Raises
    ------
    SERError
        If ``--condition`` is given (not implemented for the CRNN), or the folds or corpora do not fit.
    """
    from ..evaluation import write_cross_report, write_report
    from .evaluate import evaluate_crnn, evaluate_crnn_loco

    if args.condition:
        raise SERError("--condition is not implemented for --model crnn.")
    frames, y, groups, frame_config = _prepare(args, err, recipe, clips, labels)
    config = crnn_config(args, recipe)
    augment = {c: frames[c] for c in recipe.augment}
    if args.protocol == "loco":
        corpora = [c.corpus for c in clips]
        if len(set(corpora)) < 2:
            raise SERError("--protocol loco needs at least two corpora (give --corpus several times).")
        report = evaluate_crnn_loco(
            frames["clean"], y, groups, corpora, labels=labels, config=config, frame_config=frame_config,
            augment=augment, unsure_below=recipe.unsure_below, n_jobs=args.jobs,
            max_clips_per_corpus=args.max_clips_per_corpus,
        )  # fmt: skip
        path = write_cross_report(report, args.out_dir)
        print(json.dumps(report.to_dict()) if args.json else f"{report.table()}\n\nwrote {path}", file=out)
        return 0
    n_speakers = len(set(groups.tolist()))
    if not 2 <= args.folds <= n_speakers:
        raise SERError(f"--folds must be between 2 and the number of speakers ({n_speakers}).")
    report = evaluate_crnn(frames["clean"], y, groups, labels=labels, config=config, frame_config=frame_config,
                           folds=args.folds, random_state=recipe.seed, augment=augment, n_jobs=args.jobs)  # fmt: skip
    paths = write_report(report, args.out_dir)
    if args.json:
        print(json.dumps(report.to_dict()), file=out)
    else:
        print(report.table(), file=out)
        print(f"\nwrote {paths['json']}, {paths['confusion']}, {paths['loss']}", file=out)
    return 0


def train_command(args: argparse.Namespace, out: TextIO, err: TextIO, recipe: Any, clips: list[Any],
                  labels: tuple[str, ...]) -> int:  # fmt: skip
    """``ser train --model crnn``: evaluate (unless ``--no-eval``), train on every clip, save ``.onnx`` + ``.json``.

    Returns
    -------
    int
        Exit status 0.

    Raises
    ------
    SERError
        If ``--registry`` is given (the registry holds joblib bundles) or ``--out`` does not end in ``.onnx``.
    """
    from ..evaluation import write_report
    from ..training import data_fingerprint
    from .evaluate import evaluate_crnn, fit_crnn_model
    from .onnx_model import save_crnn

    if args.registry is not None:
        raise SERError("--registry holds MLP bundles; a CRNN is saved as an .onnx file only.")
    target = args.out or Path("models") / f"ravdess-crnn-{len(labels)}class.onnx"
    if target.suffix.lower() != ".onnx":
        raise SERError("--out of a CRNN must end in .onnx.")
    frames, y, groups, frame_config = _prepare(args, err, recipe, clips, labels)
    config = crnn_config(args, recipe)
    augment = {c: frames[c] for c in recipe.augment}
    metrics = None
    if not args.no_eval:
        report = evaluate_crnn(frames["clean"], y, groups, labels=labels, config=config, frame_config=frame_config,
                               folds=args.folds, random_state=recipe.seed, augment=augment, n_jobs=args.jobs)  # fmt: skip
        print(report.table(), file=out)
        metrics = report.summary()
        if args.report_dir is not None:
            write_report(report, args.report_dir)
    metadata = {
        "model": "crnn", "crnn": config.to_dict(), "augment": list(recipe.augment), "unsure_below": recipe.unsure_below,
        "n_clips": len(clips), "corpora": sorted({c.corpus for c in clips}), "data_fingerprint": data_fingerprint(clips),
        "metrics": metrics,
    }  # fmt: skip
    model, _ = fit_crnn_model(frames["clean"], y, labels, config, frame_config, augment=augment or None,
                              metadata=metadata, progress=not args.quiet)  # fmt: skip
    side = save_crnn(model, target)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) and {side}", file=out)
    return 0


def score_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``ser evaluate --protocol score --model x.onnx``: a saved CRNN on corpora it never saw.

    The same table as for an MLP bundle (new speakers only: the CRNN has no speaker statistics).

    Returns
    -------
    int
        Exit status 0.

    Raises
    ------
    SERError
        If ``--condition`` is given, or no clip has an emotion the model knows.
    """
    from ..evaluation import CrossCorpusReport, _corpus_result, write_cross_report
    from .onnx_model import load_crnn

    if args.condition:
        raise SERError("--condition is not implemented for a CRNN.")
    model = load_crnn(args.model)
    from ..cli import _load_clips

    clips = [c for c in _load_clips(args) if c.label in model.labels]
    if not clips:
        raise SERError("None of the clips has an emotion the model knows.")
    frames = load_frames(clips, ["clean"], model.frame_config, n_jobs=args.jobs, cache_dir=args.cache_dir,
                         progress=not args.quiet)["clean"]  # fmt: skip
    P = model.predict_proba(frames)
    y = np.array([model.labels.index(c.label) for c in clips])
    groups = np.array([c.speaker for c in clips])
    corpora = np.array([c.corpus for c in clips])
    unsure = float(model.metadata.get("unsure_below", 0.5))
    rows = [_corpus_result(name, y[corpora == name], groups[corpora == name], model.labels,
                           {"new": P[corpora == name]}, {}, unsure, n_train=0)
            for name in dict.fromkeys(corpora.tolist())]  # fmt: skip
    report = CrossCorpusReport(
        protocol="score", description=f"the CRNN {args.model} on {', '.join(r.corpus for r in rows)}",
        labels=list(model.labels), rows=rows, unsure_below=unsure, max_clips_per_corpus=args.max_clips_per_corpus,
        model={"path": str(args.model), "model_version": model.model_version, "temperature": model.temperature},
    )  # fmt: skip
    path = write_cross_report(report, args.out_dir)
    print(json.dumps(report.to_dict()) if args.json else f"{report.table()}\n\nwrote {path}", file=out)
    return 0
