"""The ``ser`` command: predict emotions of files, train and evaluate models.

Examples
--------
::

    ser predict clip.flac note.ogg            # "clip.flac: angry (0.87)" per file,
                                              # "x.ogg: happy (0.26) unsure, or surprised?"
    ser predict --json clip.flac              # one JSON object per line
    ser predict --timeline long-note.ogg      # and its emotions over time: "mostly calm; angry from 0:12 to 0:18"
    ser listen [--json]                       # the microphone, 3 s window every 0.5 s (exit 2 without one)
    ser listen --input clip.wav --speed 20    # a file through the same streaming path, 20x real time
    ser evaluate --corpus ../shared/data/ravdess-16k --out-dir reports/
    ser evaluate --corpus ../shared/data/ravdess-16k --condition opus24k,noise20,noise10
    ser evaluate --protocol loco --corpus ../shared/data/ravdess-16k --corpus ../shared/data/nemo ...
    ser evaluate --protocol score --corpus ../shared/data/nemo     # the shipped model on a corpus it never saw
    ser explore ../shared/data/ravdess-16k ../shared/data/nemo --out-dir reports/explore
    ser train --corpus ../shared/data/ravdess-16k --out models/ravdess-8class.joblib
    ser models list                           # registered versions, * marks the active one
    ser models activate 3 / ser models rollback
    ser worker --broker redis://127.0.0.1:6379/0 --concurrency 2   # analyses from the broker (SER_BROKER_URL)

Also runnable as ``python -m ser_engine.cli``.  Exit status: 0 on success,
1 if any file or the run failed (one ``error:`` line each, no traceback),
2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import SERError

__all__ = ["build_parser", "main"]


def _emotion_list(text: str) -> list[str]:
    from .corpora import LABELS

    chosen = [e.strip().lower() for e in text.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in LABELS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown emotion(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(LABELS)}"
        )
    return chosen


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _condition_list(text: str) -> list[str]:
    from .augment import CONDITIONS, is_condition

    if text.strip().lower() == "none":
        return []
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if not is_condition(c) or c == "clean"]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown condition(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{','.join(c for c in CONDITIONS if c != 'clean')}, each optionally with '@active' (the speech only), "
            "or join several with '|' (one per clip, in turn)"
        )
    return chosen


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


#: The small grid of ``--nested-grid``: hidden units x L2 penalty.
NESTED_GRID: tuple[dict[str, Any], ...] = tuple(
    {"hidden_layer_sizes": [h], "alpha": a} for h in (64, 128) for a in (1.0, 3.0, 10.0)
)


def _recipe_options() -> argparse.ArgumentParser:
    from .recipe import Recipe
    from .training import PRESETS

    shipped = Recipe()

    common = argparse.ArgumentParser(add_help=False)
    data = common.add_argument_group("data")
    data.add_argument(
        "--corpus", required=True, type=Path, action="append", metavar="DIR",
        help="corpus folder: RAVDESS, or one with a manifest.csv (--format csv: the CSV file); repeat it for several "
        "corpora (RAVDESS and manifest folders only)",
    )  # fmt: skip
    data.add_argument(
        "--max-clips-per-corpus", type=_positive_int, metavar="N",
        help="use at most N clips of each corpus, stratified by emotion (seeded by --seed): quick runs",
    )  # fmt: skip
    data.add_argument(
        "--format", default="ravdess", choices=["ravdess", "tess", "savee", "emodb", "cremad", "csv"],
        help="corpus naming scheme (default ravdess); csv: a list with columns path,label,speaker",
    )  # fmt: skip
    data.add_argument(
        "--emotions", type=_emotion_list, metavar="E1,E2,...", help="comma-separated emotions to keep (default: all)"
    )
    data.add_argument("--include-song", action="store_true", help="also use RAVDESS song clips (vocal channel 02)")
    recipe = common.add_argument_group("recipe", "defaults: the shipped model's recipe (models/README.md)")
    recipe.add_argument(
        "--recipe", type=Path, metavar="FILE",
        help="the whole recipe from a JSON file: Recipe.to_dict() output, a report.json or a bundle's .json sidecar "
        "(the other recipe flags are then ignored)",
    )  # fmt: skip
    recipe.add_argument("--preset", default="default", choices=sorted(PRESETS), help="MLP hyper-parameters")
    recipe.add_argument(
        "--features", default="default", choices=["default", "tutorial"], help="FeatureConfig preset (default: default)"
    )
    recipe.add_argument("--no-scaler", action="store_true", help="no StandardScaler before the MLP (tutorial recipe)")
    recipe.add_argument("--max-iter", type=_positive_int, metavar="N", help="override the preset's max_iter")
    recipe.add_argument("--seed", type=int, default=0, help="random seed of split and MLP (default 0)")
    recipe.add_argument("--folds", type=_positive_int, default=6, help="speaker-independent folds (default 6)")
    recipe.add_argument(
        "--normalization", default="speaker", choices=["speaker", "none"],
        help="standardise features per speaker (default) or not",
    )  # fmt: skip
    recipe.add_argument(
        "--min-clips", type=_positive_int, default=5, metavar="N",
        help="clips of a speaker before prediction uses their own statistics (default 5)",
    )  # fmt: skip
    recipe.add_argument("--no-calibrate", action="store_true", help="no temperature scaling")
    recipe.add_argument(
        "--inner-folds", type=_positive_int, default=shipped.inner_folds, metavar="K",
        help=f"folds of the inner speaker-independent CV for calibration and --nested-grid (default {shipped.inner_folds})",
    )  # fmt: skip
    recipe.add_argument(
        "--inner-fits", type=_positive_int, default=None, metavar="N",
        help="fit only the first N of the --inner-folds (default all): the temperature from their held-out "
        "speakers only, N/K of the cost",
    )  # fmt: skip
    recipe.add_argument(
        "--unsure-below", type=_unit_float, default=0.5, metavar="P",
        help="confidence below which an answer is flagged unsure (default 0.5)",
    )  # fmt: skip
    recipe.add_argument(
        "--nested-grid", action="store_true",
        help="choose hidden units (64,128) x alpha (1,3,10) per fold by inner speaker-independent CV",
    )  # fmt: skip
    recipe.add_argument(
        "--augment", type=_condition_list, default=list(shipped.augment), metavar="C1,C2,...|none",
        help=f"also train on copies of the training clips degraded this way (default {','.join(shipped.augment)}; "
        "'none': no augmentation); "
        "'opus24k@active': the speech only, silence around it dropped; "
        "'opus24k|noise20|pitch+1': one copy, each clip degraded by one of them in turn",
    )  # fmt: skip
    recipe.add_argument(
        "--condition", type=_condition_list, default=[], metavar="C1,C2,...",
        help="also score held-out clips degraded this way, e.g. opus24k,noise20,phone,reverb,agc,mic,short1.5",
    )  # fmt: skip
    recipe.add_argument(
        "--epochs", type=_positive_int, default=None, metavar="N",
        help="--model crnn: training epochs of the CRNN (default 30)",
    )  # fmt: skip
    run = common.add_argument_group("run")
    run.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="parallel processes (default 1)")
    run.add_argument("--cache-dir", type=Path, metavar="DIR", help="reuse feature matrices cached in DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ser`` with its sub-commands.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(prog="ser", description="Speech emotion recognition (ser_engine).")
    parser.add_argument("--version", action="version", version=f"ser {_version()}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{predict,listen,train,evaluate,explore,models,worker}")  # fmt: skip

    p = sub.add_parser("predict", help="classify audio files", description="Print the emotion of each audio file.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg/opus, mp3, m4a, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="model bundle (.joblib; default: the shipped model) or a CRNN (.onnx, from ser train --model crnn)")
    p.add_argument(
        "--timeline", action="store_true",
        help="also the emotions over time: segments of 3 s windows every 1.5 s on speech (notes of 8 s or more)",
    )  # fmt: skip

    li = sub.add_parser(
        "listen", help="live emotion from the microphone (or a file played as a stream)",
        description="Classify the last 3 s of the microphone every 0.5 s (needs sounddevice and PortAudio: "
        "pip install '.[listen]'); --input plays a file through the same path. Exit 2 without a microphone.",
    )  # fmt: skip
    li.add_argument("--input", type=Path, metavar="FILE", help="play this audio file instead of the microphone")
    li.add_argument("--speed", type=float, default=1.0, help="with --input: playback speed (default 1 = real time)")
    li.add_argument("--json", action="store_true", help="one JSON object per update")
    li.add_argument("--device", metavar="DEVICE", help="sounddevice input device (number or name)")
    li.add_argument("--model", type=Path, metavar="PATH", help="model bundle (.joblib; default: the shipped model)")
    li.add_argument("--window", type=float, default=3.0, metavar="S", help="seconds classified (default 3)")
    li.add_argument("--step", type=float, default=0.5, metavar="S", help="seconds between updates (default 0.5)")

    common = _recipe_options()
    t = sub.add_parser(
        "train", parents=[common], help="train a model bundle",
        description="Extract features, evaluate the recipe (both protocols), fit on all clips and save the bundle.",
    )  # fmt: skip
    t.add_argument(
        "--model", choices=["mlp", "crnn"], default="mlp",
        help="mlp (default): the recipe's MLP on clip statistics; crnn: the temporal model over log-mel frames "
        "(needs pip install '.[deep]'; saved as .onnx + .json, run with onnxruntime)",
    )  # fmt: skip
    t.add_argument("--out", type=Path, metavar="PATH",
                   help="bundle path (default models/ravdess-<N>class.joblib; crnn: models/ravdess-crnn-<N>class.onnx)")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation (no metrics in the bundle)")
    t.add_argument("--report-dir", type=Path, metavar="DIR", help="also write the evaluation report and plots here")
    t.add_argument("--registry", type=Path, metavar="DIR", help="also register the bundle as a new version in DIR")
    t.add_argument("--activate", action="store_true", help="with --registry: make the new version active")

    e = sub.add_parser(
        "evaluate", parents=[common], help="evaluate a recipe or a model",
        description="Score a recipe under a random 75/25 split and speaker-independent GroupKFold (--protocol "
        "speaker), leaving one corpus out (loco), or score an existing model on corpora it never saw (score).",
    )  # fmt: skip
    e.add_argument(
        "--protocol", default="speaker", choices=["speaker", "loco", "score"],
        help="speaker (default): random 75/25 split and speaker-independent GroupKFold; loco: for each --corpus, "
        "train on the other corpora and score it; score: score --model on the corpora (trains nothing)",
    )  # fmt: skip
    e.add_argument(
        "--model", type=Path, metavar="PATH",
        help="--protocol score: the bundle (default: the shipped model); speaker or loco: the model to train, mlp "
        "(default) or crnn (needs pip install '.[deep]')",
    )  # fmt: skip
    e.add_argument("--out-dir", type=Path, default=Path("reports"), metavar="DIR", help="report folder (default reports/)")
    e.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    sub.add_parser(
        "explore", add_help=False, help="HTML report on corpora (ser explore --help)",
        description="See ser explore --help.",
    )  # fmt: skip

    m = sub.add_parser("models", help="list, activate or roll back registered model versions",
                       description="Model registry: every bundle is a version; one is active.")  # fmt: skip
    m.add_argument("--registry", type=Path, metavar="DIR", help="registry folder (default models/registry)")
    m.add_argument("action", choices=["list", "activate", "rollback"], help="what to do")
    m.add_argument("version", nargs="?", metavar="VERSION", help="for activate: a version number (3 or v3)")

    w = sub.add_parser(
        "worker", help="take analyses from a broker (a bot with SER_BROKER_URL sends them)",
        description="Run the engine on this machine's cores for analyses queued on a Redis broker (arq).",
    )  # fmt: skip
    w.add_argument("--broker", metavar="URL", help="redis://host:6379/0 (default: SER_BROKER_URL)")
    w.add_argument("--concurrency", type=_positive_int, default=2, metavar="N",
                   help="analyses at once: worker processes (default 2; one per core)")  # fmt: skip
    w.add_argument("--model", type=Path, metavar="PATH", help="model bundle (default: the shipped model)")
    w.add_argument("--registry", type=Path, metavar="DIR",
                   help="shared model registry: serve its active version and follow changes (overrides --model)")  # fmt: skip
    w.add_argument("--queue", default=None, metavar="NAME", help="queue name (default ser:analyses)")
    return parser


# ------------------------------------------------------------------- worker
def _worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import asyncio
    import logging
    import os

    from .distributed import DEFAULT_QUEUE
    from .distributed.worker import WorkerConfig, run_worker

    url = args.broker or os.environ.get("SER_BROKER_URL", "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        print("error: give the broker as --broker redis://host:6379/0 (or set SER_BROKER_URL)", file=err)
        return 2
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("arq.worker").setLevel(logging.WARNING)  # one line per job otherwise
    cfg = WorkerConfig(broker_url=url, concurrency=args.concurrency, model_path=args.model,
                       registry_dir=args.registry, queue=args.queue or DEFAULT_QUEUE)  # fmt: skip
    asyncio.run(run_worker(cfg))
    return 0


# ------------------------------------------------------------------ predict
def _predict(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .deep.onnx_model import CRNNPredictor, is_crnn_path
    from .predict import Predictor

    try:
        if args.model is not None and is_crnn_path(args.model):
            predictor: Any = CRNNPredictor.load(args.model)
        else:
            predictor = Predictor.load(args.model)
    except SERError as exc:
        print(f"error: {exc.user_message}", file=err)
        return 1
    failed = 0
    for name in args.files:
        try:
            if args.timeline:
                from .timeline import predict_timeline

                timeline = predict_timeline(predictor, name)
                prediction = timeline.overall
            else:
                prediction = predictor.predict(name)
        except SERError as exc:
            failed += 1
            message = exc.user_message
        except (OSError, ValueError) as exc:  # not expected from load_audio; keep the run going
            failed += 1
            message = f"could not analyse this file ({type(exc).__name__})"
        else:
            if args.json:
                fields = timeline.to_dict() if args.timeline else prediction.to_dict()
                print(json.dumps({"file": name, **fields}), file=out)
            else:
                unsure = f" unsure, or {prediction.top_two[1]}?" if prediction.unsure else ""
                print(f"{name}: {prediction.label} ({prediction.confidence:.2f}){unsure}", file=out)
                if args.timeline:
                    _print_timeline(timeline, out)
            continue
        if args.json:
            print(json.dumps({"file": name, "error": message}), file=out)
        else:
            print(f"{name}: error: {message}", file=out)
    return 1 if failed else 0


def _print_timeline(timeline: Any, out: TextIO) -> None:
    """The summary line and one line per segment, indented under the file's line."""
    from .timeline import format_clock

    if not timeline.is_cut:
        print(f"  (shorter than {timeline.settings.min_duration_s:g} s: one segment)", file=out)
    else:
        print(f"  {timeline.summary()}", file=out)
    for seg in timeline.segments:
        print(f"  {format_clock(seg.start_s)}-{format_clock(seg.end_s)} ({seg.start_s:.1f}-{seg.end_s:.1f} s) "
              f"{seg.label} ({seg.confidence:.2f})", file=out)  # fmt: skip


