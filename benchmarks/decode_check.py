"""Old decoder against new on voice notes: ``python -m benchmarks.decode_check [options]``.

The engine decodes Discord voice notes (Ogg/Opus, 48 kHz, mono) with PyAV
(FFmpeg's libraries in process, libopus for Opus) since it stopped using
libsndfile for them.  This script checks, in one run, that the change is
faster and changes nothing that matters:

1. **speed** -- ``load_audio(note, decoder="soundfile")`` (the old path:
   libsndfile, then soxr HQ 48 -> 16 kHz) against ``load_audio(note)`` (the
   new default: PyAV, then the same soxr call), interleaved, on the 5 s and
   60 s notes of the benchmark (``benchmarks/clips.py``; Actor 01's speech,
   libopus 32 kbit/s).  Both include the limit, DC and silence checks, which
   are the same on both sides.  Wall-clock median, p95 and min in ms, and
   the load average: other processes on the machine inflate both sides.
2. **predictions** -- ``--n`` RAVDESS clips (every ``1440 // n``-th of the
   sorted speech set, so all 24 actors and 8 emotions) are made into voice
   notes exactly as ``tests/conftest.py``'s ``voice_note`` does (ffmpeg,
   libopus 32 kbit/s, 48 kHz, mono), decoded both ways, and classified by
   the shipped model (:meth:`ser_engine.predict.Predictor.predict_signal`,
   global statistics).  Printed: the largest absolute sample difference of
   the 16 kHz waveforms, the length difference, the largest probability
   difference and how many labels change.

``--opus-decoder opus`` makes the new path use FFmpeg's own Opus decoder
instead of libopus (the investigation behind the choice of libopus: faster,
but not the reference decoder's output).

Needs ffmpeg, the RAVDESS corpus (``../shared/data/ravdess-16k`` or
``SER_RAVDESS_DIR``) and the shipped model.  Notes are cached in
``.cache/benchmarks/decode_check`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .clips import RAVDESS_DIR, ffmpeg_exe, make_note, ravdess_clips
from .timing import blas_threads, load_average, summarise

__all__ = ["main", "make_voice_notes", "compare_predictions", "time_decoders"]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "benchmarks" / "decode_check"


def make_voice_notes(clips: list[Path], out_dir: Path) -> list[Path]:
    """Encode clips as Discord-style voice notes (reused when already there).

    Parameters
    ----------
    clips : list of Path
        Source clips (RAVDESS, 16 kHz FLAC).
    out_dir : Path
        Where ``<stem>.ogg`` files go.

    Returns
    -------
    list of Path
        Ogg/Opus notes, 48 kHz, mono, libopus 32 kbit/s (the arguments of
        ``tests/conftest.py``'s ``voice_note``), in the order of ``clips``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    for clip in clips:
        out = out_dir / f"{clip.stem}.ogg"
        if not (out.is_file() and out.stat().st_size > 0):
            subprocess.run(
                [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(clip),
                 "-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-ac", "1", str(out)],
                check=True, timeout=60,
            )  # fmt: skip
        notes.append(out)
    return notes


def compare_predictions(notes: list[Path], predictor: Any) -> dict[str, Any]:
    """Decode every note the old and the new way and classify both signals.

    Parameters
    ----------
    notes : list of Path
        Encoded voice notes.
    predictor : ser_engine.predict.Predictor

    Returns
    -------
    dict
        ``n``; ``labels_changed`` (count) and ``changed`` (file, old label,
        new label); ``max_abs_diff`` (largest absolute sample difference of
        the 16 kHz signals, full scale 1.0) and ``median_max_abs_diff`` (median
        over notes of each note's largest); ``max_len_diff`` (samples);
        ``max_proba_diff`` (largest difference of any class probability).
    """
    from ser_engine.audio import load_audio

    changed: list[tuple[str, str, str]] = []
    diffs: list[float] = []
    len_diffs: list[int] = []
    proba_diffs: list[float] = []
    for note in notes:
        data = note.read_bytes()
        y_old = load_audio(data, decoder="soundfile", limits=predictor.limits)
        y_new = load_audio(data, limits=predictor.limits)
        n = min(y_old.size, y_new.size)
        diffs.append(float(np.abs(y_old[:n] - y_new[:n]).max()))
        len_diffs.append(abs(y_old.size - y_new.size))
        p_old = predictor.predict_signal(y_old)
        p_new = predictor.predict_signal(y_new)
        proba_diffs.append(max(abs(p_old.probabilities[k] - p_new.probabilities[k]) for k in p_old.probabilities))
        if p_old.label != p_new.label:
            changed.append((note.name, p_old.label, p_new.label))
    return {
        "n": len(notes),
        "labels_changed": len(changed),
        "changed": changed,
        "max_abs_diff": max(diffs),
        "median_max_abs_diff": float(np.median(diffs)),
        "max_len_diff": max(len_diffs),
        "max_proba_diff": max(proba_diffs),
    }


def time_decoders(note: bytes, *, reps: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Interleaved wall-clock and CPU times of the old and the new decode of one note.

    Parameters
    ----------
    note : bytes
        An encoded voice note.
    reps, warmup : int
        Measured and warm-up repetitions of each side.

    Returns
    -------
    dict
        ``{"old": stats, "new": stats}``, each ``median_ms``, ``p95_ms``,
        ``min_ms`` (wall clock) and ``cpu_median_ms``, ``cpu_p95_ms`` (this
        process's CPU time, which other processes on a busy machine inflate
        less than wall time) of ``load_audio`` to 16 kHz, one BLAS thread.
    """
    from ser_engine.audio import load_audio

    sides = {
        "old": lambda: load_audio(note, decoder="soundfile"),
        "new": lambda: load_audio(note),
    }
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for i in range(reps):
        for name in names[i % 2 :] + names[: i % 2]:  # alternate which side goes first
            c0, t0 = time.process_time(), time.perf_counter()
            sides[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for name in names:
        w, c = summarise(wall[name]), summarise(cpu[name])
        out[name] = {
            "median_ms": 1000 * w.median_s, "p95_ms": 1000 * w.p95_s, "min_ms": 1000 * w.min_s,
            "cpu_median_ms": 1000 * c.median_s, "cpu_p95_ms": 1000 * c.p95_s,
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both checks and print their numbers; ``--json PATH`` also saves them."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_check", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=96, help="RAVDESS clips to turn into notes (default 96)")
    parser.add_argument("--reps", type=int, default=60,
                        help="timed repetitions per decoder of the 5 s note (default 60; a quarter for the 60 s note)")
    default_model = os.environ.get("SER_MODEL_PATH") or str(ROOT / "models" / "ravdess-8class.joblib")
    parser.add_argument("--model", default=default_model)
    parser.add_argument("--corpus", type=Path, default=RAVDESS_DIR)
    parser.add_argument("--opus-decoder", choices=("libopus", "opus"), default="libopus",
                        help="FFmpeg decoder of the new path for Opus (default libopus, as the engine)")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import ser_engine.audio as audio
    from ser_engine.predict import Predictor

    audio._OPUS_DECODER = args.opus_decoder  # type: ignore[misc]  # investigation switch, see the docstring
    result: dict[str, Any] = {"opus_decoder": args.opus_decoder}
    if not args.skip_timing:
        result["load_average_before"] = load_average()
        timing = {}
        with blas_threads(1):
            for seconds in (5, 60):
                note = make_note(seconds, CACHE / "long", root=args.corpus).read_bytes()
                timing[f"{seconds}s"] = time_decoders(note, reps=args.reps if seconds == 5 else max(5, args.reps // 4))
        result["timing"] = timing
        result["load_average_after"] = load_average()
        print(f"decode + resample to 16 kHz, ms (wall; and CPU time of this process), interleaved "
              f"(load average {result['load_average_before'][0]:.2f} -> {result['load_average_after'][0]:.2f}):")
        print("| note | old median | old p95 | new median | new p95 | old / new | old CPU median | new CPU median |")
        print("|---|---|---|---|---|---|---|---|")
        for key, t in timing.items():
            o, n = t["old"], t["new"]
            print(f"| {key} | {o['median_ms']:.2f} | {o['p95_ms']:.2f} | {n['median_ms']:.2f} | {n['p95_ms']:.2f} "
                  f"| {o['median_ms'] / n['median_ms']:.2f}x | {o['cpu_median_ms']:.2f} | {n['cpu_median_ms']:.2f} |")

    clips = ravdess_clips(args.corpus)
    step = max(1, len(clips) // args.n)
    chosen = clips[::step][: args.n]
    notes = make_voice_notes(chosen, CACHE / "notes")
    predictor = Predictor.load(args.model)
    cmp = compare_predictions(notes, predictor)
    result["predictions"] = cmp
    print(f"\n{cmp['n']} RAVDESS clips as voice notes, old decode vs new ({args.opus_decoder}):")
    print(f"  labels changed: {cmp['labels_changed']} of {cmp['n']}")
    for name, old, new in cmp["changed"]:
        print(f"    {name}: {old} -> {new}")
    print(f"  max |old - new| sample difference: {cmp['max_abs_diff']:.3g}"
          f" (median over notes {cmp['median_max_abs_diff']:.3g})")
    print(f"  max length difference: {cmp['max_len_diff']} samples at 16 kHz")
    print(f"  max class-probability difference: {cmp['max_proba_diff']:.3g}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
