"""The engine-versus-reference cases: one voice note, clip lengths, throughput, cold start, retrain.

Thread settings (fair and stated in the output):

* single-request latency (cases a and b): both sides run with **one BLAS
  thread** (threadpoolctl), the setting the engine's
  :class:`~ser_engine.service.EmotionService` gives its workers.  On this
  machine OpenBLAS is several times *slower* with two threads on the small
  matrices both pipelines multiply, so one thread is also the reference's
  best setting; in a full run case (a) also times both sides with OpenBLAS's
  default (2 threads) and the speed-up is taken against the *faster* of the
  reference's two settings.
* throughput (case c): the reference is served by the very same
  ``EmotionService(workers=2)`` as the engine (it sets one BLAS thread per
  process at start), so both get two worker threads on the two cores.
* cold start (case d) and retrain (case e): fresh processes with the
  libraries' defaults, as a user would start them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import reference as ref
from .timing import DEFAULT_BLAS_THREADS, Variant, blas_threads, interleaved, load_average, summarise

__all__ = [
    "case_voice_note",
    "case_clip_lengths",
    "case_throughput",
    "case_cold_start",
    "case_retrain",
]

ROOT = Path(__file__).resolve().parents[1]
Log = Callable[[str], None]


def _stats(samples: dict[str, list[float]]) -> dict[str, dict[str, float | int]]:
    return {k: summarise(v).to_dict() for k, v in samples.items()}


def _with_load(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before = load_average()
    t0 = time.perf_counter()
    out = fn()
    out["wall_s"] = time.perf_counter() - t0
    out["load_average"] = {"before": before, "after": load_average()}
    return out


# ------------------------------------------------------------ (a) voice note
def case_voice_note(
    engine: Any, reference: ref.ReferencePredictor, note: bytes, *, reps: int, warmup: int, both_thread_settings: bool
) -> dict[str, Any]:
    """(a) A 5 s Ogg/Opus voice note to a prediction, in total and per stage.

    Stages of the engine: ``decode`` = ``ser_engine.audio.load_audio`` at the
    note's own 48 kHz (decoding, limits, DC and silence checks, no
    resampling); ``resample`` = the engine's soxr call 48 -> 16 kHz (HQ);
    ``vad`` = the speech gate (:meth:`ser_engine.vad.SpeechDetector.has_speech`,
    stopping once enough speech is found), which ``Predictor.predict`` runs;
    ``features`` = ``extract_features`` with the bundle's configuration;
    ``predict`` = ``Predictor.classify_features`` on the vector (where the
    engine has it; else the bundle pipeline's ``predict_proba``).
    Stages of the reference: ``decode`` = ``pydub.AudioSegment.from_file``;
    ``resample`` = pydub's mono/16 kHz conversion to float samples;
    ``features`` = the five librosa calls; ``predict`` = the MLP.
    ``total`` is the real end-to-end call (``Predictor.predict`` /
    ``ReferencePredictor.predict``) on the note's bytes, timed separately.

    Parameters
    ----------
    engine : ser_engine.predict.Predictor
    reference : ReferencePredictor
    note : bytes
        The encoded note.
    reps, warmup : int
        Measured and warm-up repetitions of every variant.
    both_thread_settings : bool
        Also time both totals with OpenBLAS's default thread count (2).

    Returns
    -------
    dict
        ``stats`` by variant name (``engine.total``, ``engine.decode``, ...,
        ``reference.total`` ...; ``*.total@blas_default`` when asked), each a
        :class:`~benchmarks.timing.Stats` dict; ``baseline`` (the reference
        variant the speed-up uses); ``speedup`` (reference median / engine
        median); ``labels`` predicted by each side.
    """
    import soundfile as sf
    import soxr
    from ser_engine.audio import load_audio
    from ser_engine.features import extract_features
    from ser_engine.vad import default_detector

    native_sr = sf.info(io.BytesIO(note)).samplerate
    config = engine.bundle.feature_config
    pipeline = engine.bundle.pipeline
    limits = engine.limits
    y_native = load_audio(note, sr=native_sr, limits=limits)
    y16 = soxr.resample(y_native, native_sr, 16_000, quality="HQ").astype(np.float32)
    x = extract_features(y=y16, sr=16_000, config=config)
    detector = default_detector()  # the speech gate predict() runs before the features (issue 12)
    detector.has_speech(y16)  # load the ONNX session outside the timed runs
    if hasattr(engine, "classify_features"):  # normaliser, pipeline and calibration, as predict() runs them

        def classify() -> object:
            return engine.classify_features(x)

    else:

        def classify() -> object:
            return pipeline.predict_proba(x[None, :])
    seg = ref.decode(note)
    ry = ref.to_signal(seg)
    rx = ref.extract_features(ry)

    variants = [
        Variant("engine.total", lambda: engine.predict(note)),
        Variant("engine.decode", lambda: load_audio(note, sr=native_sr, limits=limits)),
        Variant("engine.resample", lambda: soxr.resample(y_native, native_sr, 16_000, quality="HQ")),
        Variant("engine.vad", lambda: detector.has_speech(y16)),
        Variant("engine.features", lambda: extract_features(y=y16, sr=16_000, config=config)),
        Variant("engine.predict", classify),
        Variant("reference.total", lambda: reference.predict(note)),
        Variant("reference.decode", lambda: ref.decode(note)),
        Variant("reference.resample", lambda: ref.to_signal(seg)),
        Variant("reference.features", lambda: ref.extract_features(ry)),
        Variant("reference.predict", lambda: reference.classify(rx)),
    ]
    if both_thread_settings:
        variants += [
            Variant("engine.total@blas_default", lambda: engine.predict(note), blas=DEFAULT_BLAS_THREADS),
            Variant("reference.total@blas_default", lambda: reference.predict(note), blas=DEFAULT_BLAS_THREADS),
        ]

    def run() -> dict[str, Any]:
        stats = _stats(interleaved(variants, reps=reps, warmup=warmup))
        candidates = [k for k in ("reference.total", "reference.total@blas_default") if k in stats]
        baseline = min(candidates, key=lambda k: stats[k]["median_s"])
        eng = stats["engine.total"]
        base = stats[baseline]
        return {
            "note_bytes": len(note),
            "stats": stats,
            "baseline": baseline,
            "speedup": base["median_s"] / eng["median_s"],
            "speedup_p95": base["p95_s"] / eng["p95_s"],
            "labels": {"engine": engine.predict(note).label, "reference": reference.predict(note).label},
            "thread_settings": "BLAS 1 thread both sides (threadpoolctl)"
            + (f"; '@blas_default' variants: OpenBLAS default ({DEFAULT_BLAS_THREADS} threads)" if both_thread_settings else ""),
        }

    return _with_load(run)


# -------------------------------------------------------- (b) clip lengths
def case_clip_lengths(
    engine: Any,
    reference: ref.ReferencePredictor,
    notes: dict[float, bytes],
    *,
    reps: dict[float, int],
    warmup: int,
    skip_reference: Sequence[float] = (),
) -> dict[str, Any]:
    """(b) End-to-end latency for recordings of several lengths (Ogg/Opus voice notes).

    Parameters
    ----------
    engine : ser_engine.predict.Predictor
    reference : ReferencePredictor
    notes : dict of float to bytes
        Encoded note by duration in seconds.
    reps : dict of float to int
        Measured repetitions by duration.
    warmup : int
        Warm-up repetitions of each variant.
    skip_reference : sequence of float
        Durations timed for the engine only (``--quick`` skips the slow
        reference on the 60 s note).

    Returns
    -------
    dict
        By duration (``"3s"``, ...): ``engine`` and ``reference``
        :class:`~benchmarks.timing.Stats` dicts (``reference`` None when
        skipped), ``speedup`` (ratio of medians, or None) and
        ``engine_realtime_factor`` (audio seconds per second of processing).
    """

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for seconds, data in notes.items():
            variants = [Variant("engine", lambda data=data: engine.predict(data))]
            if seconds not in skip_reference:
                variants.append(Variant("reference", lambda data=data: reference.predict(data)))
            st: dict[str, Any] = {"reference": None, **_stats(interleaved(variants, reps=reps[seconds], warmup=warmup))}
            out[f"{seconds:g}s"] = {
                "duration_s": seconds,
                "bytes": len(data),
                **st,
                "speedup": st["reference"]["median_s"] / st["engine"]["median_s"] if st["reference"] else None,
                "engine_realtime_factor": seconds / st["engine"]["median_s"],
            }
        return {"clips": out, "thread_settings": "BLAS 1 thread both sides (threadpoolctl)"}

    return _with_load(run)


# ----------------------------------------------------------- (c) throughput
async def _drive(service: Any, data: bytes, concurrency: int, n_requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    remaining = n_requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                await service.analyse(data)
            except Exception as exc:  # a refused or timed-out request counts as a failure
                failures.append(type(exc).__name__)
            else:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "completed": len(latencies),
        "failures": failures,
        "wall_s": wall,
        "notes_per_s": len(latencies) / wall,
        "latency": summarise(latencies).to_dict() if latencies else None,
    }


def case_throughput(
    engine: Any,
    reference: ref.ReferencePredictor | None,
    note: bytes,
    *,
    levels: Sequence[int],
    engine_requests: Callable[[int], int],
    reference_levels: Sequence[int],
    reference_requests: Callable[[int], int],
    workers: int = 2,
    mode: str = "process",
    other_mode: str | None = "thread",
) -> dict[str, Any]:
    """(c) Notes per second through ``EmotionService(workers=2)`` at several concurrencies.

    ``c`` client coroutines each send the next note as soon as their previous
    one is answered (closed loop) until the level's requests are done;
    throughput = answered notes / wall time.  The reference is served by its
    own ``EmotionService`` with the same settings; levels alternate between
    the services.  The engine is measured in ``mode`` (the bot's default,
    worker processes) and, interleaved at the same levels, in ``other_mode``
    (worker threads), so the two kinds of workers are compared side by side
    under the same machine load.

    Parameters
    ----------
    engine : ser_engine.predict.Predictor
    reference : ReferencePredictor or None
        ``None`` skips the reference.
    note : bytes
        The 5 s voice note.
    levels, reference_levels : sequence of int
        Concurrencies for the engine and for the reference.
    engine_requests, reference_requests : callable int -> int
        Requests to send at a concurrency.
    workers : int
        Service workers (threads or processes).
    mode : {"process", "thread"}
        Workers of the engine's main measurement and of the reference (which
        falls back to threads if it cannot be sent to worker processes).
    other_mode : {"process", "thread"} or None
        Also measure the engine with these workers (``engine_other``); None skips it.

    Returns
    -------
    dict
        ``engine``, ``engine_other`` and ``reference``: lists of per-level
        results (``notes_per_s``, ``latency`` stats, ``failures``);
        ``speedup`` by level (ratio of throughputs, engine / reference);
        ``mode``, ``other_mode``, ``reference_mode``.
    """
    from ser_engine.service import EmotionService

    async def main() -> dict[str, Any]:
        eng_service = EmotionService(engine, workers=workers, max_pending=64, timeout_s=60.0, mode=mode)  # type: ignore[arg-type]
        other_service = (
            EmotionService(engine, workers=workers, max_pending=64, timeout_s=60.0, mode=other_mode)  # type: ignore[arg-type]
            if other_mode is not None else None
        )  # fmt: skip
        ref_service, ref_mode = None, None
        if reference is not None:
            try:
                ref_service = EmotionService(reference, workers=workers, max_pending=64, timeout_s=120.0, mode=mode)  # type: ignore[arg-type]
                ref_mode = mode
            except TypeError:  # does not pickle: served by threads
                ref_service = EmotionService(reference, workers=workers, max_pending=64, timeout_s=120.0)  # type: ignore[arg-type]
                ref_mode = "thread"
        async with eng_service:
            await _drive(eng_service, note, workers, 2 * workers)  # warm-up
            results: dict[str, list[dict[str, Any]]] = {"engine": [], "engine_other": [], "reference": []}
            if other_service is not None:
                await other_service.start()
                await _drive(other_service, note, workers, 2 * workers)  # warm-up
            if ref_service is not None:
                await ref_service.start()
                await _drive(ref_service, note, workers, workers)  # warm-up
            try:
                for i, c in enumerate(sorted(set(levels) | set(reference_levels))):
                    order = ["engine", "engine_other", "reference"]
                    order = order if i % 2 == 0 else order[::-1]
                    for side in order:
                        if side == "engine" and c in levels:
                            results["engine"].append(await _drive(eng_service, note, c, engine_requests(c)))
                        elif side == "engine_other" and other_service is not None and c in levels:
                            results["engine_other"].append(await _drive(other_service, note, c, engine_requests(c)))
                        elif side == "reference" and ref_service is not None and c in reference_levels:
                            results["reference"].append(await _drive(ref_service, note, c, reference_requests(c)))
            finally:
                if ref_service is not None:
                    await ref_service.close()
                if other_service is not None:
                    await other_service.close()
        speedup = {}
        ref_by_c = {r["concurrency"]: r for r in results["reference"]}
        for r in results["engine"]:
            other = ref_by_c.get(r["concurrency"])
            if other and other["notes_per_s"] > 0:
                speedup[str(r["concurrency"])] = r["notes_per_s"] / other["notes_per_s"]
        return {
            **results,
            "speedup": speedup,
            "workers": workers,
            "mode": mode,
            "other_mode": other_mode,
            "reference_mode": ref_mode,
            "thread_settings": f"EmotionService(workers={workers}, mode={mode!r}) for the engine and "
            f"mode={ref_mode!r} for the reference; engine also with mode={other_mode!r}; BLAS 1 thread per worker "
            f"(set by the service)",
        }

    return _with_load(lambda: asyncio.run(main()))


# ---------------------------------------------------------- (d) cold start
def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_child(args: Sequence[str], timeout_s: float = 300.0) -> dict[str, Any]:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", *args],
        cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    t_exit = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args[0]} failed ({proc.returncode}): {_last_line(proc.stderr)}")
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {k: v - t0 for k, v in marks.items() if isinstance(v, float) and k.startswith("t_")}
    out["exit_s"] = t_exit - t0
    out.update({k: v for k, v in marks.items() if not k.startswith("t_")})
    return out


def case_cold_start(
    model_path: Path, reference_cache: Path, note_path: Path, *, reps: int, with_reference: bool = True
) -> dict[str, Any]:
    """(d) A fresh process from its start to its first prediction.

    Engine: import ``ser_engine``, ``Predictor.load``, ``EmotionService.start``
    (its warm-up), then ``analyse`` the 5 s note -- what the bot does at
    start and on its first note.  Reference: import the recipe's libraries,
    load the cached MLP, predict the note (the recipe has no warm-up, so its
    first call pays librosa's numba compilation).  Both are then asked a
    second time, to show what the first user pays over the steady state.
    Runs alternate between engine and reference.

    Parameters
    ----------
    model_path : Path
        The engine's model bundle.
    reference_cache : Path
        The cached reference model (``reference.load_or_train``'s ``cache_file``).
    note_path : Path
        The 5 s voice note.
    reps : int
        Processes started per side.
    with_reference : bool
        Also time the reference.

    Returns
    -------
    dict
        ``engine`` / ``reference``: ``first_prediction`` stats (seconds from
        process start), the per-process milestones (``t_imported``,
        ``t_loaded``, ``t_ready``, ``t_first``, ``t_second`` in seconds
        since spawn), and ``first_vs_second`` (latency of the first
        prediction after ready over the second's).
    """

    def run() -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {"engine": [], "reference": []}
        for i in range(reps):
            sides = ["engine", "reference"] if i % 2 == 0 else ["reference", "engine"]
            for side in sides:
                if side == "engine":
                    runs["engine"].append(_run_child(["cold-engine", str(model_path), str(note_path)]))
                elif with_reference:
                    runs["reference"].append(_run_child(["cold-reference", str(reference_cache), str(note_path)]))
        out: dict[str, Any] = {}
        for side, rs in runs.items():
            if not rs:
                continue
            out[side] = {
                "first_prediction": summarise([r["t_first"] for r in rs]).to_dict(),
                "first_request_s": summarise([r["t_first"] - r["t_ready"] for r in rs]).to_dict(),
                "second_request_s": summarise([r["t_second"] - r["t_first"] for r in rs]).to_dict(),
                "runs": rs,
            }
        if "engine" in out and "reference" in out:
            out["speedup"] = out["reference"]["first_prediction"]["median_s"] / out["engine"]["first_prediction"]["median_s"]
        return out

    return _with_load(run)


# -------------------------------------------------------------- (e) retrain
def _train_options() -> set[str]:
    """Option strings that ``ser train`` accepts (its recipe options grow over time)."""
    from ser_engine.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction) and "train" in action.choices:
            return {opt for a in action.choices["train"]._actions for opt in a.option_strings}
    return set()


def _shipped_recipe(engine: Any) -> list[str] | None:
    """``ser train`` options reproducing the model's recipe, or None if its features are not a CLI preset.

    Preset, features, scaler and seed come from the bundle; speaker
    normalisation, calibration and augmentation too where the CLI has those
    options (a bundle without a normaliser or temperature was trained without
    them).
    """
    from ser_engine.features import FeatureConfig

    bundle = engine.bundle
    meta = bundle.metadata
    if bundle.feature_config == FeatureConfig():
        features = "default"
    elif bundle.feature_config == FeatureConfig.tutorial():
        features = "tutorial"
    else:
        return None
    options = _train_options()
    args = ["--preset", str(meta.get("preset", "default")), "--features", features,
            "--seed", str(meta.get("random_state", 0) or 0)]  # fmt: skip
    if meta.get("scaler") is False:
        args.append("--no-scaler")
    if "--normalization" in options:
        normalization = meta.get("normalization") or ("none" if getattr(bundle, "normalizer", None) is None else "speaker")
        args += ["--normalization", str(normalization)]
        if meta.get("min_clips") and "--min-clips" in options:
            args += ["--min-clips", str(meta["min_clips"])]
    if "--no-calibrate" in options and float(getattr(bundle, "temperature", 1.0)) == 1.0:
        args.append("--no-calibrate")
    if "--augment" in options and meta.get("augment"):
        args += ["--augment", ",".join(meta["augment"])]
    if "--inner-folds" in options and meta.get("inner_folds"):
        args += ["--inner-folds", str(meta["inner_folds"])]
    if "--inner-fits" in options and meta.get("inner_fits"):
        args += ["--inner-fits", str(meta["inner_fits"])]
    return args


def _time_cli_train(corpus: Path, recipe: Sequence[str], cache_dir: Path, out: Path, jobs: int) -> float:
    cmd = [
        sys.executable, "-m", "ser_engine.cli", "train", "--corpus", str(corpus), *recipe, "--no-eval", "--quiet",
        "--jobs", str(jobs), "--cache-dir", str(cache_dir), "--out", str(out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ser train failed ({proc.returncode}): {_last_line(proc.stderr)}")
    return wall


def case_retrain(
    engine: Any,
    corpus: Path,
    clips: Sequence[Path],
    reference_info: dict[str, Any],
    *,
    jobs: int = 2,
    reference_sample: int = 96,
    log: Log = print,
) -> dict[str, Any]:
    """(e) Full retrain on all RAVDESS clips: cold, then warm with the engine's feature cache.

    Engine: ``python -m ser_engine.cli train --no-eval --jobs 2`` with the
    shipped model's recipe (preset, features, scaler, seed), a fresh process
    each time, timed from spawn to the bundle written: first with an empty
    ``--cache-dir`` (cold: every clip decoded and featurised), then again
    with the cache it filled (warm).  Reference: its feature extraction
    (2 processes, as the engine) is timed on ``reference_sample`` clips
    spread over all actors and emotions and scaled to the full corpus, plus
    the full MLP fit on the cached 1440 x 193 matrix, timed with one BLAS
    thread and with OpenBLAS's default, the faster counting: the reference
    would need well over five minutes per full run, so it is not re-run whole.

    Parameters
    ----------
    engine : ser_engine.predict.Predictor
        Its bundle gives the recipe to retrain.
    corpus : Path
        RAVDESS folder.
    clips : sequence of Path
        All clips (for the reference sample).
    reference_info : dict
        From ``reference.load_or_train``: ``X``, ``y``, ``timings``.
    jobs : int
        Processes for both sides' feature extraction.
    reference_sample : int
        Clips the reference's extraction is timed on.
    log : callable
        Progress lines.

    Returns
    -------
    dict
        ``engine``: ``cold_s``, ``warm_s``, ``recipe`` (CLI options);
        ``reference``: ``features_sample_s``, ``features_extrapolated_s``,
        ``fit_s``, ``total_s`` (estimated), and the time measured when the
        cached model was trained whole; ``speedup_cold``.
    """

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        recipe = _shipped_recipe(engine)
        if recipe is None:
            out["engine"] = {"skipped": "the shipped model's FeatureConfig is not a CLI preset"}
        else:
            with tempfile.TemporaryDirectory(prefix="ser-bench-train-") as tmp:
                cache = Path(tmp) / "features"
                log("  engine retrain, cold (empty feature cache) ...")
                cold = _time_cli_train(corpus, recipe, cache, Path(tmp) / "cold.joblib", jobs)
                log(f"    {cold:.1f} s; warm (feature cache filled) ...")
                warm = _time_cli_train(corpus, recipe, cache, Path(tmp) / "warm.joblib", jobs)
                log(f"    {warm:.1f} s")
            out["engine"] = {"cold_s": cold, "warm_s": warm, "recipe": recipe, "jobs": jobs}
        # Reference: a sample of clips spread over actors and emotions, then scale.
        step = max(1, len(clips) // reference_sample)
        sample = list(clips)[::step][:reference_sample]
        from joblib import Parallel, delayed

        log(f"  reference feature extraction on {len(sample)} clips ...")
        Parallel(n_jobs=jobs)(delayed(ref._file_features)(c) for c in sample[:jobs])  # start the workers
        t0 = time.perf_counter()
        Parallel(n_jobs=jobs, batch_size=4)(delayed(ref._file_features)(c) for c in sample)
        feat_sample = time.perf_counter() - t0
        # The fit under both BLAS settings (OpenBLAS's default and one thread); the faster one counts.
        fits: dict[str, float] = {}
        for threads in (1, DEFAULT_BLAS_THREADS):
            log(f"  reference MLP fit, {threads} BLAS thread(s) ...")
            with blas_threads(threads):
                fits[f"blas{threads}"] = ref.fit_time(reference_info["X"], reference_info["y"])
        fit = min(fits.values())
        extrapolated = feat_sample * len(clips) / len(sample)
        out["reference"] = {
            "features_sample_s": feat_sample,
            "sample_clips": len(sample),
            "features_extrapolated_s": extrapolated,
            "fit_s": fit,
            "fit_s_by_blas_threads": fits,
            "fit_on_clips": int(reference_info["X"].shape[0]),
            "total_s": extrapolated + fit,
            "measured_whole_when_cached": reference_info["timings"],
        }
        if "cold_s" in out.get("engine", {}):
            out["speedup_cold"] = out["reference"]["total_s"] / out["engine"]["cold_s"]
        return out

    return _with_load(run)