# ------------------------------------------------------------------- listen
def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``ser listen``: stream updates to ``out`` (a live line on a terminal, JSON lines with --json)."""
    import numpy as np

    from .audio import TARGET_SR, AudioLimits, load_audio
    from .listen import MicrophoneUnavailable, RollingAnalyser, file_chunks, microphone_chunks
    from .predict import Predictor

    if args.speed <= 0 or args.window <= 0 or not 0 < args.step <= args.window:
        print("error: --speed and --window must be positive, 0 < --step <= --window", file=err)
        return 2
    if args.input is None:
        device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
        chunks = microphone_chunks(device=device)
        try:
            first = next(chunks)  # opens the device: fails here, in one line, without a microphone
        except MicrophoneUnavailable as exc:
            print(f"error: {exc}", file=err)
            return 2
    predictor = Predictor.load(args.model)
    if args.input is not None:
        y = load_audio(args.input, sr=TARGET_SR, limits=AudioLimits(max_duration_s=3600.0, max_samples=10**9))
        chunks, first = file_chunks(y, speed=args.speed), np.zeros(0, np.float32)
    analyser = RollingAnalyser(predictor, window_s=args.window, step_s=args.step)
    predictor.warm_up(np.sin(np.arange(TARGET_SR) * 0.06).astype(np.float32) * 0.1)  # caches before the first update
    live = not args.json and out.isatty()

    def show(update: Any) -> None:
        if args.json:
            print(json.dumps(update.to_dict()), file=out, flush=True)
            return
        if update.label is None:
            line = f"{update.t_s:7.1f} s  (no speech)"
        else:
            bar = "█" * round(update.confidence * 10)
            line = f"{update.t_s:7.1f} s  {update.label:<9} {update.confidence:4.2f} {bar:<10}"
        print(f"\r{line:<40}" if live else line, end="" if live else "\n", file=out, flush=True)

    try:
        for update in analyser.push(first):
            show(update)
        for chunk in chunks:
            for update in analyser.push(chunk):
                show(update)
        if (last := analyser.flush()) is not None:
            show(last)
    except KeyboardInterrupt:
        pass
    if live:
        print(file=out)
    return 0


# ------------------------------------------------------- train and evaluate
def _recipe(args: argparse.Namespace) -> Any:
    """The :class:`~ser_engine.recipe.Recipe` the recipe flags describe (their defaults: the shipped one)."""
    from .features import FeatureConfig
    from .recipe import Recipe

    if args.recipe is not None:
        return _recipe_file(args.recipe)
    if args.inner_fits is not None and args.inner_fits > args.inner_folds:
        raise SERError("--inner-fits must not exceed --inner-folds.")
    if args.inner_folds < 2 or args.min_clips < 2:
        raise SERError("--inner-folds and --min-clips must be at least 2.")
    return Recipe(
        features=FeatureConfig.tutorial() if args.features == "tutorial" else FeatureConfig(),
        normalization=args.normalization, min_clips=args.min_clips, augment=tuple(args.augment),
        calibrate=not args.no_calibrate, inner_folds=args.inner_folds, inner_fits=args.inner_fits,
        preset=args.preset, mlp={"max_iter": args.max_iter} if args.max_iter else {}, scaler=not args.no_scaler,
        seed=args.seed, grid=NESTED_GRID if args.nested_grid else (), unsure_below=args.unsure_below,
    )  # fmt: skip


def _load_clips(args: argparse.Namespace) -> list[Any]:
    """The clips of every ``--corpus`` (``--max-clips-per-corpus``: a stratified subset of each)."""
    from .corpora import LOADERS, load_corpora
    from .evaluation import stratified_subset

    try:
        if args.format == "ravdess":
            clips = load_corpora(args.corpus, emotions=args.emotions, include_song=args.include_song)
        elif len(args.corpus) > 1:
            raise SERError(f"--format {args.format} reads one corpus; several --corpus need RAVDESS or manifest folders.")
        else:
            clips = LOADERS[args.format](args.corpus[0], emotions=args.emotions)
    except ValueError as exc:  # an emotion the corpus' naming scheme cannot hold
        raise SERError(str(exc)) from None
    if args.max_clips_per_corpus is not None:
        clips = stratified_subset(clips, args.max_clips_per_corpus, seed=args.seed)
    return clips


def _recipe_file(path: Path) -> Any:
    """The :class:`~ser_engine.recipe.Recipe` of a JSON file: its ``to_dict()``, a report's ``recipe`` or a sidecar."""
    from .recipe import Recipe

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SERError(f"The recipe file {path.name!r} cannot be read as JSON ({type(exc).__name__}).") from None
    try:
        if isinstance(data, dict) and isinstance(data.get("recipe"), dict):  # a report.json
            return Recipe.from_dict(data["recipe"])
        if isinstance(data, dict) and "feature_config" in data:  # a bundle's sidecar
            return Recipe.from_bundle(data)
        if isinstance(data, dict):
            return Recipe.from_dict(data)
    except ValueError as exc:
        raise SERError(f"The recipe file {path.name!r} describes no valid recipe: {exc}") from None
    raise SERError(f"The recipe file {path.name!r} holds no JSON object.")


