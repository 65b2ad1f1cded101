"""The baseline: the speech-emotion recipe that SER tutorials and hobby projects copy.

Re-implemented here from its description, as the yardstick the engine is
raced against.  The recipe, as widely published for RAVDESS (e.g. the
DataFlair "Speech Emotion Recognition" project, 2019, and the many Kaggle
notebooks and Discord/Telegram bots derived from it):

1. **Decode** with pydub (``AudioSegment.from_file``: an ffprobe run to read
   the stream, then an ffmpeg run to WAV, both subprocesses), then convert to
   mono 16 kHz with pydub (``set_channels`` / ``set_frame_rate``, i.e.
   ``audioop``) and to float samples in [-1, 1).
2. **Features**, each computed by its own librosa call *on the raw signal*
   with librosa's defaults (2048-point FFT, hop 512), each averaged over time:

   * 40 MFCC -- ``librosa.feature.mfcc(y=X, sr=sr, n_mfcc=40)`` (its own STFT
     and mel filter bank);
   * 12 chroma -- ``librosa.feature.chroma_stft(S=|STFT|, sr=sr)`` (rebuilds
     the chroma filter bank on every call);
   * 128 mel bands -- ``librosa.feature.melspectrogram(y=X, sr=sr)`` (another
     STFT and mel filter bank);
   * 7 spectral-contrast bands -- ``librosa.feature.spectral_contrast(S=|STFT|, sr=sr)``;
   * 6 tonnetz dimensions -- ``librosa.feature.tonnetz(y=librosa.effects.harmonic(X), sr=sr)``
     (harmonic/percussive separation by median filtering, then a constant-Q
     chroma).

   193 features in all, no scaling.
3. **Classify** with scikit-learn's ``MLPClassifier(hidden_layer_sizes=(300,),
   alpha=0.01, batch_size=256, epsilon=1e-08, learning_rate="adaptive",
   max_iter=500)``, trained once on all 1440 RAVDESS speech clips (8 emotions;
   the original tutorial kept 4 of them, which does not change the cost).

The trained reference model is cached under ``.cache/benchmarks/`` (git
ignores ``/.cache/``) together with its feature matrix and the time the
training took; it is never committed.

References
----------
McFee et al., "librosa: Audio and music signal analysis in Python", SciPy
2015.  Fitzgerald, "Harmonic/percussive separation using median filtering",
DAFx 2010 (``librosa.effects.harmonic``).  Harte, Sandler & Gasser,
"Detecting harmonic change in musical audio", ACM MM workshop 2006 (tonnetz).
Jiang et al., "Music type classification by spectral contrast feature", ICME
2002.  Livingstone & Russo, RAVDESS, PLoS ONE 13(5), 2018.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = [
    "EMOTIONS",
    "MLP_PARAMS",
    "N_FEATURES",
    "RECIPE_VERSION",
    "SR",
    "ReferencePrediction",
    "ReferencePredictor",
    "decode",
    "extract_features",
    "label_of",
    "load_or_train",
    "load_signal",
    "to_signal",
    "train",
]

RECIPE_VERSION: Final[int] = 1
"""Bump when the recipe's numbers change (invalidates cached reference models)."""

SR: Final[int] = 16_000
"""Analysis sample rate in Hz (the RAVDESS copy the project trains on is 16 kHz)."""

N_FEATURES: Final[int] = 40 + 12 + 128 + 7 + 6
"""193: MFCC, chroma, mel, spectral contrast, tonnetz means."""

MLP_PARAMS: Final[dict[str, Any]] = {
    "hidden_layer_sizes": (300,),
    "alpha": 0.01,
    "batch_size": 256,
    "epsilon": 1e-08,
    "learning_rate": "adaptive",
    "max_iter": 500,
}
"""The tutorial's ``MLPClassifier`` hyper-parameters."""

EMOTIONS: Final[dict[str, str]] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
"""RAVDESS emotion codes (third field of the file name) and their names."""

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = ROOT / ".cache" / "benchmarks"


def label_of(path: Path) -> str:
    """Emotion of a RAVDESS clip from its file name ``MM-VC-EE-II-SS-RR-AA``.

    Raises
    ------
    KeyError
        If the third field is not an emotion code 01-08.
    """
    return EMOTIONS[path.stem.split("-")[2]]


# --------------------------------------------------------------- the recipe
def decode(source: bytes | str | os.PathLike[str]) -> Any:
    """Decode with pydub/ffmpeg, as the recipe does.

    Parameters
    ----------
    source : bytes or path-like
        Encoded audio (any format ffmpeg reads).

    Returns
    -------
    pydub.AudioSegment
        The decoded audio at its own rate, channels and sample width.
    """
    with warnings.catch_warnings():  # pydub warns at import if ffmpeg is not on PATH
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment

    if isinstance(source, (bytes, bytearray, memoryview)):
        return AudioSegment.from_file(io.BytesIO(bytes(source)))
    return AudioSegment.from_file(os.fspath(source))


