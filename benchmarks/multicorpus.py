"""Train and measure the shipped multi-corpus model (issue 12), through the library.

``ser train`` reads one corpus; until it takes several, this script is the
exact, re-runnable recipe of ``models/ser-multicorpus.joblib``::

    python -m benchmarks.multicorpus train  --cache-dir .cache/features --out models/ser-multicorpus.joblib
    python -m benchmarks.multicorpus score  --model models/ser-multicorpus.joblib --cache-dir .cache/features
    python -m benchmarks.multicorpus ravdess --folds 3 --cache-dir .cache/features
    python -m benchmarks.multicorpus ablation --cache-dir .cache/features [--rows R0,R1,...]

``train``
    :data:`SHIPPED` fitted on every clip of the licence-compatible corpora
    (:func:`ser_engine.corpora.shareable_clips`: RAVDESS, nEMO, emotiontts),
    saved with the licence table, counts and data fingerprint in its metadata.
``score``
    A bundle on corpora it never heard (ASED, EMOVO, URDU by default), as new
    speakers (the training speakers' statistics) and as known speakers (their
    own statistics; not URDU, whose speakers are tied to one emotion): UAR
    over angry/happy/neutral/sad with the answer restricted to those four
    (chance 0.25), UAR of the 8-way answer over the same clips (what the bot
    says; any other emotion counts wrong), ECE (15 bins) of each, the share
    of unsure answers (confidence < 0.5) and the accuracy of the confident
    ones.
``ravdess``
    RAVDESS speaker-independent, 8 emotions: ``GroupKFold`` over the 24
    actors; each fold trains the recipe on the other actors plus every clip
    of the other corpora (uncalibrated: a temperature never changes a label).
``ablation``
    The rows of the model card's ablation: each recipe fitted on its corpora,
    scored as ``score`` does (uncalibrated labels) and by ``ravdess``.

Features come from :func:`ser_engine.training.featurize_conditions`, one call
per corpus folder, cached under ``--cache-dir``.  Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SER_RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess-16k")).parent

#: Corpus name -> folder under the data directory.
FOLDERS: Final[dict[str, str]] = {
    "ravdess": "ravdess-16k", "nemo": "nemo", "emotiontts": "emotiontts", "ased": "ased", "emovo": "emovo",
    "urdu": "urdu",
}  # fmt: skip
#: The emotions every corpus has: the unseen-corpus scores are over these (issue 12).
FOUR: Final[tuple[str, ...]] = ("angry", "happy", "neutral", "sad")
#: Corpora never trained on by the shipped model (no licence to share a model made from them).
UNSEEN: Final[tuple[str, ...]] = ("ased", "emovo", "urdu")
#: Augmentation rotations: the previous model's three conditions, and the recording channels of issue 12.
ROTATION_OLD: Final[str] = "noise20|opus24k|pitch+1"
ROTATION_CHANNEL: Final[str] = "phone|reverb|mic|agc|short1.5"


def _recipes() -> dict[str, tuple[tuple[str, ...], Any]]:
    from ser_engine.recipe import Recipe

    three = ("ravdess", "nemo", "emotiontts")
    old, channel = ROTATION_OLD, ROTATION_CHANNEL

    def multi(**kw: Any) -> tuple[tuple[str, ...], Any]:
        return three, Recipe(corpora=three, **{"augment": (), **kw})

    return {
        "R0": (("ravdess",), Recipe()),  # the previous shipped recipe
        "R0c": (("ravdess",), Recipe(augment=(*Recipe().augment, channel))),
        "R1": multi(),
        "R1w": multi(balance="corpus"),
        "R1h": multi(mlp={"hidden_layer_sizes": (256,)}),
        "R2": multi(balance="label"),
        "R3": multi(balance="label", codec="opus32k"),
        "R4": multi(balance="label", augment=(old,)),
        "R5": multi(balance="label", augment=(old,), codec="opus32k"),
        "R6": multi(balance="label", augment=(channel,)),
        "R7": multi(balance="label", augment=(old, channel), codec="opus32k"),
        "R8": multi(balance="corpus+label"),
        "R9": multi(balance="corpus+label", augment=(old, channel), codec="opus32k"),
        "R10": multi(balance="corpus+label", mlp={"hidden_layer_sizes": (128,)}),
        "R11": multi(balance="corpus+label", mlp={"alpha": 1.0}),
        "R12": multi(balance="corpus+label", augment=(channel,)),
        "R13": multi(balance="corpus+label", augment=(channel,), mlp={"hidden_layer_sizes": (128,)}),
        # The pool (ser_engine.ensemble): the RAVDESS-only expert of R0c and the three-corpus R12, one
        # geometric mean of their probabilities, temperature from left-out corpora.
        "P1": (three, Recipe(members=(Recipe(augment=(*Recipe().augment, channel), corpora=("ravdess",), calibrate=False),
                                      multi(balance="corpus+label", augment=(channel,), calibrate=False)[1]),
                             calibrate_on="corpora")),
    }


#: The ablation row whose recipe ships (with its temperature from left-out corpora).
SHIPPED_ROW: Final[str] = "R10"


def shipped_recipe(row: str = SHIPPED_ROW) -> tuple[tuple[str, ...], Any]:
    """Corpora and recipe of ``models/ser-multicorpus.joblib``: an ablation row's, temperature from left-out
    corpora when it has several (else from inner speaker folds)."""
    from dataclasses import replace

    corpora, recipe = _recipes()[row]
    return corpora, replace(recipe, calibrate_on="corpora") if len(corpora) > 1 else recipe


class Data:
    """Clips and cached feature matrices of the corpora under one data folder."""

    def __init__(self, root: Path, cache_dir: str | None, jobs: int) -> None:
        self.root, self.cache_dir, self.jobs = root, cache_dir, jobs
        self._clips: dict[str, list[Any]] = {}

    def clips(self, name: str) -> list[Any]:
        from ser_engine.corpora import load_corpora

        if name not in self._clips:
            self._clips[name] = load_corpora([self.root / FOLDERS[name]])
        return self._clips[name]

    def matrices(self, name: str, conditions: Sequence[str], codec: str | None) -> dict[str, np.ndarray]:
        from ser_engine.training import featurize_conditions

        return featurize_conditions(self.clips(name), list(conditions), n_jobs=self.jobs, cache_dir=self.cache_dir,
                                    codec=codec, progress=True)  # fmt: skip

    def training_set(self, corpora: Sequence[str], recipe: Any) -> dict[str, Any]:
        """Labels (union of the corpora's), raw features, classes, speakers, corpora and degraded copies."""
        from ser_engine.training import encode_labels, label_order

        clips = [c for name in corpora for c in self.clips(name)]
        labels = label_order(clips)
        # Only the copies the recipe trains on (a pool's RAVDESS-only member needs no degraded nEMO): NaN rows.
        parts = []
        for name in corpora:
            part = self.matrices(name, ["clean", *recipe.augment_for(name)], recipe.codec)
            parts.append({c: part.get(c, np.full_like(part["clean"], np.nan)) for c in ["clean", *recipe.augment]})
        return {
            "clips": clips, "labels": labels, "X": np.vstack([p["clean"] for p in parts]),
            "y": encode_labels(clips, labels), "groups": np.array([c.speaker for c in clips]),
            "corpora": np.array([c.corpus for c in clips]),
            "augment": {c: np.vstack([p[c] for p in parts]) for c in recipe.augment},
        }  # fmt: skip


def _uar(y: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> float:
    return float(np.mean([np.mean(pred[y == k] == k) for k in classes if np.any(y == k)]))


def score_unseen(proba_of: Any, labels: Sequence[str], data: Data, names: Sequence[str] = UNSEEN) -> dict[str, Any]:
    """Scores of a model on corpora it never heard (see the module docstring).

    Parameters
    ----------
    proba_of : callable(X, groups or None) -> np.ndarray, shape (n, len(labels))
        Calibrated probabilities; ``groups`` None: new speakers.
    labels : sequence of str
    data : Data
    names : sequence of str

    Returns
    -------
    dict
        ``{corpus: {"new": {...}, "own": {...}}}`` with ``uar4``, ``ece4``, ``uar8``, ``ece8``,
        ``unsure8``, ``confident_acc8``, ``n``.
    """
    from ser_engine.calibration import expected_calibration_error
    from ser_engine.corpora import corpus_info

    idx = [list(labels).index(e) for e in FOUR]
    out: dict[str, Any] = {}
    for name in names:
        clips = [c for c in data.clips(name) if c.label in FOUR]
        keep = np.array([c.label in FOUR for c in data.clips(name)])
        X = data.matrices(name, ["clean"], None)["clean"][keep]
        y8 = np.array([list(labels).index(c.label) for c in clips])
        y4 = np.array([FOUR.index(c.label) for c in clips])
        groups = np.array([c.speaker for c in clips])
        info = corpus_info(name)
        row: dict[str, Any] = {}
        for mode in ("new", "own"):
            if mode == "own" and info is not None and not info.own_speaker_stats:
                continue
            P = proba_of(X, None if mode == "new" else groups)
            P4 = P[:, idx] / P[:, idx].sum(axis=1, keepdims=True)
            pred8, conf8 = P.argmax(axis=1), P.max(axis=1)
            confident = conf8 >= 0.5
            row[mode] = {
                "n": int(y8.size),
                "uar4": _uar(y4, P4.argmax(axis=1), range(4)), "ece4": expected_calibration_error(P4, y4),
                "uar8": _uar(y8, pred8, idx), "ece8": expected_calibration_error(P, y8),
                "unsure8": float(np.mean(~confident)),
                "confident_acc8": float(np.mean(pred8[confident] == y8[confident])) if confident.any() else None,
            }  # fmt: skip
        out[name] = row
    return out


def ravdess_folds(data: Data, corpora: Sequence[str], recipe: Any, folds: int) -> dict[str, Any]:
    """RAVDESS speaker-independent 8-class accuracy and UAR, mean over ``folds`` actor folds."""
    from sklearn.model_selection import GroupKFold

    from ser_engine.recipe import RecipeModel

    t = data.training_set(corpora, recipe)
    X, y, g, cs = t["X"], t["y"], t["groups"], t["corpora"]
    rav = np.flatnonzero(cs == "ravdess")
    accs, uars = [], []
    for tr, te in GroupKFold(n_splits=folds).split(rav, groups=g[rav]):
        test = rav[te]
        train = np.setdiff1d(np.arange(y.size), test)
        model = RecipeModel(recipe).fit(X[train], y[train], g[train], augment={c: A[train] for c, A in t["augment"].items()},
                                        calibrate=False, corpora=cs[train])  # fmt: skip
        pred = model.predict(X[test], g[test])  # held-out actors normalised with their own clips
        accs.append(float(np.mean(pred == y[test])))
        uars.append(_uar(y[test], pred, range(len(t["labels"]))))
        print(f"  RAVDESS fold {len(accs)}/{folds}: accuracy {accs[-1]:.3f}", file=sys.stderr, flush=True)
    return {"folds": folds, "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "uar": float(np.mean(uars)), "accuracy_per_fold": accs}  # fmt: skip


def train(data: Data, out: Path, row: str = SHIPPED_ROW) -> dict[str, Any]:
    """Fit :func:`shipped_recipe` on the shareable corpora and save the bundle; returns its metadata."""
    from ser_engine.bundle import save_bundle
    from ser_engine.corpora import shareable_clips
    from ser_engine.recipe import RecipeModel
    from ser_engine.training import corpus_provenance

    corpora, recipe = shipped_recipe(row)
    t = data.training_set(corpora, recipe)
    clips = t["clips"]
    if len(shareable_clips(clips)) != len(clips):
        raise SystemExit("refusing to ship: a training corpus' licence does not allow sharing the model")
    model = RecipeModel(recipe).fit(t["X"], t["y"], t["groups"], augment=t["augment"], corpora=t["corpora"],
                                    n_jobs=data.jobs)  # fmt: skip
    metadata = {**corpus_provenance(clips, t["labels"], t["y"]),
                "trained_by": f"python -m benchmarks.multicorpus train --row {row}"}
    bundle = model.to_bundle(t["labels"], metadata)
    save_bundle(bundle, out)
    return bundle.metadata


def _bundle_proba(path: Path) -> tuple[Any, Sequence[str]]:
    from ser_engine.bundle import load_bundle
    from ser_engine.predict import apply_temperature

    bundle = load_bundle(path)

    def proba_of(X: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        Z = X
        if bundle.normalizer is not None:
            Z = bundle.normalizer.transform(X) if groups is None else bundle.normalizer.transform_groups(X, groups)
        return apply_temperature(bundle.pipeline.predict_proba(np.asarray(Z, dtype=np.float32)), bundle.temperature)

    return proba_of, bundle.labels


def table(scores: dict[str, Any]) -> str:
    """Markdown table of :func:`score_unseen` results."""
    lines = ["| corpus | speakers | UAR (4 of 4) | ECE (4) | UAR (8-way answer) | ECE (8) | unsure | acc. confident |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, row in scores.items():
        for mode, s in row.items():
            acc = "-" if s["confident_acc8"] is None else f"{s['confident_acc8']:.3f}"
            lines.append(f"| {name} | {mode} | {s['uar4']:.3f} | {s['ece4']:.3f} | {s['uar8']:.3f} | {s['ece8']:.3f} "
                         f"| {s['unsure8']:.3f} | {acc} |")  # fmt: skip
    for mode in ("new", "own"):
        rows = [row[mode] for row in scores.values() if mode in row]
        if rows:
            lines.append(f"| mean | {mode} | {np.mean([s['uar4'] for s in rows]):.3f} | "
                         f"{np.mean([s['ece4'] for s in rows]):.3f} | {np.mean([s['uar8'] for s in rows]):.3f} | "
                         f"{np.mean([s['ece8'] for s in rows]):.3f} | {np.mean([s['unsure8'] for s in rows]):.3f} | |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multicorpus", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["train", "score", "ravdess", "ablation"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the corpus folders")
    parser.add_argument("--cache-dir", default=None, help="feature cache folder (reused across runs)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "ser-multicorpus.joblib")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "ser-multicorpus.joblib")
    parser.add_argument("--folds", type=int, default=3, help="RAVDESS actor folds (ravdess, ablation)")
    parser.add_argument("--rows", default=None, help="ablation rows, e.g. R0,R5 (default all)")
    parser.add_argument("--row", default=SHIPPED_ROW, help=f"train/ravdess: the ablation row (default {SHIPPED_ROW})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    data = Data(args.data, args.cache_dir, args.jobs)
    result: dict[str, Any]
    if args.command == "train":
        result = train(data, args.out, args.row)
        print(f"wrote {args.out}: {result['n_clips']} clips of {', '.join(result['corpora'])}, "
              f"T = {result['temperature']:.3f}, {result['n_iter']} epochs")  # fmt: skip
    elif args.command == "score":
        proba_of, labels = _bundle_proba(args.model)
        result = score_unseen(proba_of, labels, data)
        print(table(result))
    elif args.command == "ravdess":
        corpora, recipe = shipped_recipe(args.row)
        result = ravdess_folds(data, corpora, recipe, args.folds)
        print(json.dumps(result))
    else:
        from ser_engine.recipe import RecipeModel

        result = {}
        rows = _recipes()
        for key in args.rows.split(",") if args.rows else rows:
            corpora, recipe = rows[key]
            t = data.training_set(corpora, recipe)
            model = RecipeModel(recipe).fit(t["X"], t["y"], t["groups"], augment=t["augment"], corpora=t["corpora"],
                                            calibrate=False)  # fmt: skip
            unseen = score_unseen(lambda X, g, m=model: m.predict_proba(X, g), t["labels"], data)
            result[key] = {"recipe": recipe.describe(), "unseen": unseen,
                           "ravdess": ravdess_folds(data, corpora, recipe, args.folds)}  # fmt: skip
            new = [unseen[c]["new"] for c in UNSEEN]
            print(f"| {key} | {recipe.describe()} | {result[key]['ravdess']['accuracy']:.3f} | "
                  + " | ".join(f"{s['uar4']:.3f}" for s in new) + f" | {np.mean([s['uar4'] for s in new]):.3f} | "
                  + " | ".join(f"{s['uar8']:.3f}" for s in new) + f" | {np.mean([s['uar8'] for s in new]):.3f} |",
                  flush=True)  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
