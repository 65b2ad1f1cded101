"""Model bundles: a fitted pipeline with its labels, feature configuration and provenance.

On disk a bundle is two files side by side:

``NAME.joblib``
    A joblib pickle of ``{"format", "pipeline", "labels", "feature_config",
    "metadata"}`` and, from format 2 on, ``"normalization"`` (a
    :meth:`SpeakerNormalizer.to_dict` or None) and ``"temperature"``.
``NAME.json``
    A human-readable sidecar: the SHA-256 and size of the ``.joblib`` file,
    the library versions that wrote it, and a copy of the labels, feature
    configuration and metadata (training-data fingerprint, metrics, ...).

:func:`load_bundle` reads the sidecar first, checks the library and feature
versions and the SHA-256 of the joblib bytes, and unpickles only bytes whose
hash matches.  The hash guards against corrupted, truncated or edited model
files; it is **not** a signature: whoever can replace both files can run
code through the pickle, so load bundles only from places you trust (or pin
the hash with ``expected_sha256``).  Both files are written atomically
(temporary file, fsync, ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
from sklearn.pipeline import Pipeline

from .errors import ModelCompatibilityError, ModelIntegrityError, ModelNotFoundError
from .features import FEATURE_VERSION, FeatureConfig
from .normalization import SpeakerNormalizer

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_MODEL_PATH",
    "ModelBundle",
    "library_versions",
    "load_bundle",
    "save_bundle",
    "sidecar_path",
]

BUNDLE_FORMAT: Final[int] = 2
"""Layout version of the joblib payload and its sidecar that this engine writes.

