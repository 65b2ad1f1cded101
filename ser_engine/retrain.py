"""Retraining with a quality gate, in a separate process with progress reports.

:func:`run_retrain` does the work (in whatever process calls it):

1. **features** -- corpus clips from one or more folders (RAVDESS layout
   or manifest corpora, :func:`~ser_engine.corpora.load_corpora`; a recipe
   that names its ``corpora`` keeps those and refuses to run without one),
   through the per-file :class:`~ser_engine.cache.FeatureCache` (a recipe
   with a ``codec`` history: with its degraded copies, per chunk); plus
   feedback rows (feature vectors and labels given by users, no audio).
   Each recipe's features and the degraded copies its augmentation asks
   for (:mod:`ser_engine.augment`; cached per chunk of clips).
2. **evaluating** -- speaker-independent ``GroupKFold`` (groups: corpus
   speakers, and ``feedback:<user id>`` for feedback rows, so no voice is
   on both sides of a split).  On the *same* folds two
   :class:`~ser_engine.recipe.Recipe` s are fitted and scored on the
   held-out rows: the candidate (``spec.recipe``, by default the active
   model's own recipe, trained on corpus + feedback, feedback weighted) and
   the reference (:meth:`Recipe.from_bundle` of the active registry
   version -- features, speaker normalisation, augmentation, MLP -- trained
   on the corpus rows only).  Both are scored on the held-out corpus rows
   (true labels), held-out speakers normalised from their own clips;
   pooled macro-F1, UAR and accuracy.  The folds skip the temperature: it
   never changes a label.
3. **fitting** -- the candidate recipe on every row, with its speaker
   normalisation, augmentation and temperature (inner speaker folds).
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
    {"type": "error", "error_type": "...", "message": "...", "user_message": "..." or None}

Killing the child at any point leaves the registry's active pointer
untouched (the child never writes it).
"""

from __future__ import annotations

