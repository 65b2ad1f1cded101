"""Latency of ``ser listen`` from the start of speech to a label: ``python -m benchmarks.listen [--clips 96]``.

Each of ``--clips`` RAVDESS clips (every actor, every emotion, seeded choice) is preceded by 0.5-1.5 s of
noise at -60 dBFS (so speech starts anywhere between two 0.5 s steps) and pushed through
:class:`ser_engine.listen.RollingAnalyser` 0.1 s at a time, as the microphone would deliver it, on one core
(one BLAS thread).  Latency = stream time of the first update with a label minus the start of speech (the
detector's first speech frame on the whole signal) plus that update's CPU time.  Prints the median, 95th
percentile and maximum, and the CPU milliseconds per update (all updates).  Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .timeline import RAVDESS, SR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement and print it (JSON with ``--json PATH``)."""
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(prog="python -m benchmarks.listen")
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    threadpool_limits(1)
    from ser_engine.audio import load_audio
    from ser_engine.corpora import load_ravdess
    from ser_engine.listen import RollingAnalyser, file_chunks
    from ser_engine.predict import Predictor
    from ser_engine.vad import default_detector

    predictor = Predictor.load()
    predictor.warm_up(np.sin(np.arange(SR) * 0.06).astype(np.float32) * 0.1)
    rng = np.random.default_rng(args.seed)
    clips = load_ravdess(RAVDESS)
    chosen = [clips[i] for i in rng.choice(len(clips), size=min(args.clips, len(clips)), replace=False)]
    latencies, never, per_update = [], 0, []
    for clip in chosen:
        lead = (rng.standard_normal(int(rng.uniform(0.5, 1.5) * SR)) * 1e-3).astype(np.float32)
        y = np.concatenate([lead, load_audio(clip.path)])
        segs = default_detector().speech_segments(y)
        if not segs:
            continue
        onset = segs[0][0]
        analyser = RollingAnalyser(predictor)
        first = None
        for chunk in file_chunks(y, speed=float("inf")):
            for update in analyser.push(chunk):
                per_update.append(update.compute_ms)
                if first is None and update.label is not None:
                    first = update
        if first is None:
            never += 1
            continue
        latencies.append(first.t_s - onset + first.compute_ms / 1000)
    lat = np.array(latencies)
    result = {
        "clips": len(chosen), "never_labelled": never,
        "latency_s": {"median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
        "share_within_0.6_s": float(np.mean(lat <= 0.6)),
        "update_cpu_ms": {"median": float(np.median(per_update)), "p95": float(np.percentile(per_update, 95))},
    }  # fmt: skip
    print(f"{len(lat)} of {len(chosen)} clips labelled; speech to label: median {result['latency_s']['median']:.2f} s, "
          f"95th percentile {result['latency_s']['p95']:.2f} s, max {result['latency_s']['max']:.2f} s; "
          f"{result['share_within_0.6_s']:.1%} within 0.6 s; CPU per update median "
          f"{result['update_cpu_ms']['median']:.1f} ms, 95th percentile {result['update_cpu_ms']['p95']:.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