Format 1 had no ``normalization`` and ``temperature`` (read as "none" and
1.0); format 2 adds them.  An engine that only knows format 1 refuses a
format-2 bundle instead of silently skipping its speaker normalisation."""

READABLE_FORMATS: Final[tuple[int, ...]] = (1, 2)
"""Bundle formats :func:`load_bundle` accepts."""

DEFAULT_MODEL_PATH: Final[Path] = Path(__file__).resolve().parents[1] / "models" / "ravdess-8class.joblib"
"""The shipped model: 8 RAVDESS emotions, see ``models/README.md``."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a bundle depends on.

    Returns
    -------
    dict of str to str
        Keys ``python``, ``numpy``, ``scikit-learn``, ``librosa``, ``joblib``.
    """
    import librosa
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "librosa": librosa.__version__,
        "joblib": joblib.__version__,
    }


@dataclass
class ModelBundle:
    """A fitted classifier and everything needed to use it the same way again.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Fitted on feature vectors of ``feature_config`` with integer targets
        ``0 .. len(labels) - 1`` (``pipeline.classes_`` indexes ``labels``);
        carries its own scaler.
    labels : tuple of str
        Class names, in the order of the probability columns.
    feature_config : FeatureConfig
        The features the pipeline was trained on.
    metadata : dict
        JSON-serialisable provenance: library versions, training-data
        fingerprint, class counts, metrics, ``created_at`` ...
    normalizer : SpeakerNormalizer, optional
        The per-speaker normalisation the pipeline expects its input to have
        had (None: raw features, as format-1 bundles).
    temperature : float, default 1.0
        Temperature ``T`` of the probabilities: the pipeline's probabilities
        ``p`` are reported as ``p ** (1 / T)`` renormalised, i.e. softmax of
        the MLP's logits divided by ``T`` (temperature scaling, Guo et al.
        2017, "On calibration of modern neural networks", ICML).

    Attributes
    ----------
    sha256 : str or None
        Hex SHA-256 of the ``.joblib`` bytes this bundle was loaded from (set
        by :func:`load_bundle` after verifying it); ``None`` for a bundle
        built in memory. Not an init argument, so ``dataclasses.replace``
        (a changed bundle) drops it.

    Raises
    ------
    ValueError
        If ``labels`` is empty or repeats a name, the fitted pipeline's
        classes are not ``0 .. len(labels) - 1``, ``temperature`` is not
        positive, or the normaliser is unfitted.
    """

    pipeline: Pipeline
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    normalizer: SpeakerNormalizer | None = None
    temperature: float = 1.0
    sha256: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.temperature = float(self.temperature)
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"ModelBundle: temperature must be positive, got {self.temperature}")
        if self.normalizer is not None and not self.normalizer.fitted:
            raise ValueError("ModelBundle: the speaker normaliser is not fitted")
        if self.normalizer is not None and self.normalizer.n_features != self.feature_config.n_features:
            raise ValueError(
                f"ModelBundle: the normaliser has {self.normalizer.n_features} features, "
                f"the feature configuration {self.feature_config.n_features}"
            )
        self.labels = tuple(str(label) for label in self.labels)
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"ModelBundle: labels must be distinct and non-empty, got {self.labels}")
        classes = getattr(self.pipeline, "classes_", None)
        if classes is not None and not np.array_equal(np.asarray(classes), np.arange(len(self.labels))):
            raise ValueError(
                f"ModelBundle: the pipeline's classes {list(classes)} must be 0..{len(self.labels) - 1} (label indices)"
            )


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar beside a bundle: ``x.joblib`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    A temporary file in the same folder is written, fsync-ed and renamed over
    ``path`` (``os.replace``), then the folder is fsync-ed.

    Raises
    ------
    OSError
        The write failed (e.g. disk full); ``path`` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is no secret
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so what is pickled equals what the sidecar says."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def save_bundle(bundle: ModelBundle, path: str | os.PathLike[str], *, compress: int = 3) -> Path:
    """Write a bundle as ``path`` (joblib) plus its ``.json`` sidecar, atomically.

    Parameters
    ----------
    bundle : ModelBundle
        A bundle with a fitted pipeline.
    path : str or os.PathLike
        Target file; must end in ``.joblib``.  Its folder is created.
    compress : int, default 3
        joblib (zlib) compression level 0-9.

    Returns
    -------
    pathlib.Path
        ``path``.  The sidecar is ``path.with_suffix(".json")``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.joblib``, the pipeline is not fitted or
        the metadata is not JSON-serialisable.
    OSError
        If the files cannot be written.

    Notes
    -----
    The joblib file is replaced first, then the sidecar; a crash between the
    two leaves a pair whose hashes disagree, which :func:`load_bundle`
    refuses rather than loading a model with the wrong description.
    """
    target = Path(path)
    if target.suffix != ".joblib":
        raise ValueError(f"save_bundle: the bundle file must end in .joblib, got {target.name!r}")
    if getattr(bundle.pipeline, "classes_", None) is None:
        raise ValueError("save_bundle: the pipeline is not fitted")
    labels = list(bundle.labels)
    config = bundle.feature_config.to_dict()
    metadata = _jsonable(bundle.metadata)
    payload = {
        "format": BUNDLE_FORMAT,
        "pipeline": bundle.pipeline,
        "labels": labels,
        "feature_config": config,
        "metadata": metadata,
        "normalization": None if bundle.normalizer is None else bundle.normalizer.to_dict(),
        "temperature": bundle.temperature,
    }
    buffer = io.BytesIO()
    joblib.dump(payload, buffer, compress=compress)
    data = buffer.getvalue()
    sidecar = {
        "format": BUNDLE_FORMAT,
        "file": target.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "versions": library_versions(),
        "labels": labels,
        "feature_config": config,
        "normalization": None if bundle.normalizer is None else bundle.normalizer.describe(),
        "temperature": bundle.temperature,
        "metadata": metadata,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    atomic_write(sidecar_path(target), (json.dumps(sidecar, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return target


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else -1)
    return tuple(parts)


def _read_sidecar(target: Path) -> dict[str, Any]:
    side = sidecar_path(target)
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelIntegrityError(
            f"The model {target.name} has no {side.name} beside it, so it cannot be verified."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelIntegrityError(f"The model description {side.name} is unreadable.") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("sha256"), str):
        raise ModelIntegrityError(f"The model description {side.name} holds no SHA-256.")
    return sidecar


def _check_versions(sidecar: dict[str, Any], name: str) -> FeatureConfig:
    if sidecar.get("format") not in READABLE_FORMATS:
        raise ModelCompatibilityError(
            f"The model {name} has bundle format {sidecar.get('format')!r}; this engine reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}."
        )
    import sklearn

    written = str((sidecar.get("versions") or {}).get("scikit-learn", "unknown"))
    if _major_minor(written) != _major_minor(sklearn.__version__):
        raise ModelCompatibilityError(
            f"The model {name} was written with scikit-learn {written}, but {sklearn.__version__} is installed; "
            "retrain it or install the matching scikit-learn."
        )
    config_dict = sidecar.get("feature_config")
    if not isinstance(config_dict, dict) or config_dict.get("version") != FEATURE_VERSION:
        version = config_dict.get("version") if isinstance(config_dict, dict) else None
        raise ModelCompatibilityError(
            f"The model {name} expects feature version {version!r}; this engine computes version {FEATURE_VERSION}."
        )
    try:
        return FeatureConfig.from_dict(config_dict)
    except (TypeError, ValueError):
        raise ModelCompatibilityError(f"The model {name} has a feature configuration this engine does not know.") from None


def load_bundle(path: str | os.PathLike[str] | None = None, *, expected_sha256: str | None = None) -> ModelBundle:
    """Read a bundle written by :func:`save_bundle`, verifying it before unpickling.

    Order of checks: the files exist; the sidecar's bundle format,
    scikit-learn major.minor version and feature version match this engine;
    the SHA-256 of the joblib bytes equals the sidecar's (and
    ``expected_sha256`` if given); only then are those same bytes unpickled,
    and the payload's labels and feature configuration must equal the
    sidecar's.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The ``.joblib`` file (default :data:`DEFAULT_MODEL_PATH`).
    expected_sha256 : str, optional
        Hex SHA-256 the joblib file must have, e.g. pinned in a deployment's
        configuration.

    Returns
    -------
    ModelBundle

    Raises
    ------
    ModelNotFoundError
        If the ``.joblib`` file does not exist.
    ModelIntegrityError
        If the sidecar is missing or unreadable, a hash differs, the file
        cannot be unpickled, or payload and sidecar disagree.
    ModelCompatibilityError
        If the bundle format, scikit-learn major.minor version or feature
        version differs from this engine's.
    """
    target = Path(path) if path is not None else DEFAULT_MODEL_PATH
    name = target.name
    try:
        data = target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ModelNotFoundError(f"No emotion model found ({name}).") from None
    except OSError:
        raise ModelNotFoundError(f"The emotion model {name} could not be read.") from None
    sidecar = _read_sidecar(target)
    config = _check_versions(sidecar, name)

    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar["sha256"].lower():
        raise ModelIntegrityError(f"The model {name} was altered or damaged: its SHA-256 does not match its description.")
    if expected_sha256 is not None and digest != expected_sha256.strip().lower():
        raise ModelIntegrityError(f"The model {name} is not the expected one: its SHA-256 differs from the pinned hash.")

    try:
        from sklearn.exceptions import InconsistentVersionWarning

        with warnings.catch_warnings():
            # Same major.minor was checked above; patch releases keep the pickle layout.
            warnings.simplefilter("ignore", InconsistentVersionWarning)
            payload = joblib.load(io.BytesIO(data))
    except Exception:
        raise ModelIntegrityError(f"The model {name} could not be unpickled.") from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != sidecar.get("format")
        or list(payload.get("labels", ())) != list(sidecar.get("labels", ()))
        or payload.get("feature_config") != sidecar.get("feature_config")
        or not isinstance(payload.get("pipeline"), Pipeline)
    ):
        raise ModelIntegrityError(f"The model {name} does not match its description.")
    try:
        normalization = payload.get("normalization")
        bundle = ModelBundle(
            pipeline=payload["pipeline"],
            labels=tuple(payload["labels"]),
            feature_config=config,
            metadata=dict(payload.get("metadata") or {}),
            normalizer=None if normalization is None else SpeakerNormalizer.from_dict(normalization),
            temperature=float(payload.get("temperature", 1.0)),
        )
    except (ValueError, TypeError, KeyError):
        raise ModelIntegrityError(f"The model {name} is inconsistent (classes, labels, normalisation or temperature).") from None
    bundle.sha256 = digest
    return bundle