def to_signal(segment: Any, sr: int = SR) -> np.ndarray:
    """Mono samples at ``sr`` from a pydub segment (pydub's own channel mix and rate conversion).

    Parameters
    ----------
    segment : pydub.AudioSegment
    sr : int
        Output rate in Hz.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Full scale 1.0.
    """
    segment = segment.set_channels(1).set_frame_rate(sr)
    scale = float(1 << (8 * segment.sample_width - 1))
    return np.asarray(segment.get_array_of_samples(), dtype=np.float32) / scale


def load_signal(source: bytes | str | os.PathLike[str]) -> np.ndarray:
    """:func:`decode` then :func:`to_signal`: (n_samples,) float32 at 16 kHz."""
    return to_signal(decode(source))


def extract_features(X: np.ndarray, sr: int = SR) -> np.ndarray:
    """The recipe's 193 features: each descriptor from its own librosa call, averaged over time.

    Parameters
    ----------
    X : np.ndarray, shape (n_samples,)
        Mono signal at ``sr`` Hz.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    np.ndarray, shape (193,), float64
        Means of 40 MFCC, 12 chroma, 128 mel bands (power), 7 spectral
        contrast bands and 6 tonnetz dimensions, in that order.
    """
    import librosa

    stft = np.abs(librosa.stft(X))
    mfccs = np.mean(librosa.feature.mfcc(y=X, sr=sr, n_mfcc=40).T, axis=0)
    chroma = np.mean(librosa.feature.chroma_stft(S=stft, sr=sr).T, axis=0)
    mel = np.mean(librosa.feature.melspectrogram(y=X, sr=sr).T, axis=0)
    contrast = np.mean(librosa.feature.spectral_contrast(S=stft, sr=sr).T, axis=0)
    tonnetz = np.mean(librosa.feature.tonnetz(y=librosa.effects.harmonic(X), sr=sr).T, axis=0)
    return np.hstack([mfccs, chroma, mel, contrast, tonnetz])


def _file_features(path: Path) -> np.ndarray:
    return extract_features(load_signal(path))


# --------------------------------------------------------------- predictor
@dataclass(frozen=True)
class ReferencePrediction:
    """The reference model's answer for one clip.

    Attributes
    ----------
    label : str
        Most probable emotion.
    confidence : float
        Its probability in [0, 1].
    probabilities : dict of str to float
        Probability of each emotion.
    duration_s : float
        Analysed duration in seconds.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    duration_s: float


class ReferencePredictor:
    """Serve the trained reference MLP with the interface the engine's service expects.

    ``predict(source)`` and ``predict_signal(y, sr)`` match
    :class:`ser_engine.predict.Predictor`, so the very same
    :class:`ser_engine.service.EmotionService` can serve the reference in the
    throughput case.

    Parameters
    ----------
    model : sklearn.neural_network.MLPClassifier
        Fitted on :func:`extract_features` vectors; ``classes_`` are label indices.
    labels : sequence of str
        Emotion names by class index.
    """

    def __init__(self, model: Any, labels: Sequence[str]) -> None:
        self.model = model
        self._labels = tuple(labels)

    @property
    def labels(self) -> tuple[str, ...]:
        """Emotion names by class index."""
        return self._labels

    def classify(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities of one feature vector.

        Parameters
        ----------
        features : np.ndarray, shape (193,)

        Returns
        -------
        np.ndarray, shape (n_labels,)
            Probabilities in ``labels`` order.
        """
        proba = self.model.predict_proba(features[None, :])[0]
        out = np.zeros(len(self._labels))
        out[self.model.classes_.astype(int)] = proba
        return out

    def predict_signal(self, y: np.ndarray, sr: int = SR) -> ReferencePrediction:
        """Classify a decoded mono signal (resampled with librosa if ``sr`` is not 16 kHz).

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
        sr : int
            Its sample rate in Hz.

        Returns
        -------
        ReferencePrediction
        """
        y = np.asarray(y, dtype=np.float32)
        if sr != SR:
            import librosa

            y = librosa.resample(y, orig_sr=sr, target_sr=SR)
        p = self.classify(extract_features(y))
        i = int(np.argmax(p))
        return ReferencePrediction(
            label=self._labels[i],
            confidence=float(p[i]),
            probabilities={k: float(v) for k, v in zip(self._labels, p, strict=True)},
            duration_s=y.size / SR,
        )

    def predict(self, source: bytes | str | os.PathLike[str]) -> ReferencePrediction:
        """Decode (pydub/ffmpeg), featurise and classify one recording."""
        return self.predict_signal(load_signal(source), SR)


