"""Per-file feature cache: one feature vector per audio file, keyed by content and configuration.

:func:`ser_engine.training.featurize` can keep a whole feature *matrix*
(``cache_dir``), keyed by the fingerprint of the entire training set: any
added, removed or changed file invalidates all of it.  Retraining from a
bot adds data a little at a time (a new corpus folder, a re-recorded clip),
so this module caches each file's vector separately::

    <cache_dir>/<config key>/<hh>/<sha256 of the file's bytes>.npy

``config key`` is the SHA-256 (24 hex digits) of the canonical JSON of
``FeatureConfig.to_dict()`` (which carries the feature version), so a change
of features or of the extraction code's version never reuses stale vectors.
Renaming or moving a file keeps its vector; editing its bytes does not.
Files are written atomically (temporary file, ``os.replace``), so several
processes may share one cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .audio import AudioLimits
from .features import FeatureConfig, extract_many

__all__ = ["FeatureCache", "config_key", "file_digest"]

#: Files decoded per call of :func:`ser_engine.features.extract_many`; progress is reported after each chunk.
CHUNK = 16


def config_key(config: FeatureConfig) -> str:
    """Identify a feature configuration (and its feature version) in cache paths.

    Parameters
    ----------
    config : FeatureConfig

    Returns
    -------
    str
        24 hex digits of SHA-256 over ``json.dumps(config.to_dict(), sort_keys=True)``.
    """
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """Feature vectors of audio files on disk, reused across training runs.

    Parameters
    ----------
    root : str or os.PathLike
        Cache folder (created when first written).
    config : FeatureConfig, optional
        Features to compute (default ``FeatureConfig()``).

    Attributes
    ----------
    hits, misses : int
        Vectors read from the cache / extracted, over this object's life.
    """

    def __init__(self, root: str | os.PathLike[str], config: FeatureConfig | None = None) -> None:
        self.root = Path(root)
        self.config = config or FeatureConfig()
        self.folder = self.root / config_key(self.config)
        self.hits = 0
        self.misses = 0

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached vector of the file with this SHA-256, or ``None``.

        A file of the wrong shape or unreadable is treated as missing.

        Returns
        -------
        np.ndarray, shape (config.n_features,), float32, or None
        """
        path = self._path(digest)
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if vector.shape != (self.config.n_features,):
            return None
        return vector.astype(np.float32, copy=False)

    def put(self, digest: str, vector: np.ndarray) -> None:
        """Store the vector of the file with this SHA-256 (atomically).

        Parameters
        ----------
        digest : str
            :func:`file_digest` of the file.
        vector : np.ndarray, shape (config.n_features,)

        Raises
        ------
        ValueError
            If the vector has the wrong shape.
        """
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.config.n_features,):
            raise ValueError(f"FeatureCache.put: shape {vector.shape}, expected ({self.config.n_features},)")
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, vector, allow_pickle=False)
        os.replace(tmp, path)

    def featurize(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        n_jobs: int = 1,
        limits: AudioLimits | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Feature matrix of the files: cached rows read, missing rows extracted and cached.

        Parameters
        ----------
        paths : sequence of path-like
            Audio files (decoded by :func:`ser_engine.audio.load_audio`).
        n_jobs : int, default 1
            joblib processes for the files to extract.
        limits : AudioLimits, optional
            Decoding limits.
        progress : callable(done, total), optional
            Called after the cache lookup and after each chunk of
            :data:`CHUNK` extracted files, with the number of rows ready.

        Returns
        -------
        np.ndarray, shape (len(paths), config.n_features), float32
            Row ``i`` belongs to ``paths[i]``; identical to
            ``extract_many(paths, config=config)``.

        Raises
        ------
        OSError
            If a file cannot be read.
        ser_engine.errors.AudioError
            If a file cannot be decoded.
        """
        total = len(paths)
        X = np.zeros((total, self.config.n_features), dtype=np.float32)
        digests = [file_digest(p) for p in paths]
        todo: list[int] = []
        for i, digest in enumerate(digests):
            vector = self.get(digest)
            if vector is None:
                todo.append(i)
            else:
                X[i] = vector
        self.hits += total - len(todo)
        done = total - len(todo)
        if progress is not None:
            progress(done, total)
        chunk = CHUNK * max(1, n_jobs)
        for start in range(0, len(todo), chunk):
            rows = todo[start : start + chunk]
            jobs = n_jobs if len(rows) > 1 else 1
            block = extract_many([Path(paths[i]) for i in rows], config=self.config, n_jobs=jobs, limits=limits)
            for i, vector in zip(rows, block, strict=True):
                X[i] = vector
                self.put(digests[i], vector)
            self.misses += len(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
        return X
