"""Feature extraction now against a baseline commit: same numbers, speed, threads, numba.

``python -m benchmarks.features_check [--baseline REV] [--clips N] [--reps N] [--only PART ...]``

The baseline is ``ser_engine/features.py`` as it was at ``REV`` (default
``38d3e34``, the librosa-based extractor the shipped model was trained
with), loaded from git into this process next to the current one, so both
run on the same signals, interleaved, in one run.  Parts:

``numerics``
    Both extractors on ``N`` RAVDESS clips spread over all actors (every
    ``1440 // N``-th clip) plus long signals made of consecutive clips:
    the largest absolute and relative differences, and the entries outside
    ``rtol=1e-4, atol=1e-5`` (the tolerance of ``tests/test_features.py``).
``timing``
    Median ``extract_features`` wall-clock and CPU time for 3, 5, 20 and
    60 s of speech (consecutive Actor 01 clips, cut to length), one BLAS
    thread.
``threads``
    Calls per second of ``extract_features`` on a 5 s clip, serial and from
    two threads (``ThreadPoolExecutor``): work that holds the GIL gains
    nothing from the second thread.  With a GIL-free and a GIL-bound
    control, to tell a busy machine from a held GIL.
``numba``
    In fresh processes: whether numba/llvmlite get imported, the resident
    memory before and after two calls, and (in a second process that
    imports numba first to listen to its ``numba:compile`` events) how many
    ``numba.jit`` compilations happen during the first and the second call
    (``guvectorize`` kernels, compiled or loaded from numba's cache when
    librosa imports them, send no such event), and the first call's time
    with an empty ``NUMBA_CACHE_DIR`` (a fresh container whose site-packages
    hold no numba cache compiles every librosa kernel it imports).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .clips import RAVDESS_DIR, ravdess_clips
from .timing import blas_threads

__all__ = ["load_baseline", "main"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "38d3e34"
RTOL, ATOL = 1e-4, 1e-5


def _baseline_source(rev: str) -> str:
    src = subprocess.run(["git", "show", f"{rev}:ser_engine/features.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return src.replace("from .audio import", "from ser_engine.audio import")


def load_baseline(rev: str) -> types.ModuleType:
    """``ser_engine/features.py`` at git revision ``rev``, as a module of its own.

    Parameters
    ----------
    rev : str
        Any git revision of this repository.

    Returns
    -------
    module
        Named ``ser_features_baseline``; its relative imports point at the
        current ``ser_engine`` package.

    Raises
    ------
    subprocess.CalledProcessError
        ``rev`` is unknown or has no ``ser_engine/features.py``.
    """
    mod = types.ModuleType("ser_features_baseline")
    mod.__file__ = f"<{rev}:ser_engine/features.py>"
    sys.modules[mod.__name__] = mod
    exec(compile(_baseline_source(rev), mod.__file__, "exec"), mod.__dict__)
    return mod


def _speech(seconds: float) -> np.ndarray:
    """``seconds`` of consecutive Actor 01 clips, 16 kHz float32."""
    from ser_engine.audio import load_audio

    parts, total = [], 0
    for p in sorted((RAVDESS_DIR / "Actor_01").glob("*.flac")):
        parts.append(load_audio(p))
        total += parts[-1].size
        if total >= seconds * 16000:
            break
    y = np.concatenate(parts)
    while y.size < seconds * 16000:
        y = np.concatenate([y, y])
    return y[: int(seconds * 16000)]


def numerics(base: types.ModuleType, n_clips: int) -> dict[str, Any]:
    """Largest differences between the current and the baseline extractor on real speech."""
    from ser_engine import features as F
    from ser_engine.audio import load_audio

    clips = ravdess_clips()
    step = max(1, len(clips) // n_clips)
    signals = [load_audio(p) for p in clips[::step][:n_clips]]
    signals += [_speech(20.0), _speech(60.0), signals[0][:800], signals[1][:2000]]
    out: dict[str, Any] = {"n_signals": len(signals)}
    for cname, cfg in (("default", F.FeatureConfig()), ("tutorial", F.FeatureConfig.tutorial())):
        bcfg = base.FeatureConfig.from_dict(cfg.to_dict())
        new = np.stack([F.extract_features(y=y, config=cfg) for y in signals]).astype(np.float64)
        old = np.stack([base.extract_features(y=y, config=bcfg) for y in signals]).astype(np.float64)
        diff = np.abs(new - old)
        rel = diff / np.maximum(np.abs(old), 1e-3)
        bad = diff > ATOL + RTOL * np.abs(old)
        i, j = np.unravel_index(np.argmax(rel), rel.shape)
        names = cfg.feature_names()
        out[cname] = {
            "max_abs_diff": float(diff.max()),
            "max_rel_diff (|ref| >= 1e-3)": float(rel.max()),
            "worst_feature": f"{names[j]} (signal {i}: {old[i, j]:.6g} vs {new[i, j]:.6g})",
            "median_rel_diff": float(np.median(rel)),
            "entries_outside_tolerance": int(bad.sum()),
            "entries": int(bad.size),
        }
    return out


def timing(base: types.ModuleType, reps: int) -> dict[str, dict[str, float]]:
    """Median milliseconds of ``extract_features``, baseline and current, for 3/5/20/60 s of speech.

    Each repetition runs both, in alternating order; the wall-clock time and
    the calling thread's CPU time (``time.thread_time``, less sensitive to
    other processes on a shared machine) are both recorded.
    """
    from ser_engine import features as F

    cfg, bcfg = F.FeatureConfig(), base.FeatureConfig()
    out: dict[str, dict[str, float]] = {}
    for seconds in (3.0, 5.0, 20.0, 60.0):
        y = _speech(seconds)
        fns = {"baseline": lambda: base.extract_features(y=y, config=bcfg),
               "current": lambda: F.extract_features(y=y, config=cfg)}  # fmt: skip
        for fn in fns.values():
            fn(), fn()
        r = max(5, int(reps * 5 / seconds))
        wall: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        for i in range(r):
            for name in list(fns)[:: 1 if i % 2 == 0 else -1]:
                c0, w0 = time.thread_time(), time.perf_counter()
                fns[name]()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.thread_time() - c0)
        row = {f"{k} wall ms": 1000 * float(np.median(v)) for k, v in wall.items()}
        row |= {f"{k} cpu ms": 1000 * float(np.median(v)) for k, v in cpu.items()}
        row["speed-up wall"] = row["baseline wall ms"] / row["current wall ms"]
        row["speed-up cpu"] = row["baseline cpu ms"] / row["current cpu ms"]
        out[f"{seconds:g} s"] = {**row, "reps": r}
    return out


def threads(base: types.ModuleType, n: int = 60, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Calls per second on a 5 s clip, serial and from two threads, baseline and current.

    Two controls run alongside: ``np.sin`` over a cache-sized array (releases
    the GIL: should approach 2x when the machine has a free core) and a
    pure-Python loop (holds it: about 1x).  If the GIL-free control does not
    scale, the machine was too busy for the ratios to mean anything.
    """
    from ser_engine import features as F

    y = _speech(5.0)
    grid = np.linspace(0.0, 1.0, 32_768)
    local = threading.local()

    def sin_in_place() -> None:
        # Compute-bound and cache-resident, into a per-thread buffer: a large fresh
        # result per call would measure memory bandwidth and the kernel's page
        # faults (big results are mmap'd, zeroed and unmapped each time), not the GIL.
        if not hasattr(local, "out"):
            local.out = np.empty_like(grid)
        for _ in range(40):
            np.sin(grid, out=local.out)

    fns: dict[str, Callable[[], object]] = {
        "baseline": lambda: base.extract_features(y=y, config=base.FeatureConfig()),
        "current": lambda: F.extract_features(y=y, config=F.FeatureConfig()),
        "control: np.sin (GIL released)": sin_in_place,
        "control: pure Python (GIL held)": lambda: sum(i * i for i in range(50_000)),
    }
    rates: dict[str, list[float]] = {}
    with blas_threads(1), ThreadPoolExecutor(2) as pool:
        for fn in fns.values():
            fn()
            list(pool.map(lambda _, f=fn: f(), range(4)))
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                rates.setdefault(f"{name} serial", []).append(n / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                list(pool.map(lambda _, f=fn: f(), range(n)))
                rates.setdefault(f"{name} 2 threads", []).append(n / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {
        name: {"serial_per_s": med[f"{name} serial"], "2_threads_per_s": med[f"{name} 2 threads"],
               "ratio": med[f"{name} 2 threads"] / med[f"{name} serial"]}  # fmt: skip
        for name in fns
    }


_NUMBA_PROBE = """
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
from threadpoolctl import threadpool_limits
threadpool_limits(1, "blas")
from ser_engine.audio import load_audio
y = load_audio(sys.argv[2])
if sys.argv[1] == "baseline":
    from benchmarks.features_check import load_baseline
    F = load_baseline(sys.argv[3])
else:
    import ser_engine.features as F
record = sys.argv[4] == "record"
out = {"rss_before_mb": rss()}
if record:  # imports numba here, so this run counts compilations only
    import numba.core.event as ev
for call in ("first", "second"):
    if record:
        cm = ev.install_recorder("numba:compile")
        buffer = cm.__enter__().buffer
    t0 = time.perf_counter()
    F.extract_features(y=y)
    out[f"{call}_call_s"] = time.perf_counter() - t0
    if record:
        cm.__exit__(None, None, None)
        out[f"numba_compilations_{call}_call"] = sum(1 for e in buffer if e.is_start)
out["numba_imported"] = "numba" in sys.modules
out["llvmlite_imported"] = "llvmlite.binding" in sys.modules
out["rss_after_mb"] = rss()
print(json.dumps(out))
"""


def numba_probe(rev: str) -> dict[str, Any]:
    """Fresh-process probe of numba use and memory, baseline and current."""
    from ser_engine.audio import load_audio  # noqa: F401  (fail early if the package is broken)

    clip = str(ROOT / "tests" / "data" / "03-01-05-02-01-01-01.flac")
    out = {}
    for which in ("baseline", "current"):
        out[which] = {}
        for mode in ("plain", "record", "cold"):
            with tempfile.TemporaryDirectory() as cache_dir:
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                if mode == "cold":
                    env["NUMBA_CACHE_DIR"] = cache_dir
                proc = subprocess.run([sys.executable, "-c", _NUMBA_PROBE, which, clip, rev, mode], cwd=ROOT,
                                      capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
            if proc.returncode:
                raise RuntimeError(proc.stderr)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if mode == "plain":
                out[which].update(res)
            elif mode == "record":
                out[which].update({k: v for k, v in res.items() if k.startswith("numba_compilations")})
            else:
                out[which]["first_call_s_empty_numba_cache"] = res["first_call_s"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts and print their results as JSON.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (see the module docstring).

    Returns
    -------
    int
        0.
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.features_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"git revision to compare with ({DEFAULT_BASELINE})")
    p.add_argument("--clips", type=int, default=100, help="RAVDESS clips for the numerics (100)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions of a 5 s clip (30; scaled by length)")
    p.add_argument("--only", nargs="+", choices=("numerics", "timing", "threads", "numba"))
    args = p.parse_args(argv)
    parts = args.only or ["numerics", "timing", "threads", "numba"]
    base = load_baseline(args.baseline)
    print(f"# baseline {args.baseline}; load average {os.getloadavg()[0]:.2f}", flush=True)
    for part in parts:
        if part == "numerics":
            res: Any = numerics(base, args.clips)
        elif part == "timing":
            with blas_threads(1):
                res = timing(base, args.reps)
        elif part == "threads":
            res = threads(base)
        else:
            res = numba_probe(args.baseline)
        print(json.dumps({part: res}, indent=1), flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
