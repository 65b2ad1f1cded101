"""Where the engine spends its time: ``python -m benchmarks.hotspots [--model PATH] [--reps N]``.

Prints, for the 5 s Ogg/Opus voice note of the benchmark (one BLAS thread,
as in the service):

1. a cProfile of ``Predictor.predict`` over ``N`` calls (top functions by own
   time and by cumulative time);
2. the time of each step of ``extract_features`` (STFT, mel/MFCC, deltas,
   chroma, contrast, tonnetz, spectral shape, YIN, summaries), each timed
   alone on the same signal;
3. how decoding and feature extraction scale over two threads and over two
   processes -- work that holds the GIL gains nothing from the service's
   second worker thread;
4. the first call's cost in a fresh process (imports, decoder libraries,
   filter banks), which is what the service's warm-up pays.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .timing import Variant, blas_threads, interleaved, summarise

__all__ = ["main", "scaling", "step_times"]

ROOT = Path(__file__).resolve().parents[1]

_STATE: dict[str, Any] = {}


def step_times(y: np.ndarray, config: Any, *, reps: int = 30) -> dict[str, float]:
    """Median milliseconds of each step of the engine's feature extraction, each timed alone.

    The steps mirror ``ser_engine.features.extract_features`` with the given
    configuration, calling the same library functions on the same arrays.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        A 16 kHz signal.
    config : ser_engine.features.FeatureConfig
    reps : int
        Interleaved repetitions.

    Returns
    -------
    dict of str to float
        Median time of each step in milliseconds, and ``extract_features``
        (the whole call) for comparison.
    """
    import scipy.fft
    import soxr
    from ser_engine import features as F

    S = F.stft_magnitude(y=y, config=config)
    P = np.square(S)
    mel_basis = F._mel_basis(config.sr, config.n_fft, config.n_mels, config.fmin, config.fmax)
    mel = mel_basis @ P
    log_mel = F._power_to_db(mel, top_db=None)
    mfcc = scipy.fft.dct(log_mel, axis=0, type=2, norm="ortho")[: config.n_mfcc]
    chroma_basis = F._chroma_basis(config.sr, config.n_fft)
    raw_chroma = chroma_basis @ P
    chroma = raw_chroma / np.maximum(np.abs(raw_chroma).max(axis=0, keepdims=True), np.finfo(np.float32).tiny)
    pitch_sr = 8000
    y8 = soxr.resample(y, config.sr, pitch_sr, quality="LQ")
    hop8 = config.hop_length * pitch_sr // config.sr
    frame8 = 2 * int(np.ceil(pitch_sr / config.fmin_f0)) + 2
    yin = {"fmin": config.fmin_f0, "fmax": config.fmax_f0, "sr": pitch_sr, "frame_length": frame8,
           "hop_length": hop8, "trough_threshold": 0.1}  # fmt: skip
    stacked = np.vstack([mfcc, mfcc, mfcc, log_mel, chroma, np.zeros((7 + 6 + 6 + 1, S.shape[1]))])

    # The engine's own pieces (features.py computes librosa 0.11's descriptors in numpy).
    steps: dict[str, Callable[[], object]] = {
        "extract_features (whole)": lambda: F.extract_features(y=y, sr=config.sr, config=config),
        "stft": lambda: F.stft_magnitude(y=y, config=config),
        "mel + log + dct": lambda: scipy.fft.dct(
            F._power_to_db(mel_basis @ P, top_db=None), axis=0, type=2, norm="ortho"
        ),
        "chroma": lambda: chroma_basis @ P,
        "delta + delta2": lambda: (F._delta(mfcc, width=9, order=1), F._delta(mfcc, width=9, order=2)),
        "spectral_contrast": lambda: F._spectral_contrast(S, config),
        "tonnetz (from chroma)": lambda: F._tonnetz(chroma),
        "resample to 8 kHz + yin": lambda: F._yin(soxr.resample(y, config.sr, pitch_sr, quality="LQ"), **yin),
        "yin alone": lambda: F._yin(y8, **yin),
        f"summaries ({stacked.shape[0]} rows x {len(config.stats)} stats)": lambda: F._summarise(stacked, config.stats),
    }
    samples = interleaved([Variant(k, fn) for k, fn in steps.items()], reps=reps, warmup=2)
    return {k: 1000 * summarise(v).median_s for k, v in samples.items()}


def _init(note: bytes, model: str) -> None:
    from threadpoolctl import threadpool_limits

    from ser_engine.audio import load_audio
    from ser_engine.predict import Predictor

    threadpool_limits(1, "blas")
    predictor = Predictor.load(model)
    _STATE.update(note=note, predictor=predictor, y=load_audio(note))


def _job(kind: str) -> float:
    from ser_engine.audio import load_audio
    from ser_engine.features import extract_features

    if kind == "decode":
        return float(load_audio(_STATE["note"]).size)
    if kind == "features":
        return float(extract_features(y=_STATE["y"], config=_STATE["predictor"].bundle.feature_config).sum())
    return _STATE["predictor"].predict(_STATE["note"]).confidence


def scaling(note: bytes, model: str, *, n: int = 60, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Calls per second of decode, features and whole predictions: serial, two threads, two processes.

    Parameters
    ----------
    note : bytes
        Encoded voice note.
    model : str
        Model bundle path.
    n : int
        Calls per measurement.
    rounds : int
        Measurements per setting (interleaved; the median is reported).

    Returns
    -------
    dict
        ``{kind: {"serial": per_s, "2 threads": per_s, "2 processes": per_s}}``.
    """
    _init(note, model)
    out: dict[str, dict[str, float]] = {}
    with ProcessPoolExecutor(2, initializer=_init, initargs=(note, model)) as pool, ThreadPoolExecutor(2) as threads:
        for kind in ("decode", "features", "predict"):
            list(pool.map(_job, [kind] * 4))
            list(threads.map(_job, [kind] * 4))
            rates: dict[str, list[float]] = {}
            for _ in range(rounds):
                for name, ex in (("serial", None), ("2 threads", threads), ("2 processes", pool)):
                    t0 = time.perf_counter()
                    if ex is None:
                        for _ in range(n):
                            _job(kind)
                    else:
                        list(ex.map(_job, [kind] * n))
                    rates.setdefault(name, []).append(n / (time.perf_counter() - t0))
            out[kind] = {k: float(np.median(v)) for k, v in rates.items()}
    return out


