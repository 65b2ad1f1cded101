"""Training: clips -> feature matrix -> scaled MLP pipeline -> :class:`ModelBundle`.

The classifier is scikit-learn's multi-layer perceptron behind a
``StandardScaler``, both in one :class:`~sklearn.pipeline.Pipeline` so the
scaling fitted on the training data travels with the model.  Hyper-parameters
come in named presets (:data:`PRESETS`):

``"tutorial"``
    The widely copied RAVDESS tutorial recipe (e.g. DataFlair's "Speech
    Emotion Recognition" project, 2019): one hidden layer of 300 units,
    ``alpha=0.01``, ``batch_size=256``, ``epsilon=1e-8``,
    ``learning_rate="adaptive"``, ``max_iter=500``.  (With the default Adam
    solver ``learning_rate`` has no effect; it is kept to match the recipe.)
``"default"``
    Chosen by speaker-independent 6-fold ``GroupKFold`` over the 24 RAVDESS
    actors on the default :class:`~ser_engine.features.FeatureConfig`
    (never on a random split); the grid and its numbers are in
    ``models/README.md``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .audio import AudioLimits
from .bundle import ModelBundle, library_versions
from .corpora import RAVDESS_EMOTIONS, Clip
from .features import FEATURE_VERSION, FeatureConfig, extract_features, extract_many
from .normalization import SpeakerNormalizer

__all__ = [
    "PRESETS",
    "build_pipeline",
    "data_fingerprint",
    "encode_labels",
    "featurize",
    "featurize_condition",
    "featurize_conditions",
    "fit_pipeline",
    "has_codec_history",
    "label_order",
    "mlp_params",
    "train_model",
]

PRESETS: Final[dict[str, dict[str, Any]]] = {
    "tutorial": {
        "hidden_layer_sizes": (300,),
        "alpha": 0.01,
        "batch_size": 256,
        "epsilon": 1e-08,
        "learning_rate": "adaptive",
        "max_iter": 500,
    },
    "default": {
        "hidden_layer_sizes": (64,),
        "alpha": 3.0,
        "batch_size": 256,
        "learning_rate_init": 0.001,
        "max_iter": 500,
    },
}
"""Named ``MLPClassifier`` keyword arguments (``random_state`` excluded)."""


def mlp_params(preset: str = "default", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``MLPClassifier`` keyword arguments of a preset, with overrides.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    overrides : mapping, optional
        Keyword arguments replacing the preset's, e.g. ``{"max_iter": 20}``.

    Returns
    -------
    dict
        A fresh dict (safe to modify).

    Raises
    ------
    ValueError
        If ``preset`` is unknown.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    params = dict(PRESETS[preset])
    params.update(overrides or {})
    return params


def build_pipeline(
    preset: str = "default",
    *,
    scaler: bool = True,
    random_state: int | None = 0,
    overrides: Mapping[str, Any] | None = None,
) -> Pipeline:
    """An unfitted ``[StandardScaler ->] MLPClassifier`` pipeline.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    scaler : bool, default True
        Standardise each feature (zero mean, unit variance, fitted on the
        training data) before the MLP.  The tutorial recipe has none.
    random_state : int or None, default 0
        Seed of the MLP's weight initialisation and batch shuffling.
    overrides : mapping, optional
        ``MLPClassifier`` keyword arguments replacing the preset's.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``("scaler", StandardScaler)`` (if ``scaler``) and ``("mlp", MLPClassifier)``.

    Raises
    ------
    ValueError
        If ``preset`` is unknown.
    """
    steps: list[tuple[str, Any]] = []
    if scaler:
        steps.append(("scaler", StandardScaler()))
    steps.append(("mlp", MLPClassifier(random_state=random_state, **mlp_params(preset, overrides))))
    return Pipeline(steps)


def fit_pipeline(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> bool:
    """Fit a pipeline of :func:`build_pipeline` in place; tell whether the MLP converged.

    scikit-learn clips ``batch_size`` to the number of samples anyway but
    warns each time; clipping first gives the same model without the
    warning on small training sets.  Its ``ConvergenceWarning`` (stopped at
    ``max_iter``) is caught and returned as ``False`` instead.

    The fit runs in float32 (scikit-learn's MLP keeps the input's dtype, so
    its weights are float32 too) with one BLAS thread: on the 2-core
    machine of ``benchmarks/`` an epoch over 5760 x 1514 features with 128
    hidden units took 3x less time in float32 than in float64, and
    OpenBLAS's second thread made it 2-3x slower again
    (mini-batch products of 256 rows are too small to split).

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        With an ``"mlp"`` step.
    X : np.ndarray, shape (n_samples, n_features)
        Cast to float32.
    y : np.ndarray, shape (n_samples,)
    sample_weight : np.ndarray, shape (n_samples,), optional
        Weight of each sample in the MLP's loss (scikit-learn's
        ``MLPClassifier.fit(sample_weight=...)``); None or all ones fit unweighted.

    Returns
    -------
    bool
        True if the MLP met its tolerance criterion before ``max_iter`` epochs.
    """
    mlp = pipeline.named_steps["mlp"]
    if isinstance(mlp.batch_size, int) and mlp.batch_size > len(y):
        mlp.set_params(batch_size=max(1, len(y)))
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        if sample_weight is None or np.allclose(sample_weight, 1.0):
            pipeline.fit(X, y)
        else:
            pipeline.fit(X, y, mlp__sample_weight=np.asarray(sample_weight, dtype=np.float32))
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return converged


def label_order(clips: Sequence[Clip]) -> tuple[str, ...]:
    """Labels present in ``clips``: RAVDESS emotions in code order, then others sorted.

    Parameters
    ----------
    clips : sequence of Clip

    Returns
    -------
    tuple of str
    """
    present = {c.label for c in clips}
    known = tuple(e for e in RAVDESS_EMOTIONS if e in present)
    return known + tuple(sorted(present - set(known)))


def encode_labels(clips: Sequence[Clip], labels: Sequence[str]) -> np.ndarray:
    """Class indices of ``clips`` into ``labels``.

    Parameters
    ----------
    clips : sequence of Clip
    labels : sequence of str

    Returns
    -------
    np.ndarray, shape (n_clips,), int64

    Raises
    ------
    ValueError
        If a clip's label is not in ``labels``.
    """
    index = {label: i for i, label in enumerate(labels)}
    try:
        return np.array([index[c.label] for c in clips], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"label {err.args[0]!r} is not one of {list(labels)}") from None


def corpus_provenance(clips: Sequence[Clip], labels: Sequence[str], y: np.ndarray) -> dict[str, Any]:
    """Bundle metadata naming what a model trained on several corpora saw, and under which licences.

    Parameters
    ----------
    clips : sequence of Clip
        The training clips.
    labels : sequence of str
        Class names, index = class.
    y : np.ndarray, shape (n_clips,), int
        Class of each clip.

    Returns
    -------
    dict
        ``created_at``, ``versions``, ``data_fingerprint`` (:func:`data_fingerprint`), ``n_clips``,
        ``n_speakers``, ``class_counts``, ``corpora``, ``licences``
        (:func:`ser_engine.corpora.licence_table`) and ``licence``: CC BY-NC-SA 4.0 when every corpus may
        train a shared model (:func:`ser_engine.corpora.shareable_clips`), else local use only.
    """
    from .bundle import library_versions
    from .corpora import licence_table, shareable_clips

    shareable = len(shareable_clips(clips)) == len(clips)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "data_fingerprint": data_fingerprint(clips),
        "fingerprint_method": "sha256 over sorted lines 'relative path, label, size, sha256(content)'",
        "n_clips": len(clips),
        "n_speakers": len({c.speaker for c in clips}),
        "class_counts": {label: int(np.sum(np.asarray(y) == i)) for i, label in enumerate(labels)},
        "corpora": sorted({c.corpus for c in clips}),
        "licences": licence_table(clips),
        "licence": ("CC BY-NC-SA 4.0 (non-commercial, share-alike): inherited from every training corpus"
                    if shareable else "for local use only: a training corpus' licence does not allow sharing it"),
    }  # fmt: skip


def data_fingerprint(clips: Sequence[Clip]) -> str:
    """SHA-256 identifying a training set by its files' names, sizes and contents.

    One line per clip, ``relative/path<TAB>label<TAB>size<TAB>sha256(content)``
    with paths relative to the clips' common folder, sorted, joined with
    newlines and hashed.  It does not depend on where the corpus lies.

    Parameters
    ----------
    clips : sequence of Clip

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    ValueError
        If ``clips`` is empty.
    OSError
        If a file cannot be read.
    """
    if not clips:
        raise ValueError("data_fingerprint: no clips")
    paths = [Path(c.path).resolve() for c in clips]
    # A training run asks more than once (feature cache keys, bundle metadata): within one
    # process, files of unchanged size and modification time are not read and hashed again.
    stats = [p.stat() for p in paths]
    key = tuple((str(p), c.label, st.st_size, st.st_mtime_ns) for p, c, st in zip(paths, clips, stats, strict=True))
    if key in _fingerprints:
        return _fingerprints[key]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    lines = []
    for clip, path in zip(clips, paths, strict=True):
        content = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        lines.append(f"{rel}\t{clip.label}\t{len(content)}\t{hashlib.sha256(content).hexdigest()}")
    digest = hashlib.sha256("\n".join(sorted(lines)).encode("utf-8")).hexdigest()
    if len(_fingerprints) >= 4:
        _fingerprints.pop(next(iter(_fingerprints)))
    _fingerprints[key] = digest
    return digest


_fingerprints: dict[tuple[tuple[str, str, int, int], ...], str] = {}


def featurize(
    clips: Sequence[Clip],
    *,
    config: FeatureConfig | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    limits: AudioLimits | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Feature matrix of the clips, via :func:`ser_engine.features.extract_many`.

    Parameters
    ----------
    clips : sequence of Clip
        Audio files to decode (16 kHz mono via :func:`ser_engine.audio.load_audio`).
    config : FeatureConfig, optional
        Features to compute (default ``FeatureConfig()``).
    n_jobs : int, default 1
        joblib worker processes for decoding and extraction.
    progress : bool, default False
        Show a tqdm progress bar on stderr.
    limits : AudioLimits, optional
        Decoding limits (default ``AudioLimits()``).
    cache_dir : str or os.PathLike, optional
        Keep the matrix in ``cache_dir/features-<key>.npy``, keyed by the
        data fingerprint and the feature configuration, and reuse it.

    Returns
    -------
    np.ndarray, shape (n_clips, config.n_features), float32
        Row ``i`` belongs to ``clips[i]``.

    Raises
    ------
    ser_engine.errors.AudioError
        If a clip cannot be decoded.
    """
    config = config or FeatureConfig()
    paths = [Path(c.path) for c in clips]
    cache_file: Path | None = None
    if cache_dir is not None and paths:
        key_src = data_fingerprint(clips) + repr(sorted(config.to_dict().items())) + f"v{FEATURE_VERSION}"
        key_src += "\n" + "\n".join(p.name for p in paths)  # row order
        cache_file = Path(cache_dir) / f"features-{hashlib.sha256(key_src.encode()).hexdigest()[:24]}.npy"
        if cache_file.is_file():
            X = np.load(cache_file)
            if X.shape == (len(paths), config.n_features):
                return X
    if n_jobs != 1 and len(paths) > 1:
        # Run the first clip in this process: it fails fast on a broken
        # corpus before worker processes are started.
        first = extract_many(paths[:1], config=config, limits=limits)
        rest = extract_many(paths[1:], config=config, n_jobs=n_jobs, progress=progress, limits=limits)
        X = np.vstack([first, rest])
    else:
        X = extract_many(paths, config=config, n_jobs=n_jobs, progress=progress, limits=limits)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, X)
        os.replace(tmp, cache_file)
    return X