def _prepare(args: argparse.Namespace, err: TextIO) -> tuple[Any, ...]:
    """Load the corpus and extract features once: (clips, labels, X, y, groups, config, recipe)."""
    import numpy as np

    from .training import encode_labels, featurize_conditions, label_order

    recipe = _recipe(args)  # a bad recipe fails before the corpus is read
    clips = _load_clips(args)
    labels = label_order(clips)
    if len(labels) < 2:
        raise SERError("The chosen corpus subset holds fewer than two emotions; nothing to tell apart.")
    config = recipe.features
    speakers = {c.speaker for c in clips}
    if not args.quiet:
        print(
            f"{len(clips)} clips, {len(speakers)} speakers, {len(labels)} emotions; "
            f"{config.n_features} features ({'--recipe ' + args.recipe.name if args.recipe else args.features})",
            file=err,
        )
    # One pass over the corpus: each clip decoded once for its clean features, its augmented
    # copies and (when evaluating) its degraded test copies.
    evaluating = not getattr(args, "no_eval", False)
    conditions = list(args.condition if evaluating else [])
    if recipe.members:
        # A pool: each corpus gets only the degraded copies its members train on (NaN rows for the others).
        matrices = {c: np.full((len(clips), config.n_features), np.nan) for c in ["clean", *recipe.augment, *conditions]}
        corpus_of = np.array([c.corpus.lower() for c in clips])
        for name in dict.fromkeys(corpus_of.tolist()):
            idx = np.flatnonzero(corpus_of == name)
            part = featurize_conditions(
                [clips[i] for i in idx], ["clean", *recipe.augment_for(name), *conditions], config=config,
                n_jobs=args.jobs, progress=not args.quiet, cache_dir=args.cache_dir,
            )  # fmt: skip
            for condition, M in part.items():
                matrices[condition][idx] = M
    else:
        matrices = featurize_conditions(
            clips, ["clean", *recipe.augment, *conditions], config=config, n_jobs=args.jobs,
            progress=not args.quiet, cache_dir=args.cache_dir,
        )  # fmt: skip
    X = matrices["clean"]
    y = encode_labels(clips, labels)
    groups = np.array([c.speaker for c in clips])
    args.clips = clips
    args.augmented = {condition: matrices[condition] for condition in recipe.augment}
    args.variants = {condition: matrices[condition] for condition in (args.condition if evaluating else [])}
    return clips, labels, X, y, groups, config, recipe


