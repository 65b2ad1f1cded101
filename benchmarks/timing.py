"""Timing helpers: interleaved repetitions with warm-up, summary statistics, machine description.

Every latency in the benchmark is wall-clock time from :func:`time.perf_counter`.
Variants that are compared (engine against reference, or one engine stage
against another) are run *interleaved*: repetition ``i`` runs every variant
once, in an order rotated by ``i``, so that a burst of load from another
process on the shared machine hits all variants alike instead of whichever
happened to run during it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BLAS_THREADS",
    "Stats",
    "Variant",
    "blas_threads",
    "interleaved",
    "load_average",
    "machine_info",
    "summarise",
]

ROOT = Path(__file__).resolve().parents[1]


def _blas_default() -> int:
    from threadpoolctl import threadpool_info

    sizes = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(sizes) if sizes else 1


DEFAULT_BLAS_THREADS: int = _blas_default()
"""BLAS threads per pool when this module was first imported (OpenBLAS: one per core)."""


@dataclass(frozen=True)
class Stats:
    """Summary of repeated wall-clock measurements.

    Attributes
    ----------
    n : int
        Number of measured repetitions (warm-up runs excluded).
    median_s, p95_s, mean_s, min_s, max_s : float
        Statistics of the samples in seconds; ``p95_s`` is the 95th
        percentile with linear interpolation (``numpy.percentile``), so with
        fewer than 20 samples it lies between the two largest.
    """

    n: int
    median_s: float
    p95_s: float
    mean_s: float
    min_s: float
    max_s: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-serialisable dict of the fields."""
        return asdict(self)


def summarise(samples_s: Sequence[float]) -> Stats:
    """Summarise wall-clock samples.

    Parameters
    ----------
    samples_s : sequence of float, length n >= 1
        Durations in seconds.

    Returns
    -------
    Stats

    Raises
    ------
    ValueError
        If ``samples_s`` is empty.
    """
    a = np.asarray(samples_s, dtype=np.float64)
    if a.size == 0:
        raise ValueError("summarise: no samples")
    return Stats(
        n=int(a.size),
        median_s=float(np.median(a)),
        p95_s=float(np.percentile(a, 95)),
        mean_s=float(a.mean()),
        min_s=float(a.min()),
        max_s=float(a.max()),
    )


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit the BLAS thread pools (OpenBLAS here) to ``n`` threads inside the block.

    Parameters
    ----------
    n : int or None
        Threads per BLAS library; ``None`` leaves the current setting alone.
        The previous limits are restored on exit.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


@dataclass(frozen=True)
class Variant:
    """One thing to time: a callable run under a BLAS thread limit.

    Attributes
    ----------
    name : str
        Key of its results.
    fn : callable
        Called with no argument; its wall time is one sample.
    blas : int or None
        BLAS threads while it runs (see :func:`blas_threads`).
    """

    name: str
    fn: Callable[[], object]
    blas: int | None = 1


def interleaved(variants: Sequence[Variant], *, reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time variants in rotated round-robin order after warm-up runs.

    Parameters
    ----------
    variants : sequence of Variant
        What to time.
    reps : int
        Measured repetitions of each variant.
    warmup : int
        Unmeasured runs of each variant first (filter banks, numba
        compilation, page cache, BLAS thread start-up).

    Returns
    -------
    dict of str to list of float
        Wall-clock seconds of each measured repetition, by variant name,
        each list of length ``reps``.
    """
    for _ in range(warmup):
        for v in variants:
            with blas_threads(v.blas):
                v.fn()
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    k = len(variants)
    for i in range(reps):
        for j in range(k):
            v = variants[(i + j) % k]
            with blas_threads(v.blas):
                t0 = time.perf_counter()
                v.fn()
                samples[v.name].append(time.perf_counter() - t0)
    return samples


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of the machine (runnable tasks)."""
    return os.getloadavg()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    """Describe the machine, libraries and thread settings the run measures.

    Returns
    -------
    dict
        CPU model, logical CPUs, load averages, Python and library versions,
        the BLAS/OpenMP thread pools seen by threadpoolctl with their default
        sizes, thread-related environment variables, and the repository
        commit (with a ``dirty`` flag for uncommitted changes).
    """
    import librosa
    import numba
    import scipy
    import sklearn
    import soundfile
    import soxr
    from threadpoolctl import threadpool_info

    pools = [
        {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer")}
        for p in threadpool_info()
    ]
    env_keys = sorted(
        k for k in os.environ
        if any(s in k for s in ("THREAD", "OPENBLAS", "NUMBA", "MKL", "BLAS", "OMP"))
    )  # fmt: skip
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_at_start": load_average(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "librosa": librosa.__version__,
            "numba": numba.__version__,
            "scikit-learn": sklearn.__version__,
            "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__,
            "soxr": soxr.__version__,
            "ffmpeg": _ffmpeg_version(),
        },
        "thread_pools_default": pools,
        "thread_env": {k: os.environ[k] for k in env_keys},
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