#: File suffixes of audio that is already Opus-coded (Ogg/Opus, WebM): the extra corpora of
#: ``../shared/data`` (Opus 32 kbit/s, ``../shared/data/README.md``) and Discord's voice notes.
_OPUS_SUFFIXES: Final[tuple[str, ...]] = (".ogg", ".opus", ".oga", ".webm")


def has_codec_history(path: str | os.PathLike[str], codec: str) -> bool:
    """Whether a file already went through the codec family of ``codec`` (so no round trip is added).

    Decided by the file name: ``opus*`` codecs (``opus16k``, ``opus24k``,
    ``opus32k``) count as already applied to ``.ogg``, ``.opus``, ``.oga``
    and ``.webm`` files (the extra corpora were coded with libopus at
    32 kbit/s, ``../shared/data/README.md``); a FLAC or WAV file (RAVDESS)
    has no codec history.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    codec : str
        A condition of :data:`ser_engine.augment.CONDITIONS`, e.g. ``"opus32k"``.

    Returns
    -------
    bool
    """
    if codec.startswith("opus"):
        return Path(path).suffix.lower() in _OPUS_SUFFIXES
    return False


def _conditions_features(
    path: str, conditions: Sequence[str], seed: int, config: FeatureConfig, limits: AudioLimits | None,
    codec: str | None = None,
) -> np.ndarray:
    from .audio import load_audio
    from .augment import apply_condition

    y = load_audio(path, limits=limits)
    if codec is not None and not has_codec_history(path, codec):
        y = apply_condition(y, codec, seed=seed)
    return np.stack([extract_features(y=apply_condition(y, c, seed=seed), config=config) for c in conditions])