def _corpus_recipe(recipe: Any) -> bool:
    """Whether the recipe needs each clip's corpus (a pool, corpus balance, a left-out-corpus temperature)."""
    return bool(recipe.members) or recipe.balance != "none" or (recipe.calibrate and recipe.calibrate_on == "corpora")


def _run_evaluation(args: argparse.Namespace, labels: Any, X: Any, y: Any, groups: Any, config: Any, recipe: Any) -> Any:
    from .evaluation import evaluate

    n_speakers = len(set(groups.tolist()))
    if args.folds > n_speakers or args.folds < 2:
        raise SERError(f"--folds must be between 2 and the number of speakers ({n_speakers}).")
    report = evaluate(
        X, y, groups, labels=labels, folds=args.folds, feature_config=config.to_dict(), n_jobs=args.jobs,
        variants=args.variants, augment=args.augmented or None, **recipe.evaluate_kwargs(),
    )  # fmt: skip
    report.recipe = recipe.to_dict()
    return report


def _evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .evaluation import write_report

    if args.protocol == "score":
        return _score(args, out, err)
    if args.model is not None and str(args.model) == "crnn":
        return _crnn(args, out, err, "evaluate")
    if args.model is not None and str(args.model) != "mlp":
        raise SERError("--model is for --protocol score (a bundle's path); speaker and loco train the recipe's MLP, "
                       "or the temporal model with --model crnn.")
    if args.protocol != "loco" and _corpus_recipe(_recipe(args)):
        raise SERError("This recipe weighs or calibrates by corpus: score it with --protocol loco "
                       "(RAVDESS actor folds: python -m benchmarks.multicorpus ravdess).")  # fmt: skip
    _, labels, X, y, groups, config, recipe = _prepare(args, err)
    if args.protocol == "loco":
        return _loco(args, out, labels, X, y, groups, recipe)
    report = _run_evaluation(args, labels, X, y, groups, config, recipe)
    paths = write_report(report, args.out_dir)
    if args.json:
        print(json.dumps(report.to_dict()), file=out)
    else:
        print(report.table(), file=out)
        print(f"\nwrote {paths['json']}, {paths['confusion']}, {paths['loss']}", file=out)
    return 0