import queue as queue_mod
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .recipe import Recipe

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
    preset : str or None
        Candidate MLP preset (a key of :data:`ser_engine.training.PRESETS`)
        replacing the candidate recipe's; None keeps the recipe's.
    max_iter : int or None
        Override of ``max_iter`` for both the candidate and the reference recipe.
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
    seed : int or None
        MLP seed of the candidate (None: the recipe's); also seeds ``corrupt_labels``.
    corrupt_labels : bool
        **Testing only**: train the candidate on shuffled labels (evaluation labels stay true),
        to produce a model the gate must reject.
    requested_by : str
        Who asked (recorded in the registry).
    recipe : Recipe, dict or None
        The candidate :class:`~ser_engine.recipe.Recipe` (a dict of
        :meth:`Recipe.to_dict` is converted); None: the active bundle's own
        recipe (:meth:`Recipe.from_bundle`), so a retrain trains what ships.

    Raises
    ------
    ValueError
        If ``recipe`` is a dict that is no valid recipe.
    """

    corpus_dirs: list[str]
    registry_dir: str
    cache_dir: str | None = None
    emotions: list[str] | None = None
    speakers: list[str] | None = None
    preset: str | None = None
    max_iter: int | None = None
    folds: int = 6
    margin: float = 0.02
    feedback_X: list[list[float]] = field(default_factory=list)
    feedback_labels: list[str] = field(default_factory=list)
    feedback_users: list[int] = field(default_factory=list)
    feedback_weight: float = 2.0
    n_jobs: int = 1
    seed: int | None = None
    corrupt_labels: bool = False
    requested_by: str = ""
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if isinstance(self.recipe, Mapping):
            self.recipe = Recipe.from_dict(self.recipe)


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


def _recipes(spec: RetrainSpec, active: Recipe) -> tuple[Recipe, Recipe]:
    """(candidate, reference): the spec's recipe or the active one, both with the spec's ``max_iter``."""
    from dataclasses import replace

    candidate = spec.recipe if isinstance(spec.recipe, Recipe) else active
    if spec.preset is not None and spec.preset != candidate.preset:
        candidate = replace(candidate, preset=spec.preset)
    if spec.seed is not None and spec.seed != candidate.seed:
        candidate = replace(candidate, seed=spec.seed)
    reference = active
    if spec.max_iter:
        # Both sides get the same epoch budget, so the gate compares recipes, not budgets.
        candidate, reference = candidate.with_mlp(max_iter=spec.max_iter), reference.with_mlp(max_iter=spec.max_iter)
    return candidate, reference


def _gate_fold(
    recipe: Recipe, X: np.ndarray, y: np.ndarray, groups: np.ndarray, augment: dict[str, np.ndarray],
    train: np.ndarray, test: np.ndarray, weights: np.ndarray | None, corpora: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Fit ``recipe`` on rows ``train`` (uncalibrated: a temperature never changes a label); labels of ``test``."""
    from .recipe import RecipeModel

    model = RecipeModel(recipe).fit(X[train], y[train], groups[train], augment={c: A[train] for c, A in augment.items()},
                                    sample_weight=None if weights is None else weights[train], calibrate=False,
                                    corpora=corpora[train])  # fmt: skip
    return model.predict(X[test], groups[test])


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
        ``candidate_recipe`` and ``reference_recipe`` (:meth:`Recipe.to_dict`),
        ``reference_version`` (int or None), ``folds``, ``n_clips``,
        ``n_feedback``, ``labels``, ``margin``, ``temperature`` (of the new
        model), ``elapsed_s``, ``stage_s`` (seconds per stage),
        ``cache_hits``, ``cache_misses`` (clean feature vectors of the per-file cache).

    Raises
    ------
    ser_engine.errors.CorpusError
        If no clip is found, fewer than two emotions or two speaker groups remain.
    ser_engine.errors.ModelError
        If the registry has no loadable active version.
    ValueError
        If the active bundle's metadata describes no valid recipe.
    """
    from sklearn.model_selection import GroupKFold

    from .bundle import library_versions
    from .cache import CHUNK, FeatureCache
    from .corpora import load_corpora
    from .errors import CorpusError
    from .evaluation import score
    from .recipe import RecipeModel
    from .registry import ModelRegistry
    from .training import data_fingerprint, featurize_conditions, label_order

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
    candidate_recipe, reference_recipe = _recipes(spec, Recipe.from_bundle(ref_bundle))

    # ------------------------------------------------------------ features
    emit("features", 0.0, "reading the corpus")
    # RAVDESS-layout folders and manifest corpora (several corpora: Recipe.corpora) alike.
    clips = load_corpora(spec.corpus_dirs, emotions=spec.emotions) if spec.corpus_dirs else []
    if spec.speakers:
        keep = {str(s) for s in spec.speakers}

        def digits(name: str) -> str:
            return "".join(ch for ch in name if ch.isdigit()).zfill(2)

        keep |= {digits(s) for s in keep}
        clips = [c for c in clips if c.speaker in keep or digits(c.speaker) in keep]
    if not clips:
        raise CorpusError("No training clip found in the configured corpus folders.")
    if candidate_recipe.corpora:
        try:
            clips = candidate_recipe.select(clips)
        except ValueError:
            raise CorpusError(
                f"The recipe trains on the corpora {', '.join(candidate_recipe.corpora)}; the configured corpus "
                f"folders hold {', '.join(sorted({c.corpus for c in clips}))}."
            ) from None
    labels = label_order(clips)
    if len(labels) < 2:
        raise CorpusError("The training data holds fewer than two emotions.")
    cache_root = spec.cache_dir
    paths = [c.path for c in clips]
    # What each feature configuration and codec history needs: its clean vectors and the degraded
    # copies of the recipes using it.
    needs: dict[Any, list[str]] = {}
    for r in (candidate_recipe, reference_recipe):
        key = (r.features, r.codec)
        needs.setdefault(key, [])
        needs[key] += [c for c in r.augment if c not in needs[key]]
    # Progress in feature extractions: a degraded copy costs about one more (plus its codec).
    total_units = sum(len(paths) * (1 + len(conds)) for conds in needs.values())
    done_units = [0]
    caches: list[FeatureCache] = []
    matrices: dict[Any, dict[str, np.ndarray]] = {}
    for (config, codec), conditions in needs.items():
        if codec is not None:
            # A codec history changes the clean vectors too: they come with the degraded copies, per chunk.
            matrices[(config, codec)] = {}
            conditions = ["clean", *conditions]
        cache = FeatureCache(cache_root or ".", config)  # only read/written when cache_root is set
        caches.append(cache)
        base = done_units[0]

        def cb(done: int, total: int, base: int = base) -> None:
            emit("features", (base + done) / total_units, f"{done}/{total} clips")

        if codec is not None:
            pass
        elif cache_root is None:
            from .features import extract_many

            clean = np.zeros((len(paths), config.n_features), dtype=np.float32)
            for start in range(0, len(paths), CHUNK):
                clean[start : start + CHUNK] = extract_many(paths[start : start + CHUNK], config=config,
                                                            n_jobs=spec.n_jobs)  # fmt: skip
                cb(min(len(paths), start + CHUNK), len(paths))
        else:
            clean = cache.featurize(paths, n_jobs=spec.n_jobs, progress=cb)
        if codec is None:
            done_units[0] += len(paths)
            matrices[(config, codec)] = {"clean": clean}
        if conditions:
            # Degraded copies in chunks (progress after each); each chunk's matrices are cached under
            # <cache_dir>/conditions, keyed by its files' fingerprint, the condition and the features.
            parts: dict[str, list[np.ndarray]] = {c: [] for c in conditions}
            step = CHUNK * max(1, spec.n_jobs)
            for start in range(0, len(clips), step):
                got = featurize_conditions(
                    clips[start : start + step], conditions, config=config, n_jobs=spec.n_jobs,
                    cache_dir=None if cache_root is None else Path(cache_root) / "conditions", codec=codec,
                )  # fmt: skip
                for c in conditions:
                    parts[c].append(got[c])
                n_done = min(len(clips), start + step)
                done_units[0] += min(step, len(clips) - start) * len(conditions)
                emit("features", done_units[0] / total_units, f"{n_done}/{len(clips)} clips, {'+'.join(conditions)}")
            matrices[(config, codec)].update({c: np.vstack(parts[c]) for c in conditions})
    end_stage("features")

    index = {label: i for i, label in enumerate(labels)}
    y_corpus = np.array([index[c.label] for c in clips], dtype=np.int64)
    groups_corpus = [f"{c.corpus}:{c.speaker}" for c in clips]
    n_corpus = len(clips)
    cand_config = candidate_recipe.features
    fb_rows = [
        (np.asarray(x, dtype=np.float32), index[label], f"feedback:{user}")
        for x, label, user in zip(spec.feedback_X, spec.feedback_labels, spec.feedback_users, strict=True)
        if label in index and len(x) == cand_config.n_features
    ]
    n_fb = len(fb_rows)
    cand_key, ref_key = (cand_config, candidate_recipe.codec), (reference_recipe.features, reference_recipe.codec)
    X_cand = matrices[cand_key]["clean"]
    # Feedback comes as feature vectors without audio: it has no degraded copies (NaN rows are left out).
    aug_cand = {c: matrices[cand_key][c] for c in candidate_recipe.augment}
    if n_fb:
        X_fb = np.stack([r[0] for r in fb_rows])
        X_cand = np.vstack([X_cand, X_fb])
        aug_cand = {c: np.vstack([A, np.full_like(X_fb, np.nan)]) for c, A in aug_cand.items()}
        y_all = np.concatenate([y_corpus, np.array([r[1] for r in fb_rows], dtype=np.int64)])
        groups = np.array(groups_corpus + [r[2] for r in fb_rows])
    else:
        y_all, groups = y_corpus, np.array(groups_corpus)
    X_ref = matrices[ref_key]["clean"]
    aug_ref = {c: matrices[ref_key][c] for c in reference_recipe.augment}
    # Corpus of each row (Recipe.balance, Recipe.calibrate_on); feedback rows are a source of their own.
    row_corpora = np.array([c.corpus for c in clips] + ["feedback"] * n_fb)
    is_fb = np.arange(len(y_all)) >= n_corpus
    weights = np.where(is_fb, float(spec.feedback_weight), 1.0)
    rng = np.random.default_rng(0 if spec.seed is None else spec.seed)
    y_train_all = rng.permutation(y_all) if spec.corrupt_labels else y_all

    # ---------------------------------------------------------- evaluating
    n_groups = len(set(groups.tolist()))
    folds = min(spec.folds, n_groups)
    if folds < 2:
        raise CorpusError("Speaker-independent evaluation needs at least two speakers.")
    splits = list(GroupKFold(n_splits=folds).split(X_cand, y_all, groups))
    # The same recipe on the same rows and labels gives the same predictions (the fits are
    # deterministic for a seed): then the active recipe is fitted once and scored for both.
    same = candidate_recipe == reference_recipe and n_fb == 0 and not spec.corrupt_labels
    jobs: list[tuple[str, int, tuple[Any, ...]]] = []
    for k, (train, test) in enumerate(splits):
        jobs.append(("candidate", k, (candidate_recipe, X_cand, y_train_all, groups, aug_cand, train, test, weights,
                                      row_corpora)))  # fmt: skip
        ref_train, ref_test = train[~is_fb[train]], test[~is_fb[test]]
        if not same and ref_test.size:
            jobs.append(("active recipe", k, (reference_recipe, X_ref, y_all, groups[:n_corpus], aug_ref, ref_train,
                                              ref_test, None, row_corpora[:n_corpus])))  # fmt: skip
    pred_c = np.empty_like(y_all)
    pred_r = np.empty_like(y_all)
    emit("evaluating", 0.0, f"{folds} speaker-independent folds, {'one recipe' if same else 'two recipes'}")
    if spec.n_jobs > 1:
        from joblib import Parallel, delayed

        outputs: Any = Parallel(n_jobs=spec.n_jobs, return_as="generator")(delayed(_gate_fold)(*a) for _, _, a in jobs)
    else:
        outputs = (_gate_fold(*a) for _, _, a in jobs)
    for i, ((who, k, args), pred) in enumerate(zip(jobs, outputs, strict=True)):
        (pred_c if who == "candidate" else pred_r)[args[6]] = pred
        emit("evaluating", (i + 1) / len(jobs), f"fold {k + 1}/{folds}: {who}")
    if same:
        pred_r = pred_c
    tested = np.zeros(len(y_all), dtype=bool)
    tested[:n_corpus] = True  # scored on corpus rows only: feedback rows only train
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
    calibrating = f", temperature from {candidate_recipe.inner_folds} inner folds" if candidate_recipe.calibrate else ""
    emit("fitting", 0.0, f"{len(y_all)} rows{calibrating}")
    model = RecipeModel(candidate_recipe).fit(X_cand, y_train_all, groups, augment=aug_cand, sample_weight=weights,
                                              n_jobs=spec.n_jobs, corpora=row_corpora)  # fmt: skip
    emit("fitting", 1.0)
    end_stage("fitting")

    # -------------------------------------------------------------- saving
    emit("saving", 0.0)
    comparison = {
        "candidate": candidate,
        "reference": reference,
        "reference_version": ref_version,
        "candidate_recipe": candidate_recipe.to_dict(),
        "reference_recipe": reference_recipe.to_dict(),
        "same_recipe": same,
        "folds": folds,
        "groups": "corpus speakers and feedback users (GroupKFold)",
        "margin": spec.margin,
        "promoted": promoted,
        "reason": reason,
    }
    metadata: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "data_fingerprint": data_fingerprint(clips),
        "fingerprint_method": "sha256 over sorted lines 'relative path, label, size, sha256(content)'",
        "n_clips": len(clips),
        "n_feedback": n_fb,
        "feedback_weight": spec.feedback_weight,
        "n_speakers": len({c.speaker for c in clips}),
        "class_counts": {label: int(np.sum(y_all == i)) for i, label in enumerate(labels)},
        "corpora": sorted({c.corpus for c in clips}),
        "corpus_dirs": [str(d) for d in spec.corpus_dirs],
        "emotions": spec.emotions,
        "speakers": spec.speakers,
        "comparison": comparison,
        "corrupt_labels": spec.corrupt_labels,
    }
    bundle = model.to_bundle(labels, metadata)
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
        "candidate_recipe": candidate_recipe.to_dict(),
        "reference_recipe": reference_recipe.to_dict(),
        "reference_version": ref_version,
        "folds": folds,
        "n_clips": len(clips),
        "n_feedback": n_fb,
        "labels": list(labels),
        "margin": spec.margin,
        "temperature": model.temperature_,
        "elapsed_s": time.monotonic() - t0,
        "stage_s": stage_s,
        "cache_hits": sum(c.hits for c in caches),
        "cache_misses": sum(c.misses for c in caches),
    }


def _spec_dict(spec: RetrainSpec) -> dict[str, Any]:
    """The spec as plain picklable values (the recipe as :meth:`Recipe.to_dict`)."""
    out = {f.name: getattr(spec, f.name) for f in fields(spec)}
    if isinstance(spec.recipe, Recipe):
        out["recipe"] = spec.recipe.to_dict()
    return out


def _child(spec_dict: dict[str, Any], q: Any, hmac_key: str | None = None) -> None:
    """Entry point of the spawned process: one BLAS thread, run, report.

    The process starts with the minimal environment
    (:func:`ser_engine.environment.minimal_process_context`: no ``DISCORD_TOKEN``,
    no ``DATABASE_URL``).  The bundle signing key, the one secret the child
    needs (to sign the version it registers), arrives through the start-up
    pipe as ``hmac_key`` and is put into this process's own ``os.environ``
    only (never into ``/proc/<pid>/environ`` or a command line).

    A failure is reported as ``{"type": "error", "error_type", "message", "user_message"}``:
    ``error_type`` and ``message`` (``type(exc).__name__``, ``str(exc)``) are for the log only;
    ``user_message`` is :attr:`SERError.user_message` for expected failures and None otherwise.
    """
    if hmac_key:
        import os

        from .bundle import HMAC_KEY_ENV

        os.environ[HMAC_KEY_ENV] = hmac_key
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        pass
    try:
        result = run_retrain(RetrainSpec(**spec_dict), q.put)
    except Exception as exc:  # reported to the parent, which logs it and shows users an error id
        from .errors import SERError

        q.put({"type": "error", "error_type": type(exc).__name__, "message": str(exc),
               "user_message": exc.user_message if isinstance(exc, SERError) else None})  # fmt: skip
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
        Why it failed, **for the log only** (``"TypeName: message"`` of the
        child's exception, or how the process died); it may hold paths or
        library messages, so show users an error id instead.
    error_type : str or None
        The exception's class name (None if the process died without one).
    user_message : str or None
        A message safe to show users, when the failure was an expected
        :class:`~ser_engine.errors.SERError` (e.g. no training clip found); else None.
    """

    def __init__(self, spec: RetrainSpec) -> None:
        self.spec = spec
        from .environment import minimal_process_context

        self._ctx = minimal_process_context("spawn")  # no DISCORD_TOKEN / DATABASE_URL in the child
        self._queue: Any = self._ctx.Queue()
        self._process: Any = None
        self.started_at = 0.0
        self.last_progress: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_type: str | None = None
        self.user_message: str | None = None

    def _failed(self, msg: dict[str, Any]) -> None:
        self.error_type = None if msg.get("error_type") is None else str(msg["error_type"])
        text = str(msg.get("message"))
        self.error = f"{self.error_type}: {text}" if self.error_type else text
        self.user_message = None if msg.get("user_message") is None else str(msg["user_message"])

    def start(self) -> None:
        """Start the child process."""
        import os

        from .bundle import HMAC_KEY_ENV

        key = os.environ.get(HMAC_KEY_ENV) or None  # the child signs what it registers (see _child)
        self._process = self._ctx.Process(target=_child, args=(_spec_dict(self.spec), self._queue, key), daemon=True,
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
                self._failed(msg)
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
                    self._failed(msg)
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