_FIRST_CALL = """
import time, json, sys
t0 = time.perf_counter()
from ser_engine.predict import Predictor
t1 = time.perf_counter()
p = Predictor.load(sys.argv[1])
t2 = time.perf_counter()
data = open(sys.argv[2], "rb").read()
p.predict(data)
t3 = time.perf_counter()
p.predict(data)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first_predict": t3 - t2, "second_predict": t4 - t3}))
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the profile report.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--model PATH] [--reps N] [--no-scaling]``.

    Returns
    -------
    int
        0, or 1 if the model is missing.
    """
    import json
    import os

    from ser_engine.bundle import DEFAULT_MODEL_PATH
    from ser_engine.predict import Predictor

    from .clips import make_note
    from .reference import DEFAULT_CACHE_DIR

    p = argparse.ArgumentParser(prog="python -m benchmarks.hotspots", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model bundle (default: the shipped model)")
    p.add_argument("--reps", type=int, default=50, help="profiled calls (default 50)")
    p.add_argument("--no-scaling", action="store_true", help="skip the threads/processes comparison")
    args = p.parse_args(argv)
    model = (args.model or Path(os.environ.get("SER_MODEL_PATH") or DEFAULT_MODEL_PATH)).resolve()
    if not model.is_file():
        print(f"error: model bundle {model} not found", file=sys.stderr)
        return 1
    note_path = make_note(5.0, DEFAULT_CACHE_DIR / "notes")
    note = note_path.read_bytes()
    predictor = Predictor.load(model)
    config = predictor.bundle.feature_config
    print(f"load average {os.getloadavg()[0]:.2f}; model {model}; {config.n_features} features")

    with blas_threads(1):
        for _ in range(3):
            predictor.predict(note)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.reps):
            predictor.predict(note)
        prof.disable()
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(22)
            print(f"\n== cProfile of Predictor.predict x {args.reps} (5 s note), by {order} ==")
            print(buf.getvalue().split("\n", 4)[-1].rstrip())

        from ser_engine.audio import load_audio

        print("\n== extract_features steps, each alone (median ms) ==")
        for k, v in step_times(load_audio(note), config).items():
            print(f"  {k:45s} {v:7.2f}")

    if not args.no_scaling:
        print("\n== scaling: calls per second (median of 3) ==")
        for kind, rates in scaling(note, str(model)).items():
            s = rates["serial"]
            print(f"  {kind:9s} serial {s:6.1f}/s  2 threads {rates['2 threads']:6.1f}/s ({rates['2 threads'] / s:.2f}x)"
                  f"  2 processes {rates['2 processes']:6.1f}/s ({rates['2 processes'] / s:.2f}x)")  # fmt: skip

    print("\n== a fresh process: seconds ==")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL, str(model), str(note_path)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300, check=True)  # fmt: skip
    for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items():
        print(f"  {k:15s} {v:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