# ----------------------------------------------------------------- training
def train(
    clips: Sequence[Path], *, n_jobs: int = 2, random_state: int = 0
) -> tuple[Any, tuple[str, ...], np.ndarray, np.ndarray, dict[str, float]]:
    """Extract the recipe's features of ``clips`` and fit the tutorial MLP on all of them.

    Parameters
    ----------
    clips : sequence of Path, length n_clips
        RAVDESS clips (labels from their names).
    n_jobs : int
        joblib (loky) processes for feature extraction; the fit is one process.
    random_state : int
        Seed of the MLP.

    Returns
    -------
    model : sklearn.neural_network.MLPClassifier
    labels : tuple of str
        Emotion names by class index (RAVDESS code order, those present).
    X : np.ndarray, shape (n_clips, 193)
    y : np.ndarray, shape (n_clips,), int
    timings : dict of str to float
        ``features_s`` and ``fit_s``, wall-clock seconds.
    """
    from joblib import Parallel, delayed
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    present = {label_of(c) for c in clips}
    labels = tuple(e for e in EMOTIONS.values() if e in present)
    y = np.array([labels.index(label_of(c)) for c in clips])
    t0 = time.perf_counter()
    rows = Parallel(n_jobs=n_jobs, batch_size=4)(delayed(_file_features)(c) for c in clips)
    X = np.vstack(rows)
    t1 = time.perf_counter()
    model = MLPClassifier(random_state=random_state, **MLP_PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    t2 = time.perf_counter()
    return model, labels, X, y, {"features_s": t1 - t0, "fit_s": t2 - t1}


def fit_time(X: np.ndarray, y: np.ndarray, *, random_state: int = 0) -> float:
    """Seconds to fit the tutorial MLP on a feature matrix (the training step of a retrain).

    Parameters
    ----------
    X : np.ndarray, shape (n_clips, 193)
    y : np.ndarray, shape (n_clips,)
    random_state : int

    Returns
    -------
    float
        Wall-clock seconds of ``MLPClassifier.fit``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(random_state=random_state, **MLP_PARAMS)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    return time.perf_counter() - t0


def _quick_subset(clips: Sequence[Path], per_label: int = 3) -> list[Path]:
    chosen: list[Path] = []
    counts: dict[str, int] = {}
    for c in clips:
        label = label_of(c)
        if counts.get(label, 0) < per_label:
            chosen.append(c)
            counts[label] = counts.get(label, 0) + 1
    return chosen


def _cache_key(clips: Sequence[Path], root: Path) -> str:
    import librosa
    import sklearn

    h = hashlib.sha256(f"recipe v{RECIPE_VERSION} librosa {librosa.__version__} sklearn {sklearn.__version__}".encode())
    for c in clips:
        h.update(f"\n{c.relative_to(root).as_posix()}\t{c.stat().st_size}".encode())
    return h.hexdigest()[:20]


def load_or_train(
    clips: Sequence[Path],
    root: Path,
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    allow_subset: bool = False,
    n_jobs: int = 2,
    log: Any = print,
) -> tuple[ReferencePredictor, dict[str, Any]]:
    """The reference model trained on ``clips``, from the cache or trained now and cached.

    Parameters
    ----------
    clips : sequence of Path
        All RAVDESS speech clips.
    root : Path
        Their common folder (cache keys use paths relative to it).
    cache_dir : Path
        Cache folder (``.cache/benchmarks`` by default; never committed).
    allow_subset : bool
        If no model trained on all clips is cached, train (or reuse) one on 3
        clips per emotion instead of all of them: same architecture, hence
        the same prediction cost, in seconds instead of minutes (``--quick``).
    n_jobs : int
        Feature-extraction processes when training.
    log : callable
        Receives progress lines.

    Returns
    -------
    predictor : ReferencePredictor
    info : dict
        ``n_clips`` trained on, ``subset`` flag, ``cache_file``, the training
        ``timings`` (``features_s``, ``fit_s``, ``n_jobs``, ``measured_at``),
        and ``X``/``y`` (the feature matrix and labels, for the retrain case).
    """
    import joblib

    full_key = _cache_key(clips, root)
    full_file = cache_dir / f"reference-{full_key}.joblib"
    if not full_file.is_file() and allow_subset:
        clips = _quick_subset(clips)
        target = cache_dir / f"reference-{_cache_key(clips, root)}-subset.joblib"
    else:
        target = full_file
    if target.is_file():
        payload = joblib.load(target)
    else:
        log(f"training the reference model on {len(clips)} clips ({n_jobs} processes; cached in {target}) ...")
        model, labels, X, y, timings = train(clips, n_jobs=n_jobs)
        timings = {**timings, "n_jobs": n_jobs, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        payload = {"model": model, "labels": labels, "X": X, "y": y, "timings": timings, "n_clips": len(clips)}
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        os.close(fd)
        joblib.dump(payload, tmp)
        os.replace(tmp, target)
        target.with_suffix(".json").write_text(
            json.dumps({"n_clips": len(clips), "timings": timings, "mlp_params": {**MLP_PARAMS, "hidden_layer_sizes": [300]}}, indent=2)
        )
        log(f"  reference model trained: features {timings['features_s']:.0f} s, fit {timings['fit_s']:.1f} s")
    info = {
        "n_clips": payload["n_clips"],
        "subset": target != full_file,
        "cache_file": str(target),
        "timings": payload["timings"],
        "X": payload["X"],
        "y": payload["y"],
    }
    return ReferencePredictor(payload["model"], payload["labels"]), info