def _print_cross(args: argparse.Namespace, report: Any, out: TextIO) -> int:
    from .evaluation import write_cross_report

    path = write_cross_report(report, args.out_dir)
    if args.json:
        print(json.dumps(report.to_dict()), file=out)
    else:
        print(report.table(), file=out)
        print(f"\nwrote {path}", file=out)
    return 0


def _loco(args: argparse.Namespace, out: TextIO, labels: Any, X: Any, y: Any, groups: Any, recipe: Any) -> int:
    """``--protocol loco`` on the features :func:`_prepare` extracted."""
    from .evaluation import evaluate_loco

    corpora = [c.corpus for c in args.clips]
    if len(set(corpora)) < 2:
        raise SERError("--protocol loco needs at least two corpora (give --corpus several times).")
    report = evaluate_loco(
        X, y, groups, corpora, labels=labels, recipe=recipe, augment=args.augmented, variants=args.variants,
        n_jobs=args.jobs, max_clips_per_corpus=args.max_clips_per_corpus,
    )  # fmt: skip
    return _print_cross(args, report, out)


def _score(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``--protocol score``: an existing bundle on the corpora, features of the bundle's configuration."""
    import numpy as np

    from .bundle import DEFAULT_MODEL_PATH, load_bundle
    from .evaluation import score_bundle
    from .training import featurize_conditions

    path = args.model if args.model is not None else DEFAULT_MODEL_PATH
    if path.suffix.lower() == ".onnx":  # a CRNN (ser train --model crnn)
        from .deep.commands import score_command

        return score_command(args, out, err)
    bundle = load_bundle(path)
    clips = _load_clips(args)
    unknown = sorted({c.label for c in clips} - set(bundle.labels))
    if unknown:
        print(f"left out: {sum(c.label in unknown for c in clips)} clips of emotions the model does not know "
              f"({', '.join(unknown)})", file=err)  # fmt: skip
        clips = [c for c in clips if c.label not in unknown]
    if not clips:
        raise SERError("None of the clips has an emotion the model knows.")
    if not args.quiet:
        print(f"{len(clips)} clips, {len({c.speaker for c in clips})} speakers; model {path}", file=err)
    matrices = featurize_conditions(
        clips, ["clean", *args.condition], config=bundle.feature_config, n_jobs=args.jobs, progress=not args.quiet,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    y = np.array([bundle.labels.index(c.label) for c in clips])
    report = score_bundle(
        bundle, matrices["clean"], y, [c.speaker for c in clips], [c.corpus for c in clips],
        variants={c: matrices[c] for c in args.condition}, model_path=str(path),
        max_clips_per_corpus=args.max_clips_per_corpus,
    )  # fmt: skip
    return _print_cross(args, report, out)


def _crnn(args: argparse.Namespace, out: TextIO, err: TextIO, command: str) -> int:
    """``ser train --model crnn`` and ``ser evaluate --model crnn`` (:mod:`ser_engine.deep.commands`)."""
    from .deep import commands
    from .deep.train import torch_available
    from .training import label_order

    if not torch_available():
        raise SERError("Training the CRNN needs PyTorch: pip install '.[deep]' (it pins the CPU build torch==2.13.0).")
    recipe = _recipe(args)
    clips = _load_clips(args)
    labels = label_order(clips)
    if len(labels) < 2:
        raise SERError("The chosen corpus subset holds fewer than two emotions; nothing to tell apart.")
    run = commands.train_command if command == "train" else commands.evaluate_command
    return run(args, out, err, recipe, clips, labels)


def _train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bundle import save_bundle, sidecar_path
    from .evaluation import write_report
    from .training import train_model

    if args.model == "crnn":
        return _crnn(args, out, err, "train")
    if _corpus_recipe(_recipe(args)):
        if not args.no_eval:
            raise SERError("This recipe weighs or calibrates by corpus: train it with --no-eval and score it with "
                           "ser evaluate --protocol loco.")  # fmt: skip
        return _train_by_corpus(args, out, err)
    clips, labels, X, y, groups, config, recipe = _prepare(args, err)
    metrics = None
    if not args.no_eval:
        report = _run_evaluation(args, labels, X, y, groups, config, recipe)
        print(report.table(), file=out)
        metrics = report.summary()
        if args.report_dir is not None:
            write_report(report, args.report_dir)
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from .calibration import choose_recipe

    def calibration(jobs: int) -> tuple[Any, float]:
        return choose_recipe(X, y, groups, **recipe.calibration_kwargs(), augment=args.augmented or None, n_jobs=jobs)

    def final(chosen: Any, temperature: float) -> Any:
        fitted = dataclasses.replace(recipe, mlp=chosen or {}, grid=())  # what this bundle was trained with
        return train_model(
            clips, feature_config=config, preset=recipe.preset, scaler=recipe.scaler, overrides=chosen,
            random_state=recipe.seed, labels=labels, X=X, metrics=metrics, normalization=recipe.normalization,
            min_clips=recipe.min_clips, temperature=temperature, unsure_below=recipe.unsure_below,
            augment=args.augmented or None, recipe=fitted.to_dict(),
        )  # fmt: skip

    overrides = dict(recipe.mlp) or None
    if recipe.grid or not recipe.calibrate:
        chosen, temperature = calibration(args.jobs)
        bundle = final(chosen, temperature)
    else:
        # The final model's hyper-parameters do not depend on the temperature: fit it here
        # while the calibration's inner folds run in worker processes beside it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            calibrating = pool.submit(calibration, args.jobs)
            bundle = final(overrides, 1.0)
            _, temperature = calibrating.result()
        bundle = dataclasses.replace(bundle, temperature=temperature,
                                     metadata={**bundle.metadata, "temperature": float(temperature)})  # fmt: skip
    if recipe.calibrate or recipe.grid:
        bundle.metadata["inner_folds"] = recipe.inner_folds
        if recipe.inner_fits and recipe.inner_fits < recipe.inner_folds:
            bundle.metadata["inner_fits"] = recipe.inner_fits
    target = args.out or Path("models") / f"ravdess-{len(labels)}class.joblib"
    save_bundle(bundle, target)
    size_kib = target.stat().st_size / 1024
    print(f"wrote {target} ({size_kib:.0f} KiB) and {sidecar_path(target)}", file=out)
    _register(args, target, out)
    return 0


def _register(args: argparse.Namespace, target: Path, out: TextIO) -> None:
    """``--registry`` (and ``--activate``) of ``ser train``: import the written bundle as a new version."""
    if args.registry is None:
        return
    from .registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    entry = registry.import_file(target, source="ser train")
    print(f"registered as {entry.name} in {registry.root}", file=out)
    if args.activate:
        registry.activate(entry.version)
        print(f"{entry.name} is now active", file=out)


def _train_by_corpus(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``ser train`` of a recipe that needs each clip's corpus: :class:`~ser_engine.recipe.RecipeModel` on all clips."""
    from .bundle import save_bundle, sidecar_path
    from .recipe import RecipeModel
    from .training import corpus_provenance

    clips, labels, X, y, groups, _, recipe = _prepare(args, err)
    corpora = [c.corpus for c in clips]
    try:
        model = RecipeModel(recipe).fit(X, y, groups, augment=args.augmented or None, corpora=corpora,
                                        n_jobs=args.jobs)  # fmt: skip
    except ValueError as exc:
        raise SERError(f"This recipe cannot train on these corpora: {exc}") from None
    metadata = corpus_provenance(clips, labels, y)
    shareable = metadata["licence"].startswith("CC BY")
    bundle = model.to_bundle(labels, metadata)
    target = args.out or Path("models") / f"ser-{len(labels)}class.joblib"
    save_bundle(bundle, target)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) and {sidecar_path(target)}: {len(clips)} clips "
          f"of {', '.join(metadata['corpora'])}, temperature {model.temperature_:.2f}", file=out)  # fmt: skip
    if not shareable:
        print("note: trained on a corpus whose licence does not allow sharing the model: keep it local", file=out)
    _register(args, target, out)
    return 0


# ------------------------------------------------------------------- models
def _version_number(text: str | None) -> int:
    digits = (text or "").strip().lower().removeprefix("v")
    if not digits.isdigit():
        raise SERError(f"{text!r} is not a model version (use e.g. 3 or v3).")
    return int(digits)


def _models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bundle import DEFAULT_MODEL_PATH
    from .registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    if args.action == "list":
        if not registry.version_numbers():
            print(f"no versions in {registry.root} (the default model is {DEFAULT_MODEL_PATH})", file=out)
            return 0
        ptr = registry.pointer()
        for v in registry.list():
            mark = "*" if v.version == ptr["active"] else ("<" if ptr["history"] and v.version == ptr["history"][-1] else " ")
            f1 = v.metrics.get("macro_f1")
            f1_text = f"macro-F1 {f1:.3f}" if f1 is not None else "macro-F1 -"
            status = "" if v.info.get("promoted") is not False else "  (not promoted)"
            print(f"{mark} {v.name:<5} {v.created_at:<26} {len(v.labels)} classes  {f1_text}  {v.source}{status}",
                  file=out)  # fmt: skip
        print("(* active, < previous: the target of rollback)", file=out)
        return 0
    if args.action == "activate":
        version = _version_number(args.version)
        registry.activate(version)
        print(f"v{version} is now active", file=out)
        return 0
    version, _ = registry.rollback()
    print(f"rolled back: v{version} is now active", file=out)
    return 0


def _version() -> str:
    """The package's version (``ser_engine.__version__``, the same as ``pyproject.toml``'s)."""
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ser`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 a file or the run failed, 2 bad arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explore"]:
        from .explore import main as explore_main

        try:
            return explore_main(argv[1:])
        except SystemExit as exc:  # its argparse: 2 on errors, 0 on --help
            return int(exc.code or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on errors, 0 on --help
        return int(exc.code or 0)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "predict":
            return _predict(args, out, err)
        if args.command == "listen":
            return _listen(args, out, err)
        if args.command == "evaluate":
            return _evaluate(args, out, err)
        if args.command == "models":
            return _models(args, out, err)
        if args.command == "worker":
            return _worker(args, out, err)
        return _train(args, out, err)
    except SERError as exc:
        print(f"error: {exc.user_message}", file=err)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
