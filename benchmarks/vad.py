"""Score the voice-activity detectors: ``python -m benchmarks.vad [--per-kind 20] [--other 60] [--json PATH]``.

For Silero VAD (the engine's :func:`ser_engine.vad.default_detector`) and
WebRTC's VAD at aggressiveness 0-3, all with
:data:`ser_engine.vad.DEFAULT_SETTINGS`, prints as Markdown:

- the share of the generated non-speech clips refused (:mod:`benchmarks.nonspeech`;
  seed 0, on which the settings were chosen, and seed 1, held out), overall
  and per kind;
- the share of the 1440 RAVDESS speech clips accepted (and which were refused);
- the share of a sample of the five Opus-coded corpora accepted (``--other``
  clips per corpus, 0 to skip);
- the cost in ms per 5 s clip (median wall and CPU time of ``frame_scores``
  on a 5 s RAVDESS signal, after one warm-up call).

Issue 12's targets: at least 95 % of non-speech refused, at least 99.5 % of
RAVDESS accepted.  Needs ``../shared/data`` (or ``SER_RAVDESS_DIR``) and
``webrtcvad-wheels`` (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SER_RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess-16k")).parent
OTHER = ("nemo", "ased", "emovo", "urdu", "emotiontts")


def _cost_ms(scorer: Any, y: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``scorer.frame_scores(y)``."""
    scorer.frame_scores(y)  # warm-up: the first ONNX run allocates
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        scorer.frame_scores(y)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * float(np.median(wall)), 1000 * float(np.median(cpu))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print it; returns 0 when the kept detector meets both targets, else 1."""
    from benchmarks.nonspeech import KINDS, nonspeech_clips
    from ser_engine.audio import load_audio
    from ser_engine.corpora import load_manifest, load_ravdess
    from ser_engine.vad import DEFAULT_SETTINGS, SileroVad, SpeechDetector, WebRtcVad

    parser = argparse.ArgumentParser(prog="python -m benchmarks.vad", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding ravdess-16k/ and the manifests")
    parser.add_argument("--per-kind", type=int, default=20, help="generated clips per kind and seed (default 20: 220)")
    parser.add_argument("--other", type=int, default=60, help="clips per other corpus (default 60; 0 skips)")
    parser.add_argument("--repeats", type=int, default=50, help="timing repetitions (default 50)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)

    detectors = {"silero": SpeechDetector(SileroVad(), DEFAULT_SETTINGS)}
    detectors |= {f"webrtc-{a}": SpeechDetector(WebRtcVad(a), DEFAULT_SETTINGS) for a in range(4)}
    result: dict[str, dict[str, Any]] = {name: {} for name in detectors}

    for seed in (0, 1):
        clips = nonspeech_clips(args.per_kind, seed=seed)
        for name, det in detectors.items():
            refused = np.array([not det.has_speech(y) for _, y in clips])
            kinds = np.array([k for k, _ in clips])
            result[name][f"nonspeech_refused_seed{seed}"] = float(refused.mean())
            result[name][f"per_kind_seed{seed}"] = {k: float(refused[kinds == k].mean()) for k in KINDS}

    ravdess = load_ravdess(args.data / "ravdess-16k")
    signals = [load_audio(c.path) for c in ravdess]
    for name, det in detectors.items():
        accepted = np.array([det.has_speech(y) for y in signals])
        result[name]["ravdess_accepted"] = float(accepted.mean())
        result[name]["ravdess_refused_clips"] = [ravdess[i].path.stem for i in np.flatnonzero(~accepted)][:20]

    if args.other > 0:
        rng = np.random.default_rng(0)
        other = []
        for corpus in OTHER:
            clips = load_manifest(args.data / corpus)
            picked = rng.choice(len(clips), min(args.other, len(clips)), replace=False)
            other += [(corpus, load_audio(clips[i].path)) for i in picked]
        for name, det in detectors.items():
            accepted = np.array([det.has_speech(y) for _, y in other])
            result[name]["other_accepted"] = float(accepted.mean())
            result[name]["other_accepted_per_corpus"] = {
                c: float(np.mean([a for (k, _), a in zip(other, accepted, strict=True) if k == c])) for c in OTHER
            }

    five = np.concatenate(signals[:4])[: 5 * 16000]
    for name, det in detectors.items():
        wall, cpu = _cost_ms(det.scorer, five, args.repeats)
        result[name]["ms_per_5s_wall"], result[name]["ms_per_5s_cpu"] = wall, cpu

    out = sys.stdout
    print(f"## Voice-activity detectors ({DEFAULT_SETTINGS})\n", file=out)
    print("| detector | non-speech refused, seed 0 | seed 1 (held out) | RAVDESS accepted | other corpora accepted "
          "| ms per 5 s (wall) | ms per 5 s (CPU) |", file=out)  # fmt: skip
    print("|---|---|---|---|---|---|---|", file=out)
    for name, r in result.items():
        other_cell = f"{r['other_accepted']:.1%}" if "other_accepted" in r else "-"
        print(f"| {name} | {r['nonspeech_refused_seed0']:.1%} | {r['nonspeech_refused_seed1']:.1%} "
              f"| {r['ravdess_accepted']:.2%} | {other_cell} | {r['ms_per_5s_wall']:.1f} | {r['ms_per_5s_cpu']:.1f} |",
              file=out)  # fmt: skip
    print("\n## Non-speech refused per kind (seed 0 / seed 1)\n", file=out)
    print("| kind | " + " | ".join(result) + " |", file=out)
    print("|---|" + "---|" * len(result), file=out)
    for kind in KINDS:
        cells = [f"{r['per_kind_seed0'][kind]:.0%} / {r['per_kind_seed1'][kind]:.0%}" for r in result.values()]
        print(f"| {kind} | " + " | ".join(cells) + " |", file=out)
    silero = result["silero"]
    print(f"\nRAVDESS clips Silero refused: {', '.join(silero['ravdess_refused_clips']) or 'none'}", file=out)
    if "other_accepted_per_corpus" in silero:
        shares = ", ".join(f"{c} {v:.0%}" for c, v in silero["other_accepted_per_corpus"].items())
        print(f"Silero's acceptance per other corpus: {shares}", file=out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    met = min(silero["nonspeech_refused_seed0"], silero["nonspeech_refused_seed1"]) >= 0.95
    met = met and silero["ravdess_accepted"] >= 0.995
    print(f"\nTargets (>= 95 % refused, >= 99.5 % accepted) for Silero: {'met' if met else 'NOT met'}", file=out)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
