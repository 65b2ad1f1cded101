"""Time the CRNN against the MLP on one core: a 5 s voice note's model cost (issue 16).

Both sides start from the same decoded 5 s signal (real RAVDESS speech,
clips of Actor 01 joined); decoding and the speech gate are the same for
both and left out.  CRNN: :func:`ser_engine.deep.frames.log_mel_frames`
and one ONNX run (onnxruntime, one thread).  MLP:
:func:`ser_engine.features.extract_features` and the shipped pipeline.
Runs alternate (A, B, A, B, ...) in one process with BLAS and onnxruntime
at one thread, and the medians are printed.

Usage::

    python -m benchmarks.crnn [--model crnn.onnx] [--reps 200]

Without ``--model`` a CRNN of the default :class:`~ser_engine.deep.train.CRNNConfig`
with untrained weights is exported (needs the ``[deep]`` extra): its cost is
that of a trained one, the weights do not change the work.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def _signal(corpus: Path, seconds: float = 5.0) -> np.ndarray:
    from ser_engine.audio import TARGET_SR, load_audio

    parts, total = [], 0
    for path in sorted((corpus / "Actor_01").glob("*.flac")):
        y = load_audio(path)
        parts.append(y)
        total += y.size
        if total >= seconds * TARGET_SR:
            break
    return np.concatenate(parts)[: int(seconds * TARGET_SR)].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Run the race and print one Markdown table.

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a saved CRNN (.onnx); default: the default network, untrained")
    parser.add_argument("--mlp", type=Path, help="MLP bundle (default: the shipped model)")
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("SER_RAVDESS_DIR", "../shared/data/ravdess-16k")))
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from ser_engine.deep.frames import FrameConfig, log_mel_frames
    from ser_engine.deep.onnx_model import crnn_from_network, load_crnn
    from ser_engine.features import extract_features
    from ser_engine.predict import Predictor

    threadpool_limits(limits=1)
    if args.model is not None:
        crnn = load_crnn(args.model)
    else:
        from ser_engine.deep.train import CRNNConfig, build_network

        config = CRNNConfig()
        crnn = crnn_from_network(build_network(64, 8, config).eval(), [str(i) for i in range(8)], FrameConfig(),
                                 config.crop_frames)  # fmt: skip
    mlp = Predictor.load(args.mlp, detect_speech=False)
    y = _signal(args.corpus)

    def run_crnn() -> None:
        crnn.predict_proba([log_mel_frames(y, crnn.frame_config)])

    def run_mlp() -> None:
        mlp.classify_features(extract_features(y=y, config=mlp.bundle.feature_config))

    for f in (run_crnn, run_mlp):  # warm-up: filter banks, FFT plans, the ONNX session
        f()
        f()
    times: dict[str, list[float]] = {"crnn": [], "mlp": []}
    for _ in range(args.reps):
        for name, f in (("crnn", run_crnn), ("mlp", run_mlp)):
            t = time.perf_counter()
            f()
            times[name].append(1000 * (time.perf_counter() - t))
    frames_ms = []
    for _ in range(min(args.reps, 50)):
        t = time.perf_counter()
        log_mel_frames(y, crnn.frame_config)
        frames_ms.append(1000 * (time.perf_counter() - t))
    print(f"5.0 s note, one thread, {args.reps} alternating runs; load average {os.getloadavg()[0]:.2f}; "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print("\n| model | median ms | p90 ms |\n| --- | --- | --- |")
    for name, label in (("crnn", "CRNN (log-mel frames + ONNX)"), ("mlp", "MLP (2378 features + pipeline)")):
        v = np.array(times[name])
        print(f"| {label} | {np.median(v):.2f} | {np.percentile(v, 90):.2f} |")
    print(f"| of which the CRNN's log-mel frames | {np.median(frames_ms):.2f} | {np.percentile(frames_ms, 90):.2f} |")
    both = np.array(times["crnn"]) + np.array(times["mlp"])
    print(f"| both (an average of the two) | {np.median(both):.2f} | {np.percentile(both, 90):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