def _condition_cache_file(
    cache_dir: str | os.PathLike[str], fingerprint: str, clips: Sequence[Clip], condition: str, config: FeatureConfig,
    codec: str | None = None,
) -> Path:
    from .augment import CONDITIONS_VERSION

    key_src = fingerprint + repr(sorted(config.to_dict().items())) + f"v{FEATURE_VERSION}"
    key_src += f"\ncondition={condition} v{CONDITIONS_VERSION}\n" + "\n".join(Path(c.path).name for c in clips)
    # Only a codec that changes some clip enters the key: an Opus corpus' matrices are the same with or without.
    if codec is not None and any(not has_codec_history(c.path, codec) for c in clips):
        key_src += f"\ncodec={codec}"
    return Path(cache_dir) / f"features-{hashlib.sha256(key_src.encode()).hexdigest()[:24]}.npy"


def featurize_conditions(
    clips: Sequence[Clip],
    conditions: Sequence[str],
    *,
    config: FeatureConfig | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    limits: AudioLimits | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    codec: str | None = None,
) -> dict[str, np.ndarray]:
    """Feature matrices of the clips under degradations of :data:`ser_engine.augment.CONDITIONS`.

    Each clip is decoded once and every condition not yet cached is applied
    to that one signal in the same worker task (one decode and one task per
    clip instead of one per clip and condition).  Clip ``i`` is degraded
    with seed ``i`` (reproducible noise, and the part of a rotation).

    With ``codec`` (a *codec history*, :attr:`ser_engine.recipe.Recipe.codec`)
    every clip without that history (:func:`has_codec_history`: RAVDESS' FLAC)
    first goes through the codec, and the conditions (``"clean"`` too) are
    applied to that coded signal; clips that have it are used as decoded.
    So all training clips share one codec history and a model cannot tell
    corpora apart by their codec.

    Parameters
    ----------
    clips : sequence of Clip
    conditions : sequence of str
        E.g. ``["opus24k", "noise20", "pitch+1"]``; ``"clean"`` equals
        :func:`featurize`; a ``|`` rotation counts as one condition.
    config, n_jobs, limits, cache_dir
        As :func:`featurize`; each condition's matrix is cached in its own
        file (the key includes the condition and
        :data:`~ser_engine.augment.CONDITIONS_VERSION`).
    progress : bool, default False
        Show a tqdm progress bar on stderr.
    codec : str, optional
        A condition of :data:`~ser_engine.augment.CONDITIONS` (e.g.
        ``"opus32k"``) applied first to the clips without that codec history;
        part of the cache key when it changes any clip.

    Returns
    -------
    dict of str to np.ndarray, shape (n_clips, config.n_features), float32
        One matrix per distinct condition; row ``i`` belongs to ``clips[i]``.

    Raises
    ------
    ValueError
        If a condition or the codec is unknown.
    ser_engine.errors.AudioError, RuntimeError
        If a clip cannot be decoded or libopus is missing.
    """
    from .augment import condition_parts

    conditions = list(dict.fromkeys(conditions))
    for condition in conditions:
        condition_parts(condition)  # ValueError if unknown
    if codec is not None:
        condition_parts(codec)
    config = config or FeatureConfig()
    out: dict[str, np.ndarray] = {}
    files: dict[str, Path] = {}
    if cache_dir is not None and clips and conditions:
        fingerprint = data_fingerprint(clips)
        for condition in conditions:
            files[condition] = _condition_cache_file(cache_dir, fingerprint, clips, condition, config, codec)
            if files[condition].is_file():
                X = np.load(files[condition])
                if X.shape == (len(clips), config.n_features):
                    out[condition] = X
    todo = [c for c in conditions if c not in out]
    if not todo:
        return {c: out[c] for c in conditions}
    if not clips:
        return {c: np.zeros((0, config.n_features), np.float32) for c in conditions}
    from tqdm.auto import tqdm

    args = [(str(c.path), todo, i, config, limits, codec) for i, c in enumerate(clips)]
    it = iter(tqdm(args, desc="+".join(todo), unit="clip", disable=not progress))
    # The first clip runs here: a broken corpus or a missing codec fails before workers start.
    rows = [_conditions_features(*next(it))]
    if n_jobs == 1 or len(args) < 2:
        rows += [_conditions_features(*a) for a in it]
    else:
        from joblib import Parallel, delayed

        rows += Parallel(n_jobs=n_jobs, batch_size=4)(delayed(_conditions_features)(*a) for a in it)
    block = np.stack(rows).astype(np.float32, copy=False)  # (n_clips, n_todo, n_features)
    for k, condition in enumerate(todo):
        X = np.ascontiguousarray(block[:, k, :])
        out[condition] = X
        if condition in files:
            files[condition].parent.mkdir(parents=True, exist_ok=True)
            tmp = files[condition].with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, X)
            os.replace(tmp, files[condition])
    return {c: out[c] for c in conditions}


