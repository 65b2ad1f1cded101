"""The timeline of long notes (issue 16): its cost, and how well it finds who felt what when.

``python -m benchmarks.timeline cost [--seconds 20,60] [--repeats 7] [--json PATH]``
    Side by side in one process, one BLAS thread, calls alternating A/B/C on
    the same decoded signal (a made-up conversation of RAVDESS Actor 01, see
    below): (A) one prediction of the whole note
    (:meth:`ser_engine.predict.Predictor.predict_signal`: speech gate,
    features, model), (B) :func:`ser_engine.timeline.analyse_timeline` (the
    whole note's prediction *and* every window, one STFT), (C) the naive
    timeline: the same windows each through
    :func:`~ser_engine.features.extract_features` on its own samples, plus
    the whole note.  Prints median CPU milliseconds per second of audio and
    the ratios B/A and C/A, and B's stages timed alone (detector, frame
    track, overall vector, window vectors, model).

``python -m benchmarks.timeline evaluate [--folds 4] [--per-actor 5] [--recipe shipped|quick] [--jobs 1]``
    Made-up conversations with known boundaries, for held-out actors: RAVDESS
    actors are split into ``--folds`` speaker-independent folds
    (``GroupKFold``); for each fold a model is trained without its actors
    through :class:`ser_engine.recipe.RecipeModel` (``shipped``: the shipped
    model's recipe, with its augmentation and calibration; ``quick``: the same
    without augmentation, one calibration fold), and for each held-out actor
    ``--per-actor`` conversations are made: 4 turns of different emotions
    (consecutive turns differ), each turn two of the actor's clips of that
    emotion (same intensity) cut to their speech (the detector's first to
    last speech, plus 0.1 s) and joined with 0.25 s of pause, turns joined
    with 0.6 s of pause (pauses hold noise at -60 dBFS, not digital
    silence); a true boundary is the middle of a pause between turns.  Each
    conversation runs through :func:`~ser_engine.timeline.analyse_timeline`
    twice: with the training speakers' statistics (``fallback``, as the bot
    does for a new user) and with the held-out actor's own statistics from
    all their clips (``speaker``, as the bot does after 5 notes).  Reported:

    - time accuracy: share of the turns' speech time (10 ms steps) whose
      segment has the true emotion;
    - turn accuracy: share of turns whose longest-covering segment label is right
      (against ``alone``: each turn's audio predicted on its own, the same model);
    - boundary error: for each true boundary, seconds to the nearest predicted
      boundary (a change of label between segments), median and mean; and
      how many boundaries the timeline predicts per true one.

Needs ``../shared/data/ravdess-16k`` (or ``SER_RAVDESS_DIR``).  Feature
matrices are cached in ``.cache/benchmarks/timeline`` (git-ignored).
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
RAVDESS = Path(os.environ.get("SER_RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess-16k"))
CACHE = ROOT / ".cache" / "benchmarks" / "timeline"
SR = 16_000


def _speech_span(y: np.ndarray, margin_s: float = 0.1) -> np.ndarray:
    """``y`` from the detector's first speech to its last, with ``margin_s`` either side (the whole clip if none)."""
    from ser_engine.vad import default_detector

    segs = default_detector().speech_segments(y)
    if not segs:
        return y
    a = max(0, int((segs[0][0] - margin_s) * SR))
    b = min(y.size, int((segs[-1][1] + margin_s) * SR))
    return y[a:b]


