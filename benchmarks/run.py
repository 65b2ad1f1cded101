"""Run the benchmark: ``python -m benchmarks.run [--quick] [--json PATH] [--skip-train] ...``.

Races the engine (``ser_engine``, the shipped model, the bot) against the
classic tutorial recipe (:mod:`benchmarks.reference`) on this machine, in one
process run, and prints Markdown tables: first the issue's targets with
pass/fail, then every case in detail.  The full results, with the machine,
library versions, thread settings and load averages, go to a JSON file.

Cases: (a) 5 s Ogg/Opus voice note -> prediction, total and per stage;
(b) 3 s, 20 s and 60 s notes; (c) throughput with 1, 2, 4 and 8 concurrent
requests through ``EmotionService(workers=2)``; (d) cold start of a fresh
process to its first prediction; (e) full retrain on the 1440 RAVDESS clips,
cold and with the feature cache; (f) peak RSS of the bot process after 200
analyses; (g) the bot end to end over the fake Discord on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALL_CASES = ("a", "b", "c", "d", "e", "f")  # f runs the bot and gives both (f) and (g)

TARGETS = {
    "note_median_ms": 40.0,
    "note_speedup": 15.0,
    "throughput_notes_per_s": 50.0,
    "retrain_cold_s": 60.0,
    "bot_e2e_p50_ms": 80.0,
    "cold_start_s": 5.0,
    "bot_peak_rss_mb": 300.0,
}
"""The goals of issue #7 (5 s note median and speed-up, throughput with 2
workers, cold retrain, bot end-to-end p50, cold start, bot RSS in 10^6 bytes)."""

PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "a": {"reps": 30, "warmup": 2, "both_thread_settings": True},
        "b": {"reps": {3.0: 15, 20.0: 7, 60.0: 5}, "warmup": 1},
        "c": {"levels": (1, 2, 4, 8), "engine_requests": 120, "reference_levels": (1, 2, 4, 8)},
        "d": {"reps": 5},
        "bot": {"sequential": 100, "total": 200, "warmup": 3},
    },
    "quick": {
        "a": {"reps": 5, "warmup": 1, "both_thread_settings": False},
        "b": {"reps": {3.0: 3, 20.0: 2, 60.0: 2}, "warmup": 0, "skip_reference": (60.0,)},
        "c": {"levels": (1, 2, 4, 8), "engine_requests": 24, "reference_levels": (2,)},
        "d": {"reps": 1, "with_reference": False},
        "bot": {"sequential": 20, "total": 200, "warmup": 2},
    },
}
"""Repetitions per mode (``--quick``: a smoke run; numbers are indicative only)."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ tables
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured values and pass/fail.

    Parameters
    ----------
    results : dict
        Case results by key (``"a"`` ... ``"bot"``), as :func:`main` collects them.

    Returns
    -------
    list of dict
        ``target``, ``measured`` (display text), ``goal`` (text), ``value``
        (number in the goal's unit or None) and ``pass`` (bool or None when
        not measured).
    """
    rows: list[dict[str, Any]] = []

    def add(target: str, value: float | None, goal: float, unit: str, fmt: str, higher: bool = False, note: str = "") -> None:
        ok = None if value is None else (value >= goal if higher else value <= goal)
        shown = "not measured" if value is None else fmt.format(value) + (f" ({note})" if note else "")
        rows.append({"target": target, "measured": shown, "goal": ("≥ " if higher else "≤ ") + f"{goal:g} {unit}",
                     "value": value, "pass": ok})  # fmt: skip

    a = results.get("a")
    eng = a["stats"]["engine.total"] if a else None
    add("5 s Ogg/Opus note -> prediction, median", eng and 1000 * eng["median_s"], TARGETS["note_median_ms"], "ms", "{:.1f} ms")
    add("  speed-up over the reference (medians)", a and a["speedup"], TARGETS["note_speedup"], "x", "{:.1f}x", True,
        note=a and f"reference {_ms(a['stats'][a['baseline']]['median_s'])}" or "")  # fmt: skip
    c = results.get("c")
    best = max(c["engine"], key=lambda r: r["notes_per_s"]) if c and c["engine"] else None
    other = max(c.get("engine_other") or [], key=lambda r: r["notes_per_s"], default=None) if c else None
    note = best and f"best level: {best['concurrency']} concurrent" or ""
    if best and other:
        note += f"; {c.get('other_mode')} workers: {other['notes_per_s']:.1f}"
    add(f"Throughput, EmotionService(workers=2, mode={c.get('mode', 'thread') if c else 'process'}), 5 s notes",
        best and best["notes_per_s"], TARGETS["throughput_notes_per_s"], "notes/s", "{:.1f} notes/s", True,
        note=note)  # fmt: skip
    e = results.get("e")
    cold = e and e.get("engine", {}).get("cold_s")
    add("Retrain on all 1440 RAVDESS clips, cold", cold, TARGETS["retrain_cold_s"], "s", "{:.1f} s")
    bot = results.get("bot")
    add("Bot end to end over loopback, p50", bot and 1000 * bot["e2e"]["median_s"], TARGETS["bot_e2e_p50_ms"], "ms", "{:.1f} ms")
    d = results.get("d")
    cs = d and d.get("engine", {}).get("first_prediction", {}).get("median_s")
    add("Cold start: process start -> first prediction", cs, TARGETS["cold_start_s"], "s", "{:.2f} s")
    mem = bot and bot["memory"]
    rss = mem and mem["peak_rss_kib"] * 1024 / 1e6
    tree = mem and mem.get("tree")
    note = mem and f"after {mem['analyses']} analyses" or ""
    if tree and len(tree["processes"]) > 1:
        note += (f"; with its {len(tree['processes']) - 1} child processes: PSS {tree['total_pss_kib'] * 1024 / 1e6:.0f} MB,"
                 f" RSS summed {tree['total_rss_kib'] * 1024 / 1e6:.0f} MB")  # fmt: skip
    add("Bot peak RSS (VmHWM)", rss, TARGETS["bot_peak_rss_mb"], "MB", "{:.0f} MB", note=note)
    return rows


def _load_note(report: dict[str, Any]) -> str:
    """Per-case 1-minute load averages, and whether other processes competed for the CPUs."""
    cpus = report["machine"]["logical_cpus"] or 1
    starts = {k: v["load_average"]["before"][0] for k, v in report["results"].items() if "load_average" in v}
    if not starts:
        return f"Load average (1 min) {report['load_average']['start'][0]:.2f} at start."
    shown = ", ".join(f"{'f/g' if k == 'bot' else k} {v:.2f}" for k, v in starts.items())
    # This run keeps about one CPU busy itself (two during the retrain): more than the CPUs means other work.
    busy = max(starts.values()) > cpus
    return (f"Load average (1 min) at the start of each case: {shown} (this run keeps about 1 busy itself, 2 during "
            f"the retrain){' -- other processes competed for the CPUs, numbers are noisy' if busy else ''}.")  # fmt: skip


def render(report: dict[str, Any]) -> str:
    """Markdown text of a report: header, targets, one table per case.

    Parameters
    ----------
    report : dict
        As written to the JSON file by :func:`main`.

    Returns
    -------
    str
    """
    r = report["results"]
    m = report["machine"]
    out: list[str] = []
    out.append(f"### Benchmark ({report['mode']} run, {report['started_at']})")
    out.append("")
    out.append(
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs; Python {m['python']}, "
        f"numpy {m['versions']['numpy']}, librosa {m['versions']['librosa']}, scikit-learn {m['versions']['scikit-learn']}, "
        f"libsndfile {m['versions']['libsndfile']}. Commit {m['git_commit']}{' (+ uncommitted changes)' if report['uncommitted'] else ''}. "
        f"Model: `{report['model']['path']}`. " + _load_note(report)
    )
    out.append("")
    out.append("Threads: " + report["thread_settings"])
    out.append("")
    out.append(_table(["Target (issue #7)", "Measured", "Goal", "Pass"],
                      [[s["target"], s["measured"], s["goal"], _verdict(s["pass"])] for s in report["summary"]]))  # fmt: skip

    if "a" in r:
        a = r["a"]
        st = a["stats"]
        out += ["", f"**(a) 5 s Ogg/Opus voice note -> prediction** ({st['engine.total']['n']} interleaved runs per variant; "
                    f"both sides 1 BLAS thread; predicted: engine {a['labels']['engine']}, reference {a['labels']['reference']})", ""]  # fmt: skip
        rows = []
        for stage in ("decode", "resample", "vad", "features", "predict", "total"):
            if f"engine.{stage}" not in st:  # a JSON from before the stage existed
                continue
            e, f = st[f"engine.{stage}"], st.get(f"reference.{stage}")
            if f is None:  # the reference has no speech detector
                rows.append([stage, _ms(e["median_s"]), _ms(e["p95_s"]), "-", "-", "-"])
                continue
            rows.append([stage, _ms(e["median_s"]), _ms(e["p95_s"]), _ms(f["median_s"]), _ms(f["p95_s"]), _x(f["median_s"] / e["median_s"])])
        if "engine.total@blas_default" in st:
            e, f = st["engine.total@blas_default"], st["reference.total@blas_default"]
            rows.append(["total, OpenBLAS default threads", _ms(e["median_s"]), _ms(e["p95_s"]), _ms(f["median_s"]), _ms(f["p95_s"]),
                         _x(f["median_s"] / e["median_s"])])  # fmt: skip
        out.append(_table(["Stage", "Engine median", "Engine p95", "Reference median", "Reference p95", "Reference / engine"], rows))
        out.append(f"\nSpeed-up against the faster reference setting ({a['baseline']}): {a['speedup']:.1f}x (median), "
                   f"{a['speedup_p95']:.1f}x (p95).")  # fmt: skip

    if "b" in r:
        rows = []
        for name, c in r["b"]["clips"].items():
            f = c["reference"] or {}
            rows.append([name, _ms(c["engine"]["median_s"]), _ms(c["engine"]["p95_s"]), _ms(f.get("median_s")),
                         _ms(f.get("p95_s")), _x(c["speedup"]), f"{c['engine_realtime_factor']:.0f}x",
                         f"{c['engine']['n']}/{f.get('n', 0)}"])  # fmt: skip
        out += ["", "**(b) Clip length** (Ogg/Opus voice notes of RAVDESS speech, end-to-end; both sides 1 BLAS thread)", ""]
        out.append(_table(["Clip", "Engine median", "Engine p95", "Reference median", "Reference p95", "Speed-up",
                           "Engine x real time", "Runs"], rows))  # fmt: skip

    if "c" in r:
        c = r["c"]
        ref_by = {x["concurrency"]: x for x in c["reference"]}
        other_by = {x["concurrency"]: x for x in c.get("engine_other") or []}
        mode, other_mode = c.get("mode", "thread"), c.get("other_mode")
        rows = []
        for e in c["engine"]:
            f = ref_by.get(e["concurrency"])
            o = other_by.get(e["concurrency"])
            rows.append([str(e["concurrency"]), f"{e['notes_per_s']:.1f}", _ms(e["latency"]["median_s"]), _ms(e["latency"]["p95_s"]),
                         f"{o['notes_per_s']:.1f}" if o else "-", _ms(o["latency"]["median_s"]) if o else "-",
                         f"{f['notes_per_s']:.2f}" if f else "-", _ms(f["latency"]["median_s"]) if f else "-",
                         _x(c["speedup"].get(str(e["concurrency"])))])  # fmt: skip
        out += ["", f"**(c) Throughput through `EmotionService(workers={c['workers']}, mode={mode!r})`**, 5 s notes, "
                    f"closed loop ({c['engine'][0]['requests']} requests per level for the engine; the engine with "
                    f"{other_mode} workers interleaved; reference with {c.get('reference_mode') or mode} workers)", ""]  # fmt: skip
        out.append(_table(["Concurrent", f"Engine notes/s ({mode})", "Engine p50", "Engine p95",
                           f"Engine notes/s ({other_mode})", f"p50 ({other_mode})",
                           "Reference notes/s", "Reference p50", "Speed-up"], rows))  # fmt: skip
        failures = sum(len(x["failures"]) for x in c["engine"] + c.get("engine_other", []) + c["reference"])
        if failures:
            out.append(f"\n{failures} request(s) failed (busy/timeout); see the JSON.")

    if "d" in r:
        d = r["d"]
        rows = []
        for side in ("engine", "reference"):
            if side not in d:
                continue
            runs = d[side]["runs"]
            med = lambda k: sorted(x[k] for x in runs)[len(runs) // 2]  # noqa: E731
            rows.append([side, _ms(d[side]["first_prediction"]["median_s"]), _ms(d[side]["first_prediction"]["p95_s"]),
                         _ms(med("t_main")), _ms(med("t_imported")), _ms(med("t_loaded")), _ms(med("t_ready")),
                         _ms(d[side]["first_request_s"]["median_s"]), _ms(d[side]["second_request_s"]["median_s"]),
                         str(len(runs))])  # fmt: skip
        out += ["", "**(d) Cold start**: fresh process, seconds since spawn (medians). Engine: import, `Predictor.load`, "
                    "`EmotionService.start` (warm-up), analyse; reference: import, load the MLP, predict (no warm-up).", ""]  # fmt: skip
        out.append(_table(["Side", "First prediction", "p95", "Interpreter up", "Imported", "Model loaded", "Ready",
                           "1st request", "2nd request", "Runs"], rows))  # fmt: skip
        if "speedup" in d:
            out.append(f"\nSpeed-up to the first prediction: {d['speedup']:.1f}x.")

    if "e" in r:
        e = r["e"]
        rows = []
        eng = e.get("engine", {})
        if "cold_s" in eng:
            rows.append(["engine (`ser train --no-eval --jobs 2 " + " ".join(eng["recipe"]) + "`)", _ms(eng["cold_s"]), _ms(eng["warm_s"]),
                         "measured whole, fresh process each"])  # fmt: skip
        else:
            rows.append(["engine", "-", "-", eng.get("skipped", "")])
        f = e["reference"]
        rows.append(["reference (features on 2 processes + MLP fit)", _ms(f["total_s"]), _ms(f["fit_s"]) + " (fit only)",
                     f"features timed on {f['sample_clips']} clips ({_ms(f['features_sample_s'])}) x {1440 / f['sample_clips']:.0f}; "
                     f"whole run when cached: {f['measured_whole_when_cached']['features_s'] + f['measured_whole_when_cached']['fit_s']:.0f} s"])  # fmt: skip
        out += ["", "**(e) Retrain on all 1440 RAVDESS clips**", ""]
        out.append(_table(["Side", "Cold", "Warm (feature cache)", "How"], rows))
        if "speedup_cold" in e:
            out.append(f"\nSpeed-up (cold): {e['speedup_cold']:.1f}x.")

    if "bot" in r:
        b = r["bot"]
        br = b["e2e"]["breakdown_median_s"]
        out += ["", "**(f, g) Bot process (`python -m bot`) over the fake Discord on loopback**, 5 s voice messages", ""]
        rows = [
            ["End to end, one at a time: p50 / p95", f"{_ms(b['e2e']['median_s'])} / {_ms(b['e2e']['p95_s'])} ({b['e2e']['n']} messages)"],
            ["  MESSAGE_CREATE -> typing / download / reply arrive (medians)",
             " / ".join(_ms(br.get(k)) for k in ("typing", "download", "reply"))],
            ["Start-up: spawn -> gateway ready / first answer",
             f"{_ms(b['startup']['connected_s'])} / {_ms(b['startup']['first_answer_s'])} "
             f"(first note {_ms(b['startup']['first_note_latency_s'])})"],
            ["Peak RSS (VmHWM) / current RSS after analyses",
             f"{b['memory']['peak_rss_kib'] * 1024 / 1e6:.0f} MB / {b['memory']['rss_kib'] * 1024 / 1e6:.0f} MB "
             f"after {b['memory']['analyses']} ({b['memory']['answered_with_embed']} answered)"],
        ]  # fmt: skip
        tree = b["memory"].get("tree")
        if tree:
            mb = lambda kib: f"{kib * 1024 / 1e6:.0f} MB"  # noqa: E731
            rows.append([f"Process tree ({b['memory'].get('worker_mode') or 'default'} workers): bot + "
                         f"{len(tree['processes']) - 1} children, PSS / RSS summed / peak RSS summed",
                         f"{mb(tree['total_pss_kib'])} / {mb(tree['total_rss_kib'])} / {mb(tree['sum_hwm_kib'])}"])  # fmt: skip
            for proc in tree["processes"]:
                rows.append([f"  pid {proc['pid']}: {proc['cmd'][:40]}",
                             f"PSS {mb(proc['pss_kib'])}, RSS {mb(proc['rss_kib'])}, peak RSS {mb(proc['hwm_kib'])}"])  # fmt: skip
        if "load" in b:
            ld = b["load"]
            rows.append([f"Under load ({ld['concurrency']} messages in flight)",
                         f"{ld['notes_per_s']:.1f} notes/s, p50 {_ms(ld['latency']['median_s'])}, p95 {_ms(ld['latency']['p95_s'])}"])  # fmt: skip
        if "c" in r and r["c"]["engine"]:
            lone = r["c"]["engine"][0]["latency"]["median_s"]
            rows.append(["  of which the service's analysis (case c, 1 concurrent, median)", _ms(lone)])
        out.append(_table(["Bot", "Measured"], rows))
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m benchmarks.run``."""
    from .clips import RAVDESS_DIR
    from .reference import DEFAULT_CACHE_DIR

    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few repetitions, no retrain (< 1 min once cached)")
    p.add_argument("--json", type=Path, metavar="PATH", help="results file (default reports/benchmark[-quick].json)")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="also write the printed tables to this file")
    p.add_argument("--model", type=Path, metavar="PATH", help="engine model bundle (default: the shipped model)")
    p.add_argument("--corpus", type=Path, default=RAVDESS_DIR, metavar="DIR", help=f"RAVDESS folder (default {RAVDESS_DIR})")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, metavar="DIR",
                   help="reference model and test notes (default .cache/benchmarks, git-ignored)")  # fmt: skip
    p.add_argument("--skip-train", action="store_true", help="skip case (e), the retrain")
    p.add_argument("--skip-bot", action="store_true", help="skip cases (f) and (g), the bot process")
    p.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of an earlier run's JSON file")
    p.add_argument("--cases", default=",".join(ALL_CASES), metavar="a,b,...",
                   help="cases to run (a-e; f = the bot, giving (f) and (g)); default all")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every selected case ran (targets may still fail: the tables
        say so), 1 when the model, corpus or ffmpeg is missing or a case
        failed, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    # The reference's constant-Q chroma (tonnetz) warns on the service's 1 s warm-up signal; noise here.
    warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        text = render(saved)
        if saved.get("errors"):
            text += "\nCases that did not run: " + "; ".join(f"({k}) {v}" for k, v in saved["errors"].items()) + "\n"
        print(text)
        return 0
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if unknown := cases - set(ALL_CASES):
        print(f"unknown case(s) {sorted(unknown)}; choose from {','.join(ALL_CASES)}", file=sys.stderr)
        return 2
    if args.quick or args.skip_train:
        cases.discard("e")
    if args.skip_bot:
        cases.discard("f")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_start = time.perf_counter()

    from . import cases as bench
    from . import reference as ref
    from .clips import make_note, ravdess_clips
    from .timing import DEFAULT_BLAS_THREADS, load_average, machine_info

    machine = machine_info()
    load_start = load_average()
    try:
        from ser_engine.bundle import DEFAULT_MODEL_PATH
        from ser_engine.predict import Predictor
    except ImportError as exc:
        print(f"error: the engine's predictor is not available yet ({exc})", file=sys.stderr)
        return 1
    model_path = (args.model or Path(os.environ.get("SER_MODEL_PATH") or DEFAULT_MODEL_PATH)).resolve()
    if not model_path.is_file():
        print(f"error: model bundle {model_path} not found (train it with `ser train`, or pass --model)", file=sys.stderr)
        return 1
    try:
        clips = ravdess_clips(args.corpus)
        notes_dir = args.cache_dir / "notes"
        note_paths = {s: make_note(s, notes_dir, root=args.corpus) for s in (3.0, 5.0, 20.0, 60.0)}
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    notes = {s: p.read_bytes() for s, p in note_paths.items()}

    _log(f"[{mode}] engine model {model_path}")
    engine = Predictor.load(model_path)
    reference, ref_info = ref.load_or_train(clips, args.corpus, cache_dir=args.cache_dir, allow_subset=args.quick, log=_log)
    if ref_info["subset"]:
        _log(f"  (quick: reference MLP trained on {ref_info['n_clips']} clips only; its prediction cost is the same)")

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(key: str, title: str, fn: Any) -> None:
        _log(f"case ({key}) {title} ...")
        t0 = time.perf_counter()
        try:
            results[key] = fn()
        except Exception as exc:  # report and go on with the other cases
            errors[key] = f"{type(exc).__name__}: {exc}"
            _log(f"  FAILED: {errors[key]}")
        else:
            _log(f"  done in {time.perf_counter() - t0:.1f} s")

    if "a" in cases:
        attempt("a", "5 s voice note", lambda: bench.case_voice_note(engine, reference, notes[5.0], **plan["a"]))
    if "b" in cases:
        attempt("b", "clip lengths", lambda: bench.case_clip_lengths(
            engine, reference, {s: notes[s] for s in (3.0, 20.0, 60.0)}, **plan["b"]))  # fmt: skip
    if "c" in cases:
        pc = plan["c"]
        attempt("c", "throughput", lambda: bench.case_throughput(
            engine, reference, notes[5.0], levels=pc["levels"], engine_requests=lambda c: pc["engine_requests"],
            reference_levels=pc["reference_levels"], reference_requests=lambda c: 2 * c + 4))  # fmt: skip
    if "d" in cases:
        attempt("d", "cold start", lambda: bench.case_cold_start(
            model_path, Path(ref_info["cache_file"]), note_paths[5.0], **plan["d"]))  # fmt: skip
    if "f" in cases:
        from .bot_e2e import case_bot

        attempt("bot", "bot end to end and memory", lambda: case_bot(model_path, notes[5.0], **plan["bot"]))
    if "e" in cases:
        if ref_info["subset"]:
            errors["e"] = "the reference model is a quick subset; run without --quick first"
        else:
            attempt("e", "retrain (several minutes)", lambda: bench.case_retrain(engine, args.corpus, clips, ref_info, log=_log))

    meta = engine.bundle.metadata
    report: dict[str, Any] = {
        "mode": mode,
        "started_at": started,
        "duration_s": time.perf_counter() - t_start,
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "uncommitted": bench_uncommitted(),
        "load_average": {"start": load_start, "end": load_average()},
        "thread_settings": (
            f"single requests (a, b): 1 BLAS thread on both sides via threadpoolctl (the service's setting; "
            f"OpenBLAS default here is {DEFAULT_BLAS_THREADS}); throughput (c): EmotionService(workers=2) with "
            f"worker processes serves both sides, and the engine again with worker threads; cold start (d), retrain (e) and the bot: fresh processes with library defaults "
            f"(the engine's service sets 1 BLAS thread itself); numba: NUMBA_NUM_THREADS={machine['numba_num_threads']} "
            f"(no parallel kernels in either pipeline); OPENBLAS_CORETYPE unchanged."
        ),
        "model": {
            "path": str(model_path),
            "labels": list(engine.labels),
            "feature_config": engine.bundle.feature_config.to_dict(),
            "n_features": engine.bundle.feature_config.n_features,
            "preset": meta.get("preset"),
            "metrics": meta.get("metrics"),
        },
        "reference": {
            "recipe": "pydub decode; 40 MFCC, chroma_stft, melspectrogram, spectral_contrast, tonnetz(harmonic) means; "
            "MLP (300,), alpha 0.01, batch 256, adaptive lr, max_iter 500; no scaler",
            "n_features": ref.N_FEATURES,
            "trained_on_clips": ref_info["n_clips"],
            "subset": ref_info["subset"],
            "training_timings": ref_info["timings"],
        },
        "targets": TARGETS,
        "results": results,
        "errors": errors,
    }
    report["summary"] = summary_rows(results)
    text = render(report)
    if errors:
        text += "\nCases that did not run: " + "; ".join(f"({k}) {v}" for k, v in errors.items()) + "\n"
    print(text)
    json_path = args.json or ROOT / "reports" / ("benchmark-quick.json" if args.quick else "benchmark.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=_jsonable))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    _log(f"wrote {json_path} ({report['duration_s']:.0f} s in all)")
    return 1 if errors else 0


def bench_uncommitted() -> list[str]:
    """Uncommitted or untracked files of the engine, bot and models (``git status --porcelain``)."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "ser_engine", "bot", "models"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.splitlines() if line.strip()]


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


if __name__ == "__main__":
    sys.exit(main())
