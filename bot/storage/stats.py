"""Running mean/variance of feature vectors (Welford; Chan et al. merge).

Used for per-speaker statistics (:class:`bot.storage.models.SpeakerStats`)
that later allow speaker normalisation of features (z-scoring each
speaker's features with their own running mean and standard deviation).

References
----------
B. P. Welford, "Note on a method for calculating corrected sums of squares
and products", Technometrics 4(3):419-420, 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise
algorithm for computing sample variances", Stanford CS report STAN-CS-79-773,
1979 (the pairwise merge used for batches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RunningStats", "merge_batch"]


@dataclass(frozen=True)
class RunningStats:
    """Count, mean and sum of squared deviations of ``n`` feature vectors.

    Attributes
    ----------
    n : int
        Number of vectors seen.
    mean : numpy.ndarray
        Shape ``(n_features,)``, float64; the features' units.
    m2 : numpy.ndarray
        Shape ``(n_features,)``, float64; sum of squared deviations from the
        mean (units squared).
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @property
    def n_features(self) -> int:
        """Length of the vectors."""
        return int(self.mean.shape[0])

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance ``m2 / (n - 1)``, shape ``(n_features,)``; NaN when ``n < 2``."""
        if self.n < 2:
            return np.full(self.n_features, np.nan)
        return self.m2 / (self.n - 1)

    @property
    def std(self) -> np.ndarray:
        """Square root of :attr:`variance`, shape ``(n_features,)``."""
        return np.sqrt(self.variance)

    @classmethod
    def empty(cls, n_features: int) -> RunningStats:
        """No vectors seen yet."""
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    def to_bytes(self) -> tuple[bytes, bytes]:
        """``(mean, m2)`` as little-endian float64 bytes, each ``8 * n_features`` long."""
        return self.mean.astype("<f8").tobytes(), self.m2.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, n: int, mean: bytes, m2: bytes) -> RunningStats:
        """Inverse of :meth:`to_bytes`.

        Raises
        ------
        ValueError
            When the two byte strings have different lengths.
        """
        a, b = np.frombuffer(mean, dtype="<f8"), np.frombuffer(m2, dtype="<f8")
        if a.shape != b.shape:
            raise ValueError("mean and m2 have different lengths")
        return cls(int(n), a.astype(np.float64), b.astype(np.float64))


def merge_batch(stats: RunningStats, x: np.ndarray) -> RunningStats:
    """Add a batch of vectors to running statistics (Chan et al. pairwise merge).

    Parameters
    ----------
    stats : RunningStats
        Statistics so far.
    x : numpy.ndarray
        Shape ``(n_features,)`` for one vector or ``(k, n_features)`` for ``k``.

    Returns
    -------
    RunningStats
        Statistics of all ``stats.n + k`` vectors; equal (to rounding) to
        computing them on all vectors at once.

    Raises
    ------
    ValueError
        When the vectors' length differs from ``stats.n_features`` or they
        contain NaN or infinity.
    """
    batch = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if batch.ndim != 2 or batch.shape[1] != stats.n_features:
        raise ValueError(f"expected vectors of length {stats.n_features}, got shape {np.shape(x)}")
    if not np.all(np.isfinite(batch)):
        raise ValueError("feature vectors must be finite")
    k = batch.shape[0]
    if k == 0:
        return stats
    mean_b = batch.mean(axis=0)
    m2_b = ((batch - mean_b) ** 2).sum(axis=0)
    n = stats.n + k
    delta = mean_b - stats.mean
    mean = stats.mean + delta * (k / n)
    m2 = stats.m2 + m2_b + delta**2 * (stats.n * k / n)
    return RunningStats(n, mean, m2)
