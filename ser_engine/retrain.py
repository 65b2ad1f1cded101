"""Retraining with a quality gate, in a separate process with progress reports.

:func:`run_retrain` does the work (in whatever process calls it):

1. **features** -- corpus clips from one or more RAVDESS-layout folders,
   through the per-file :class:`~ser_engine.cache.FeatureCache`; plus
   feedback rows (feature vectors and labels given by users, no audio).
2. **evaluating** -- speaker-independent ``GroupKFold`` (groups: corpus
   speakers, and ``feedback:<user id>`` for feedback rows, so no voice is
   on both sides of a split).  On the *same* folds two recipes are fitted
   and scored on the held-out rows: the candidate (the configured preset,
   trained on corpus + feedback, feedback weighted) and the reference (the
   active model's own recipe -- preset, MLP parameters, scaler, features --
   trained on the corpus rows only).  Both are scored on the held-out
   corpus rows (true labels); pooled macro-F1, UAR and accuracy.
3. **fitting** -- the candidate recipe on every row.
4. **saving** -- registered as a new version of the
   :class:`~ser_engine.registry.ModelRegistry`, with the comparison and the
   gate decision in its metadata.  It is **not** activated here: the caller
   activates it (and hot-swaps its service) when ``result["promoted"]``.

Quality gate: promote when ``candidate macro-F1 >= reference macro-F1 - margin``.

:class:`RetrainJob` runs :func:`run_retrain` in a ``multiprocessing``
*spawn* child (no state inherited from an event loop or threads) and hands
back its progress messages through a queue::

    {"type": "progress", "stage": "features", "fraction": 0.4, "elapsed_s": 3.2, "detail": "..."}
    {"type": "done", "result": {...}}      # see run_retrain
    {"type": "error", "message": "..."}

Killing the child at any point leaves the registry's active pointer
untouched (the child never writes it).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RetrainJob", "RetrainSpec", "STAGES", "progress_bar", "run_retrain"]

#: Stages reported, in order.
STAGES: tuple[str, ...] = ("features", "evaluating", "fitting", "saving")


@dataclass
class RetrainSpec:
    """What to train on and how to judge it (picklable: it crosses into the child process).

    Attributes
    ----------
    corpus_dirs : list of str
        RAVDESS-layout folders (``Actor_XX/*.flac|wav``).
    registry_dir : str
        :class:`~ser_engine.registry.ModelRegistry` folder; its active version is the reference.
    cache_dir : str or None
        :class:`~ser_engine.cache.FeatureCache` folder (``None``: no cache).
    emotions : list of str or None
        Keep only these RAVDESS emotions (default all).
    speakers : list of str or None
        Keep only these corpus speakers (``"Actor_01"`` or just ``"01"``).
    preset : str
        Candidate recipe, a key of :data:`ser_engine.training.PRESETS`.
    max_iter : int or None
        Override of the preset's ``max_iter``.
    folds : int
        Speaker-independent folds (capped at the number of groups).
    margin : float
        Quality-gate margin in macro-F1 points (0.02 = two points).
    feedback_X : list of list of float
        Feedback feature vectors (the candidate's feature configuration), shape (n, n_features).
    feedback_labels, feedback_users : list
        Label and speaker id of each feedback row.
    feedback_weight : float
        Sample weight of a feedback row (corpus rows weigh 1).
    n_jobs : int
        Processes for feature extraction.
    seed : int
        MLP seed.
    corrupt_labels : bool
        **Testing only**: train the candidate on shuffled labels (evaluation labels stay true),
        to produce a model the gate must reject.
    requested_by : str
        Who asked (recorded in the registry).
    """

    corpus_dirs: list[str]
    registry_dir: str
    cache_dir: str | None = None
    emotions: list[str] | None = None
    speakers: list[str] | None = None
    preset: str = "default"
    max_iter: int | None = None
    folds: int = 6
    margin: float = 0.02
    feedback_X: list[list[float]] = field(default_factory=list)
    feedback_labels: list[str] = field(default_factory=list)
    feedback_users: list[int] = field(default_factory=list)
    feedback_weight: float = 2.0
    n_jobs: int = 1
    seed: int = 0
    corrupt_labels: bool = False
    requested_by: str = ""


def progress_bar(fraction: float, width: int = 20) -> str:
    """A text progress bar, e.g. ``"[#########-----------]  45%"``.

    Parameters
    ----------
    fraction : float
        Clipped to [0, 1].
    width : int, default 20
        Characters between the brackets.
    """
    fraction = min(1.0, max(0.0, float(fraction)))
    filled = int(round(fraction * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def _reference_recipe(metadata: dict[str, Any], fallback_preset: str) -> tuple[str, bool, int | None, dict[str, Any]]:
    from .training import PRESETS

    preset = metadata.get("preset") if metadata.get("preset") in PRESETS else fallback_preset
    params = dict(metadata.get("mlp_params") or {})
    if "hidden_layer_sizes" in params:
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    scaler = bool(metadata.get("scaler", True))
    seed = metadata.get("random_state", 0)
    return str(preset), scaler, seed if isinstance(seed, int) else 0, params


def _fit(preset: str, scaler: bool, seed: int | None, overrides: dict[str, Any], X: np.ndarray, y: np.ndarray,
         w: np.ndarray | None) -> Any:  # fmt: skip
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from .training import build_pipeline, fit_pipeline

    pipe = build_pipeline(preset, scaler=scaler, random_state=seed, overrides=overrides)
    if w is None or np.allclose(w, 1.0):
        fit_pipeline(pipe, X, y)
        return pipe
    mlp = pipe.named_steps["mlp"]
    if isinstance(mlp.batch_size, int) and mlp.batch_size > len(y):
        mlp.set_params(batch_size=max(1, len(y)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y, mlp__sample_weight=w)
    return pipe


def run_retrain(spec: RetrainSpec, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, compare with the active model on the same folds, register; see the module docstring.

    Parameters
    ----------
    spec : RetrainSpec
    report : callable(dict), optional
        Receives ``{"type": "progress", "stage", "fraction", "elapsed_s", "detail"}`` messages.

    Returns
    -------
    dict
        ``version`` (int, registered), ``promoted`` (bool), ``reason`` (str),
        ``candidate`` and ``reference`` (``macro_f1``, ``uar``, ``accuracy``),
        ``reference_version`` (int or None), ``folds``, ``n_clips``,
        ``n_feedback``, ``labels``, ``margin``, ``elapsed_s``, ``stage_s``
        (seconds per stage), ``cache_hits``, ``cache_misses``.

    Raises
    ------
    ser_engine.errors.CorpusError
        If no clip is found, fewer than two emotions or two speaker groups remain.
    ser_engine.errors.ModelError
        If the registry has no loadable active version.
    """
    from sklearn.model_selection import GroupKFold

    from .bundle import ModelBundle, library_versions
    from .cache import FeatureCache, config_key
    from .corpora import load_ravdess
    from .errors import CorpusError
    from .evaluation import score
    from .features import FeatureConfig
    from .registry import ModelRegistry
    from .training import data_fingerprint, label_order, mlp_params

    t0 = time.monotonic()
    stage_s: dict[str, float] = {}
    stage_start = [t0]

    def emit(stage: str, fraction: float, detail: str = "") -> None:
        if report is not None:
            report({"type": "progress", "stage": stage, "fraction": float(fraction),
                    "elapsed_s": time.monotonic() - t0, "detail": detail})  # fmt: skip

    def end_stage(stage: str) -> None:
        now = time.monotonic()
        stage_s[stage] = now - stage_start[0]
        stage_start[0] = now

    registry = ModelRegistry(spec.registry_dir)
    ref_version, ref_bundle = registry.load_active()

    # ------------------------------------------------------------ features
    emit("features", 0.0, "reading the corpus")
    clips = []
    for folder in spec.corpus_dirs:
        clips += load_ravdess(folder, emotions=spec.emotions)
    if spec.speakers:
        keep = {str(s) for s in spec.speakers}

        def digits(name: str) -> str:
            return "".join(ch for ch in name if ch.isdigit()).zfill(2)

        keep |= {digits(s) for s in keep}
        clips = [c for c in clips if c.speaker in keep or digits(c.speaker) in keep]
    if not clips:
        raise CorpusError("No training clip found in the configured corpus folders.")
    labels = label_order(clips)
    if len(labels) < 2:
        raise CorpusError("The training data holds fewer than two emotions.")
    config = FeatureConfig()
    ref_config = ref_bundle.feature_config
    cache_root = spec.cache_dir
    cand_cache = FeatureCache(cache_root or ".", config)  # only read/written when cache_root is set
    paths = [c.path for c in clips]
    same_config = config_key(ref_config) == config_key(config)
    n_passes = 1 if same_config else 2

    def feat(cache: FeatureCache, k: int) -> np.ndarray:
        def cb(done: int, total: int) -> None:
            emit("features", (k + done / max(total, 1)) / n_passes, f"{done}/{total} clips")

        if cache_root is None:
            from .features import extract_many

            out = np.zeros((len(paths), cache.config.n_features), dtype=np.float32)
            for start in range(0, len(paths), 16):
                out[start : start + 16] = extract_many(paths[start : start + 16], config=cache.config, n_jobs=spec.n_jobs)
                cb(min(len(paths), start + 16), len(paths))
            return out
        return cache.featurize(paths, n_jobs=spec.n_jobs, progress=cb)

    X_corpus = feat(cand_cache, 0)
    if same_config:
        X_ref_corpus = X_corpus
        ref_cache = cand_cache
    else:
        ref_cache = FeatureCache(cache_root or "", ref_config)
        X_ref_corpus = feat(ref_cache, 1)
    end_stage("features")

    index = {label: i for i, label in enumerate(labels)}
    y_corpus = np.array([index[c.label] for c in clips], dtype=np.int64)
    groups_corpus = [f"{c.corpus}:{c.speaker}" for c in clips]
    fb_rows = [
        (np.asarray(x, dtype=np.float32), index[label], f"feedback:{user}")
        for x, label, user in zip(spec.feedback_X, spec.feedback_labels, spec.feedback_users, strict=True)
        if label in index and len(x) == config.n_features
    ]
    n_fb = len(fb_rows)
    if n_fb:
        X_all = np.vstack([X_corpus, np.stack([r[0] for r in fb_rows])])
        y_all = np.concatenate([y_corpus, np.array([r[1] for r in fb_rows], dtype=np.int64)])
        groups = np.array(groups_corpus + [r[2] for r in fb_rows])
    else:
        X_all, y_all, groups = X_corpus, y_corpus, np.array(groups_corpus)
    is_fb = np.arange(len(y_all)) >= len(y_corpus)
    weights = np.where(is_fb, float(spec.feedback_weight), 1.0)
    rng = np.random.default_rng(spec.seed)
    y_train_all = rng.permutation(y_all) if spec.corrupt_labels else y_all

    # ---------------------------------------------------------- evaluating
    n_groups = len(set(groups.tolist()))
    folds = min(spec.folds, n_groups)
    if folds < 2:
        raise CorpusError("Speaker-independent evaluation needs at least two speakers.")
    overrides = {"max_iter": spec.max_iter} if spec.max_iter else {}
    ref_preset, ref_scaler, ref_seed, ref_params = _reference_recipe(ref_bundle.metadata, spec.preset)
    if spec.max_iter:
        ref_params["max_iter"] = spec.max_iter
    splits = list(GroupKFold(n_splits=folds).split(X_all, y_all, groups))
    n_fits = 2 * len(splits)
    pred_c = np.empty_like(y_all)
    pred_r = np.empty_like(y_all)
    tested = np.zeros(len(y_all), dtype=bool)
    emit("evaluating", 0.0, f"{folds} speaker-independent folds")
    for k, (train, test) in enumerate(splits):
        cand = _fit(spec.preset, True, spec.seed, overrides, X_all[train], y_train_all[train], weights[train])
        pred_c[test] = cand.predict(X_all[test])
        emit("evaluating", (2 * k + 1) / n_fits, f"fold {k + 1}/{folds}: candidate")
        ref_train = train[~is_fb[train]]
        ref_test = test[~is_fb[test]]
        ref = _fit(ref_preset, ref_scaler, ref_seed, ref_params, X_ref_corpus[ref_train], y_all[ref_train], None)
        if ref_test.size:
            pred_r[ref_test] = ref.predict(X_ref_corpus[ref_test])
        tested[ref_test] = True  # scored on corpus rows only: feedback rows only train
        emit("evaluating", (2 * k + 2) / n_fits, f"fold {k + 1}/{folds}: active recipe")
    s_c = score(y_all[tested], pred_c[tested], len(labels))
    s_r = score(y_all[tested], pred_r[tested], len(labels))
    candidate = {k: s_c[k] for k in ("macro_f1", "uar", "accuracy")}
    reference = {k: s_r[k] for k in ("macro_f1", "uar", "accuracy")}
    promoted = candidate["macro_f1"] >= reference["macro_f1"] - spec.margin
    if promoted:
        reason = (f"macro-F1 {candidate['macro_f1']:.3f} >= active {reference['macro_f1']:.3f} "
                  f"- margin {spec.margin:.3f}")  # fmt: skip
    else:
        reason = (f"macro-F1 {candidate['macro_f1']:.3f} is more than {spec.margin:.3f} below the active "
                  f"model's {reference['macro_f1']:.3f} on the same folds")  # fmt: skip
    end_stage("evaluating")

    # ------------------------------------------------------------- fitting
    emit("fitting", 0.0, f"{len(y_all)} rows")
    final = _fit(spec.preset, True, spec.seed, overrides, X_all, y_train_all, weights)
    mlp = final.named_steps["mlp"]
    if hasattr(mlp, "_optimizer"):
        del mlp._optimizer
    emit("fitting", 1.0)
    end_stage("fitting")

    # -------------------------------------------------------------- saving
    emit("saving", 0.0)
    comparison = {
        "candidate": candidate,
        "reference": reference,
        "reference_version": ref_version,
        "reference_recipe": {"preset": ref_preset, "scaler": ref_scaler},
        "folds": folds,
        "groups": "corpus speakers and feedback users (GroupKFold)",
        "margin": spec.margin,
        "promoted": promoted,
        "reason": reason,
    }
    params = mlp_params(spec.preset, overrides)
    metadata: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": spec.preset,
        "mlp_params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "scaler": True,
        "random_state": spec.seed,
        "versions": library_versions(),
        "data_fingerprint": data_fingerprint(clips),
        "n_clips": len(clips),
        "n_feedback": n_fb,
        "feedback_weight": spec.feedback_weight,
        "n_speakers": len({c.speaker for c in clips}),
        "class_counts": {label: int(np.sum(y_all == i)) for i, label in enumerate(labels)},
        "corpora": sorted({c.corpus for c in clips}),
        "corpus_dirs": [str(d) for d in spec.corpus_dirs],
        "emotions": spec.emotions,
        "speakers": spec.speakers,
        "n_iter": int(mlp.n_iter_),
        "final_loss": float(mlp.loss_),
        "comparison": comparison,
        "corrupt_labels": spec.corrupt_labels,
    }
    bundle = ModelBundle(pipeline=final, labels=labels, feature_config=config, metadata=metadata)
    entry = registry.register(bundle, source="retrain", note=reason,
                              extra={"promoted": False, "requested_by": spec.requested_by})  # fmt: skip
    end_stage("saving")
    emit("saving", 1.0)
    return {
        "version": entry.version,
        "promoted": promoted,
        "reason": reason,
        "candidate": candidate,
        "reference": reference,
        "reference_version": ref_version,
        "folds": folds,
        "n_clips": len(clips),
        "n_feedback": n_fb,
        "labels": list(labels),
        "margin": spec.margin,
        "elapsed_s": time.monotonic() - t0,
        "stage_s": stage_s,
        "cache_hits": cand_cache.hits + (0 if same_config else ref_cache.hits),
        "cache_misses": cand_cache.misses + (0 if same_config else ref_cache.misses),
    }


def _child(spec_dict: dict[str, Any], q: Any) -> None:
    """Entry point of the spawned process: one BLAS thread, run, report."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        pass
    try:
        result = run_retrain(RetrainSpec(**spec_dict), q.put)
    except Exception as exc:  # reported to the parent, which shows a short message
        from .errors import SERError

        message = exc.user_message if isinstance(exc, SERError) else f"{type(exc).__name__}: {exc}"
        q.put({"type": "error", "message": message})
        return
    q.put({"type": "done", "result": result})


class RetrainJob:
    """:func:`run_retrain` in a spawned child process.

    Parameters
    ----------
    spec : RetrainSpec

    Attributes
    ----------
    started_at : float
        ``time.monotonic()`` at :meth:`start`.
    last_progress : dict or None
        The latest progress message.
    result : dict or None
        :func:`run_retrain`'s result once done.
    error : str or None
        Why it failed (an exception, or the process died).
    """

    def __init__(self, spec: RetrainSpec) -> None:
        self.spec = spec
        self._ctx = mp.get_context("spawn")
        self._queue: Any = self._ctx.Queue()
        self._process: Any = None
        self.started_at = 0.0
        self.last_progress: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Start the child process."""
        self._process = self._ctx.Process(target=_child, args=(asdict(self.spec), self._queue), daemon=True,
                                          name="ser-retrain")  # fmt: skip
        self.started_at = time.monotonic()
        self._process.start()

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before :meth:`start`)."""
        return None if self._process is None else self._process.pid

    @property
    def finished(self) -> bool:
        """Whether a result or an error is known."""
        return self.result is not None or self.error is not None

    def poll(self) -> list[dict[str, Any]]:
        """Messages that arrived since the last call (never blocks).

        Sets :attr:`result` / :attr:`error`; a child that exited without a
        final message sets :attr:`error` to say how it ended.
        """
        messages = []
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue_mod.Empty:
                break
            except (EOFError, OSError):  # pragma: no cover - queue torn down
                break
            messages.append(msg)
            if msg.get("type") == "progress":
                self.last_progress = msg
            elif msg.get("type") == "done":
                self.result = msg["result"]
            elif msg.get("type") == "error":
                self.error = str(msg.get("message"))
        if not self.finished and self._process is not None and not self._process.is_alive():
            # The final message may still be in the pipe's feeder: look once more.
            try:
                msg = self._queue.get(timeout=0.5)
            except (queue_mod.Empty, EOFError, OSError):
                code = self._process.exitcode
                self.error = f"the training process ended unexpectedly (exit code {code})"
            else:
                messages.append(msg)
                if msg.get("type") == "done":
                    self.result = msg["result"]
                elif msg.get("type") == "error":
                    self.error = str(msg.get("message"))
        return messages

    def kill(self) -> None:
        """Stop the child at once (SIGKILL); the registry's active pointer is untouched."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to exit."""
        if self._process is not None:
            self._process.join(timeout)

    def wait(self, timeout: float | None = None, *, on_message: Callable[[dict[str, Any]], None] | None = None,
             interval_s: float = 0.2) -> None:  # fmt: skip
        """Block until finished (for command-line use), passing messages to ``on_message``.

        Raises
        ------
        TimeoutError
            If not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for msg in self.poll():
                if on_message is not None:
                    on_message(msg)
            if self.finished:
                self.join(5)
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("training did not finish in time")
            time.sleep(interval_s)