def _pause(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Noise at -60 dBFS RMS: a pause of a real recording, not digital silence."""
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (-60 / 20)).astype(np.float32)


def make_conversation(
    turns: Sequence[Sequence[Path]], labels: Sequence[str], rng: np.random.Generator,
    clip_pause_s: float = 0.25, turn_pause_s: float = 0.6,
) -> tuple[np.ndarray, list[tuple[float, float, str]], list[float]]:
    """Join the clips of each turn and the turns, with pauses.

    Parameters
    ----------
    turns : sequence of sequence of Path
        The clips of each turn (16 kHz files).
    labels : sequence of str
        The emotion of each turn.
    rng : np.random.Generator
        For the pauses' noise.
    clip_pause_s, turn_pause_s : float
        Pauses in seconds between the clips of a turn and between turns.

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32
    truth : list of (start_s, end_s, label)
        The turns' spans.
    boundaries : list of float
        Middle of each pause between turns, seconds.
    """
    from ser_engine.audio import load_audio

    parts: list[np.ndarray] = [_pause(0.3, rng)]
    t = parts[0].size / SR
    truth: list[tuple[float, float, str]] = []
    boundaries: list[float] = []
    for i, (files, label) in enumerate(zip(turns, labels, strict=True)):
        if i:
            parts.append(_pause(turn_pause_s, rng))
            boundaries.append(t + turn_pause_s / 2)
            t += turn_pause_s
        start = t
        for k, f in enumerate(files):
            if k:
                parts.append(_pause(clip_pause_s, rng))
                t += clip_pause_s
            seg = _speech_span(load_audio(f, sr=SR))
            parts.append(seg)
            t += seg.size / SR
        truth.append((start, t, label))
    parts.append(_pause(0.3, rng))
    return np.concatenate(parts).astype(np.float32), truth, boundaries


# ------------------------------------------------------------------- cost
def _actor_conversation(actor: str, n_turns: int, seed: int) -> tuple[np.ndarray, list, list]:
    from ser_engine.corpora import load_ravdess

    clips = [c for c in load_ravdess(RAVDESS) if c.speaker == actor]
    rng = np.random.default_rng(seed)
    emotions = sorted({c.label for c in clips})
    turns, labels = [], []
    for _ in range(n_turns):
        choices = [e for e in emotions if not labels or e != labels[-1]]
        label = str(rng.choice(choices))
        intensity = str(rng.choice(["normal", "strong"])) if label != "neutral" else "normal"
        pool = [c.path for c in clips if c.label == label and c.intensity == intensity]
        turns.append([pool[i] for i in rng.choice(len(pool), size=2, replace=False)])
        labels.append(label)
    return make_conversation(turns, labels, rng)


def opus_note(y: np.ndarray, bitrate: str = "32k") -> bytes:
    """A 16 kHz signal as a Discord-style voice note (Ogg/Opus, 48 kHz, mono) made with ffmpeg."""
    import subprocess
    import tempfile

    import soundfile as sf

    from .clips import ffmpeg_exe

    with tempfile.TemporaryDirectory() as tmp:
        wav, ogg = Path(tmp) / "in.wav", Path(tmp) / "out.ogg"
        sf.write(wav, y, SR, subtype="PCM_16")
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libopus",
                        "-b:a", bitrate, "-ar", "48000", "-ac", "1", str(ogg)], check=True, timeout=120)  # fmt: skip
        return ogg.read_bytes()


def _naive(y: np.ndarray, predictor: Any) -> None:
    """The timeline without sharing: every window's features from its own samples (and the whole note's)."""
    from ser_engine.features import extract_features

    config = predictor.bundle.feature_config
    window, hop = 3 * SR, SR * 3 // 2
    rows = [extract_features(y=y, config=config)]
    for start in range(0, max(1, y.size - window + hop), hop):
        rows.append(extract_features(y=y[start : start + window], config=config))
    predictor.bundle.pipeline.predict_proba(predictor.bundle.normalizer.transform(np.vstack(rows)))


def cost(seconds: Sequence[float], repeats: int) -> dict[str, Any]:
    """Median CPU ms per second of audio of a prediction, the timeline and the naive timeline."""
    from ser_engine.features import extract_features
    from ser_engine.predict import Predictor
    from ser_engine.timeline import FrameTrack, _probabilities, analyse_timeline, predict_timeline
    from ser_engine.vad import default_detector

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one core: what a worker has
    predictor = Predictor.load()
    y_all, _, _ = _actor_conversation("Actor_01", 40, seed=0)
    out: dict[str, Any] = {"cases": []}
    for secs in seconds:
        y = y_all[: int(secs * SR)]
        note = opus_note(y)
        calls = {
            "A_predict": lambda y=y: predictor.predict_signal(y),
            "B_timeline": lambda y=y: analyse_timeline(y, predictor),
            "C_naive": lambda y=y: _naive(y, predictor),
            "D_predict_opus": lambda b=note: predictor.predict(b),
            "E_timeline_opus": lambda b=note: predict_timeline(predictor, b),
        }
        track = FrameTrack(y, predictor.bundle.feature_config)
        spans = [(k, min(track.n_frames, k + 301)) for k in range(0, track.n_frames - 301 + 150, 150)]
        X = np.vstack([track.features(a, b) for a, b in spans])
        stages = {
            "vad_full_pass": lambda y=y: default_detector().speech_frames(y),
            "frame_track": lambda y=y: FrameTrack(y, predictor.bundle.feature_config),
            "overall_vector": lambda t=track: t.features(),
            "window_vectors": lambda t=track, s=spans: [t.features(a, b, exact=False) for a, b in s],
            "model": lambda X=X: _probabilities(predictor, X, None),
            "extract_features_whole": lambda y=y: extract_features(y=y, config=predictor.bundle.feature_config),
        }
        for f in (*calls.values(), *stages.values()):
            f()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in (*calls, *stages)}
        for _ in range(repeats):
            for name, f in (*calls.items(), *stages.items()):
                t0 = time.process_time()
                f()
                times[name].append(time.process_time() - t0)
        med = {k: float(np.median(v)) * 1000 for k, v in times.items()}
        case = {"seconds": secs, "ms": med, "ms_per_s": {k: v / secs for k, v in med.items()},
                "B_over_A": med["B_timeline"] / med["A_predict"], "C_over_A": med["C_naive"] / med["A_predict"],
                "E_over_D": med["E_timeline_opus"] / med["D_predict_opus"],
                "n_windows": len(spans)}  # fmt: skip
        out["cases"].append(case)
    return out


# --------------------------------------------------------------- evaluate
def _recipe(name: str) -> Any:
    from ser_engine.recipe import Recipe

    if name == "shipped":
        return Recipe()
    return Recipe(augment=(), inner_fits=1)


def _segments_label_at(segments: Sequence[Any], t: np.ndarray) -> np.ndarray:
    out = np.full(t.shape, "", dtype=object)
    for s in segments:
        out[(t >= s.start_s) & (t < s.end_s)] = s.label
    return out


def _score(timeline: Any, truth: list[tuple[float, float, str]], boundaries: list[float]) -> dict[str, Any]:
    segs = timeline.segments
    t_all, ok_all, turn_ok = [], [], []
    for a, b, label in truth:
        t = np.arange(a, b, 0.01)
        got = _segments_label_at(segs, t)
        t_all.append(t.size)
        ok_all.append(int(np.sum(got == label)))
        covered = {lab: float(np.sum(got == lab)) for lab in set(got) if lab}
        turn_ok.append(bool(covered) and max(covered, key=covered.__getitem__) == label)
    # A predicted boundary: where the label changes between consecutive segments (the middle of any gap).
    predicted = [(segs[i - 1].end_s + segs[i].start_s) / 2 for i in range(1, len(segs))
                 if segs[i].label != segs[i - 1].label]  # fmt: skip
    errors = [min((abs(p - b) for p in predicted), default=float("nan")) for b in boundaries]
    return {"frames": sum(t_all), "frames_ok": sum(ok_all), "turns": len(truth), "turns_ok": sum(turn_ok),
            "boundary_errors": errors, "predicted_boundaries": len(predicted), "true_boundaries": len(boundaries)}  # fmt: skip


def evaluate(folds: int, per_actor: int, recipe_name: str, jobs: int, n_turns: int = 4) -> dict[str, Any]:
    """Train per fold without the held-out actors, then score timelines of their made-up conversations."""
    from sklearn.model_selection import GroupKFold

    from ser_engine.corpora import load_ravdess
    from ser_engine.normalization import SpeakerStats
    from ser_engine.predict import Predictor
    from ser_engine.recipe import RecipeModel
    from ser_engine.timeline import analyse_timeline
    from ser_engine.training import encode_labels, featurize_conditions, label_order

    recipe = _recipe(recipe_name)
    clips = load_ravdess(RAVDESS)
    labels = label_order(clips)
    mats = featurize_conditions(clips, ["clean", *recipe.augment], config=recipe.features, n_jobs=jobs,
                                progress=True, cache_dir=CACHE)  # fmt: skip
    X, y = mats["clean"], encode_labels(clips, labels)
    groups = np.array([c.speaker for c in clips])
    results: dict[str, list[dict[str, Any]]] = {"fallback": [], "speaker": []}
    alone: dict[str, list[bool]] = {"fallback": [], "speaker": []}
    started = time.time()
    for fold, (train, test) in enumerate(GroupKFold(n_splits=folds).split(X, y, groups)):
        model = RecipeModel(recipe).fit(X[train], y[train], groups[train],
                                        augment={c: mats[c][train] for c in recipe.augment}, n_jobs=jobs)  # fmt: skip
        predictor = Predictor(model.to_bundle(labels))
        ungated = Predictor(predictor.bundle, detect_speech=False)  # a turn alone is always scored
        for actor in sorted(set(groups[test])):
            rows = np.flatnonzero(groups == actor)
            stats = SpeakerStats.of(X[rows])
            for k in range(per_actor):
                seed = int(actor.split("_")[-1]) * 1000 + k
                yc, truth, bounds = _actor_conversation(actor, n_turns, seed)
                for mode, st in (("fallback", None), ("speaker", stats)):
                    tl = analyse_timeline(yc, predictor, speaker_stats=st)
                    results[mode].append({"actor": actor, "seed": seed, **_score(tl, truth, bounds)})
                for a, b, label in truth:
                    turn = yc[int(a * SR) : int(b * SR)]
                    alone["fallback"].append(ungated.predict_signal(turn).label == label)
                    alone["speaker"].append(ungated.predict_signal(turn, speaker_stats=stats).label == label)
        print(f"fold {fold + 1}/{folds} done ({time.time() - started:.0f} s)", file=sys.stderr)
    summary: dict[str, Any] = {"recipe": recipe.to_dict(), "folds": folds, "per_actor": per_actor,
                               "turns_per_conversation": n_turns}  # fmt: skip
    for mode, rs in results.items():
        errs = np.array([e for r in rs for e in r["boundary_errors"]], dtype=float)
        found = errs[np.isfinite(errs)]
        summary[mode] = {
            "conversations": len(rs),
            "turn_accuracy_alone": float(np.mean(alone[mode])),
            "time_accuracy": sum(r["frames_ok"] for r in rs) / sum(r["frames"] for r in rs),
            "turn_accuracy": sum(r["turns_ok"] for r in rs) / sum(r["turns"] for r in rs),
            "boundary_error_median_s": float(np.median(found)) if found.size else None,
            "boundary_error_mean_s": float(np.mean(found)) if found.size else None,
            "boundaries_within_1s": float(np.mean(np.nan_to_num(errs, nan=np.inf) <= 1.0)),
            "predicted_per_true_boundary": sum(r["predicted_boundaries"] for r in rs)
            / max(1, sum(r["true_boundaries"] for r in rs)),
        }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cost`` or ``evaluate`` and print the result as Markdown (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--seconds", default="20,60", help="note lengths in seconds, comma-separated")
    c.add_argument("--repeats", type=int, default=7)
    e = sub.add_parser("evaluate")
    e.add_argument("--folds", type=int, default=4)
    e.add_argument("--per-actor", type=int, default=5)
    e.add_argument("--recipe", choices=["shipped", "quick"], default="shipped")
    e.add_argument("--jobs", type=int, default=1)
    for p in (c, e):
        p.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    if args.what == "cost":
        result = cost([float(s) for s in args.seconds.split(",")], args.repeats)
        print("| note | A predict ms/s | B timeline ms/s | C naive ms/s | B/A | C/A | D predict, Opus note | "
              "E timeline, Opus note | E/D | windows |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for case in result["cases"]:
            m = case["ms_per_s"]
            print(f"| {case['seconds']:.0f} s | {m['A_predict']:.2f} | {m['B_timeline']:.2f} | {m['C_naive']:.2f} "
                  f"| {case['B_over_A']:.2f} | {case['C_over_A']:.2f} | {m['D_predict_opus']:.2f} "
                  f"| {m['E_timeline_opus']:.2f} | {case['E_over_D']:.2f} | {case['n_windows']} |")
        print("\nStages of B alone (ms per s of audio):")
        for case in result["cases"]:
            m = case["ms_per_s"]
            print(f"- {case['seconds']:.0f} s: " + ", ".join(
                f"{k} {m[k]:.2f}" for k in ("vad_full_pass", "frame_track", "overall_vector", "window_vectors",
                                            "model", "extract_features_whole")))  # fmt: skip
    else:
        result = evaluate(args.folds, args.per_actor, args.recipe, args.jobs)
        print(f"recipe {args.recipe}, {args.folds} speaker-independent folds, {args.per_actor} conversations per "
              "held-out actor")
        print("| statistics | conversations | time accuracy | turn accuracy | each turn alone | boundary error "
              "median / mean (s) | boundaries found within 1 s | predicted per true boundary |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for mode in ("fallback", "speaker"):
            r = result[mode]
            print(f"| {mode} | {r['conversations']} | {r['time_accuracy']:.3f} | {r['turn_accuracy']:.3f} | "
                  f"{r['turn_accuracy_alone']:.3f} | "
                  f"{r['boundary_error_median_s']:.2f} / {r['boundary_error_mean_s']:.2f} | "
                  f"{r['boundaries_within_1s']:.3f} | {r['predicted_per_true_boundary']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
