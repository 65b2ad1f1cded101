"""Leave-one-corpus-out: the MLP, the CRNN and their average on the same clips and folds (issue 16).

``ser evaluate --protocol loco`` scores one model; deciding whether the
CRNN should ship *averaged with* the MLP needs both models' probabilities
for the same held-out clips.  This script trains, for each held-out
corpus, the recipe's MLP (:class:`ser_engine.recipe.RecipeModel`, exactly as
``ser evaluate --protocol loco``) and the CRNN
(:func:`ser_engine.deep.evaluate.fit_crnn_model`, as ``ser evaluate
--model crnn --protocol loco``), and scores the MLP (new speakers: training
statistics), the CRNN, and the mean of their probabilities, with the same
scoring functions.

Usage::

    python -m benchmarks.crnn_loco --max-clips-per-corpus 200 [--epochs 30] [--cache-dir .cache] [--out FILE]

Corpora: ravdess-16k, nemo, ased, emovo, urdu and emotiontts of ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CORPORA = ("ravdess-16k", "nemo", "ased", "emovo", "urdu", "emotiontts")


def main(argv: list[str] | None = None) -> int:
    """Run the three-way comparison and print the mean rows.

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crnn_loco", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--max-clips-per-corpus", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=None, help="CRNN epochs (default CRNNConfig's)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--out", type=Path, default=Path("reports/crnn_loco.json"))
    args = parser.parse_args(argv)

    from ser_engine.corpora import load_corpora
    from ser_engine.deep.commands import load_frames
    from ser_engine.deep.evaluate import fit_crnn_model
    from ser_engine.deep.frames import FrameConfig
    from ser_engine.deep.train import CRNNConfig
    from ser_engine.evaluation import CrossCorpusReport, _corpus_result, _full_proba, stratified_subset
    from ser_engine.recipe import Recipe, RecipeModel
    from ser_engine.training import encode_labels, featurize_conditions, label_order

    recipe = Recipe()
    config = CRNNConfig(**({"epochs": args.epochs} if args.epochs else {}))
    clips = stratified_subset(load_corpora([args.data / c for c in CORPORA]), args.max_clips_per_corpus, seed=0)
    labels = label_order(clips)
    y = encode_labels(clips, labels)
    groups = np.array([c.speaker for c in clips])
    corpora = np.array([c.corpus for c in clips])
    conditions = ["clean", *recipe.augment]
    X = featurize_conditions(clips, conditions, config=recipe.features, cache_dir=args.cache_dir / "features")
    F = load_frames(clips, conditions, FrameConfig(), cache_dir=args.cache_dir / "frames")
    probas: dict[str, dict[str, np.ndarray]] = {"mlp": {}, "crnn": {}, "average": {}}
    for name in dict.fromkeys(corpora.tolist()):
        tr, te = np.flatnonzero(corpora != name), np.flatnonzero(corpora == name)
        mlp = RecipeModel(recipe).fit(X["clean"][tr], y[tr], groups[tr], augment={c: X[c][tr] for c in recipe.augment})
        P_mlp = _full_proba(mlp.predict_proba(X["clean"][te]), mlp.classes_, len(labels))
        crnn, _ = fit_crnn_model([F["clean"][i] for i in tr], y[tr], labels, config, FrameConfig(),
                                 augment={c: [F[c][i] for i in tr] for c in recipe.augment})  # fmt: skip
        P_crnn = crnn.predict_proba([F["clean"][i] for i in te])
        probas["mlp"][name], probas["crnn"][name] = P_mlp, P_crnn
        probas["average"][name] = (P_mlp + P_crnn) / 2
        print(f"{name}: done", flush=True)
    out = {}
    for model, by_corpus in probas.items():
        rows = [_corpus_result(name, y[corpora == name], groups[corpora == name], labels, {"new": P}, {},
                               recipe.unsure_below, n_train=int(np.sum(corpora != name)))
                for name, P in by_corpus.items()]  # fmt: skip
        report = CrossCorpusReport(protocol="loco", description=f"{model}, new speakers", labels=list(labels),
                                   rows=rows, unsure_below=recipe.unsure_below,
                                   max_clips_per_corpus=args.max_clips_per_corpus)  # fmt: skip
        out[model] = report.to_dict()
        print(f"\n## {model}\n{report.table()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