def featurize_condition(
    clips: Sequence[Clip],
    condition: str,
    *,
    config: FeatureConfig | None = None,
    n_jobs: int = 1,
    limits: AudioLimits | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Feature matrix of the clips after one degradation: :func:`featurize_conditions` with one condition.

    Parameters
    ----------
    clips : sequence of Clip
    condition : str
        E.g. ``"opus24k"``, ``"noise20"``, ``"noise10"``; ``"clean"`` equals :func:`featurize`.
    config, n_jobs, limits, cache_dir
        As :func:`featurize` (the cache key includes the condition).

    Returns
    -------
    np.ndarray, shape (n_clips, config.n_features), float32

    Raises
    ------
    ValueError
        If ``condition`` is unknown.
    ser_engine.errors.AudioError, RuntimeError
        If a clip cannot be decoded or libopus is missing.
    """
    return featurize_conditions(
        clips, [condition], config=config, n_jobs=n_jobs, limits=limits, cache_dir=cache_dir
    )[condition]


def train_model(
    clips: Sequence[Clip],
    *,
    feature_config: FeatureConfig | None = None,
    preset: str = "default",
    scaler: bool = True,
    overrides: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    labels: Sequence[str] | None = None,
    X: np.ndarray | None = None,
    metrics: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    limits: AudioLimits | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    normalization: str = "none",
    min_clips: int = 5,
    temperature: float = 1.0,
    unsure_below: float | None = None,
    augment: Mapping[str, np.ndarray] | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> ModelBundle:
    """Fit a pipeline on all ``clips`` and wrap it with its provenance.

    Parameters
    ----------
    clips : sequence of Clip
        Training clips (e.g. from :func:`ser_engine.corpora.load_ravdess`).
    feature_config : FeatureConfig, optional
        Features to train on (default ``FeatureConfig()``).
    preset : str, default "default"
        A key of :data:`PRESETS`.
    scaler : bool, default True
        Put a ``StandardScaler`` before the MLP.
    overrides : mapping, optional
        ``MLPClassifier`` keyword arguments replacing the preset's.
    random_state : int or None, default 0
        MLP seed.
    labels : sequence of str, optional
        Class order (default :func:`label_order` of ``clips``).
    X : np.ndarray, shape (n_clips, feature_config.n_features), optional
        Precomputed features of ``clips`` (from :func:`featurize` with the
        same configuration); extracted when omitted.
    metrics : mapping, optional
        Evaluation results to store in the metadata (e.g.
        ``EvaluationReport.summary()``).
    n_jobs, progress, limits, cache_dir
        Passed to :func:`featurize`.
    normalization : {"none", "speaker"}, default "none"
        ``"speaker"``: standardise each training speaker's clips with that
        speaker's statistics and store a fitted
        :class:`~ser_engine.normalization.SpeakerNormalizer` (fallback
        statistics for new speakers) in the bundle.
    min_clips : int, default 5
        Clips of a speaker needed before prediction uses their own statistics.
    temperature : float, default 1.0
        Probability temperature stored in the bundle (e.g. from
        :func:`ser_engine.calibration.fit_temperature` on speaker-independent
        out-of-fold predictions of the training speakers).
    unsure_below : float, optional
        Default confidence threshold of :attr:`Prediction.unsure`, stored
        as ``metadata["unsure_below"]``.
    augment : mapping of str to np.ndarray, optional
        Condition name -> features of the same clips degraded that way
        (:func:`featurize_condition`), added as extra training rows (each
        normalised per speaker from that speaker's degraded clips).
    recipe : mapping, optional
        :meth:`ser_engine.recipe.Recipe.to_dict` of the recipe these
        arguments come from, stored as ``metadata["recipe"]``
        (``Recipe.from_bundle`` reads it back).

    Returns
    -------
    ModelBundle
        ``metadata`` holds ``created_at`` (UTC ISO 8601), ``preset``,
        ``mlp_params``, ``scaler``, ``random_state``, ``versions``,
        ``data_fingerprint``, ``n_clips``, ``n_speakers``, ``class_counts``,
        ``corpora``, ``n_iter``, ``converged`` and ``final_loss`` of the MLP, and
        ``metrics`` if given.

    Raises
    ------
    ValueError
        If ``clips`` is empty, has fewer than two labels, ``X`` has the wrong
        shape, or ``preset`` is unknown.
    ser_engine.errors.AudioError
        If a clip cannot be decoded.
    """
    if not clips:
        raise ValueError("train_model: no clips")
    config = feature_config or FeatureConfig()
    labels = tuple(labels) if labels is not None else label_order(clips)
    if len(labels) < 2:
        raise ValueError("train_model: need at least two emotions to train a classifier")
    y = encode_labels(clips, labels)
    missing = [labels[i] for i in range(len(labels)) if not np.any(y == i)]
    if missing:
        raise ValueError(f"train_model: no training clip for {missing}")
    if X is None:
        X = featurize(clips, config=config, n_jobs=n_jobs, progress=progress, limits=limits, cache_dir=cache_dir)
    elif X.shape != (len(clips), config.n_features):
        raise ValueError(f"train_model: X has shape {X.shape}, expected {(len(clips), config.n_features)}")

    if normalization not in ("none", "speaker"):
        raise ValueError(f"train_model: normalization must be 'none' or 'speaker', got {normalization!r}")
    extra = list((augment or {}).values())
    if any(np.shape(A) != X.shape for A in extra):
        raise ValueError(f"train_model: every augment matrix must have the shape of X, {X.shape}")
    normalizer = None
    speakers = np.array([c.speaker for c in clips])
    if normalization == "speaker":
        normalizer = SpeakerNormalizer(min_clips=min_clips).fit(X, speakers)
        X = np.vstack([normalizer.transform_groups(M, speakers) for M in [X, *extra]])
    elif extra:
        X = np.vstack([X, *extra])
    y = np.concatenate([y] * (1 + len(extra)))
    params = mlp_params(preset, overrides)
    pipeline = build_pipeline(preset, scaler=scaler, random_state=random_state, overrides=overrides)
    converged = fit_pipeline(pipeline, X, y)
    mlp: MLPClassifier = pipeline.named_steps["mlp"]
    # Adam's moment estimates double the pickle and serve only to resume
    # training; without them partial_fit starts a fresh optimiser.
    if hasattr(mlp, "_optimizer"):
        del mlp._optimizer
    counts = {label: int(np.sum(y == i)) for i, label in enumerate(labels)}
    metadata: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        "mlp_params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "scaler": scaler,
        "random_state": random_state,
        "versions": library_versions(),
        "data_fingerprint": data_fingerprint(clips),
        "fingerprint_method": "sha256 over sorted lines 'relative path, label, size, sha256(content)'",
        "n_clips": len(clips),
        "n_speakers": len({c.speaker for c in clips}),
        "class_counts": counts,
        "corpora": sorted({c.corpus for c in clips}),
        "n_iter": int(mlp.n_iter_),
        "converged": converged,
        "final_loss": float(mlp.loss_),
        "normalization": normalization,
        "min_clips": min_clips,
        "augment": sorted(augment or {}),
        "temperature": float(temperature),
    }
    if unsure_below is not None:
        metadata["unsure_below"] = float(unsure_below)
    if metrics is not None:
        metadata["metrics"] = dict(metrics)
    if recipe is not None:
        metadata["recipe"] = dict(recipe)
    return ModelBundle(pipeline=pipeline, labels=labels, feature_config=config, metadata=metadata,
                       normalizer=normalizer, temperature=temperature)  # fmt: skip
