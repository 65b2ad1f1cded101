"""``ser explore``: a report on the corpora, to see how far they sit from each other (issue 12, "See the data").

:func:`build_report` reads corpus folders (:func:`ser_engine.corpora.load_corpora`:
RAVDESS folders and manifest folders alike) and writes to an output folder:

``index.html``
    Tables per corpus (clips, speakers, hours, median duration, loudness,
    estimated SNR, licence) and per corpus and emotion (clips, median
    duration, loudness, SNR, pitch, speaking rate), with the figures below.
``counts.png``
    Clips per emotion and corpus, and the distribution of clip durations.
``examples-<corpus>.png``
    A waveform and a spectrogram of one clip per emotion, per corpus.
``distributions.png``
    Box plots per emotion and corpus of median pitch (Hz), loudness
    (dBFS), estimated SNR (dB) and speaking rate (voicing onsets per s).
``map.png``
    The clips' feature vectors (:func:`ser_engine.features.extract_features`,
    standardised over all clips) projected on their first two principal
    components, coloured by corpus and by emotion.
``clips.csv``
    Every measured clip with its measures.

Counts and durations cover every clip (durations from the file headers);
the measures that need the audio (loudness, SNR, pitch, rate, features)
cover a random sample of at most ``max_per_corpus`` clips per corpus.

Measures: *loudness* is the active speech level (:func:`ser_engine.augment.active_power`:
mean power of the 20 ms frames within 40 dB of the loudest, after ITU-T
P.56's idea); *SNR* is that level over the noise floor, the 10th percentile
of the 20 ms frame powers (a percentile estimate: it reads high for clips
trimmed close to the speech); *pitch* is the median YIN F0 of the voiced
frames and *speaking rate* the voicing onsets per second of the active span,
both from the engine's features (``f0_semitones_p50``,
``voicing_onsets_per_s``).
"""

from __future__ import annotations

import argparse
import csv
import html
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import TARGET_SR, load_audio
from .augment import active_power
from .corpora import Clip, corpus_info, load_corpora
from .errors import AudioError, SERError

__all__ = ["ClipMeasures", "build_report", "main", "measure_clip"]


@dataclass(frozen=True)
class ClipMeasures:
    """What the report measures on one clip.

    Attributes
    ----------
    duration_s : float
        Duration in seconds.
    level_dbfs : float
        Active speech level in dBFS.
    snr_db : float
        Active speech level over the noise floor (10th percentile of 20 ms frame powers), in dB.
    pitch_hz : float
        Median F0 of the voiced frames in Hz (NaN if none is voiced).
    rate_per_s : float
        Voicing onsets per second of the active span.
    features : np.ndarray, shape (n_features,)
        The engine's feature vector (default :class:`~ser_engine.features.FeatureConfig`).
    """

    duration_s: float
    level_dbfs: float
    snr_db: float
    pitch_hz: float
    rate_per_s: float
    features: np.ndarray


def measure_clip(path: str | os.PathLike[str]) -> ClipMeasures:
    """Decode a clip and measure it (see the module's notes for each measure).

    Parameters
    ----------
    path : str or os.PathLike
        An audio file :func:`~ser_engine.audio.load_audio` decodes.

    Returns
    -------
    ClipMeasures

    Raises
    ------
    ser_engine.errors.AudioError
        If the clip cannot be decoded or is refused (silent, too short...).
    """
    from .features import FeatureConfig, extract_features

    config = FeatureConfig()
    y = load_audio(path, sr=TARGET_SR)
    x = y.astype(np.float64)
    n = TARGET_SR // 50
    frames = np.mean(x[: x.size // n * n].reshape(-1, n) ** 2, axis=1) if x.size >= n else np.array([np.mean(x**2)])
    level = active_power(x)
    # Floor at -100 dBFS, the 16-bit quantisation noise: clips padded with digital zeros would read infinite.
    floor = max(float(np.percentile(frames, 10)), 1e-10)
    features = extract_features(y=y, sr=TARGET_SR, config=config)
    names = config.feature_names()
    voiced = float(features[names.index("voiced_ratio")]) > 0.0
    semitones = float(features[names.index("f0_semitones_p50")])
    return ClipMeasures(
        duration_s=y.size / TARGET_SR,
        level_dbfs=10 * np.log10(max(level, 1e-12)),
        snr_db=10 * np.log10(max(level, 1e-12) / floor),
        pitch_hz=100.0 * 2 ** (semitones / 12) if voiced else float("nan"),  # features' semitones are re 100 Hz
        rate_per_s=float(features[names.index("voicing_onsets_per_s")]),
        features=features,
    )


def _measure_or_none(path: Path) -> ClipMeasures | str:
    """:func:`measure_clip`, or the engine's message when the clip is refused (the report goes on without it)."""
    try:
        return measure_clip(path)
    except AudioError as exc:
        return exc.user_message


def _duration(path: Path) -> float:
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (RuntimeError, sf.LibsndfileError):  # not readable by libsndfile: decode it
        try:
            return load_audio(path, sr=TARGET_SR).size / TARGET_SR
        except AudioError:
            return float("nan")  # undecodable: named on the page if sampled, else left out of the durations


def _sample(clips: Sequence[Clip], max_per_corpus: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    chosen: list[Clip] = []
    for corpus in dict.fromkeys(c.corpus for c in clips):
        own = [c for c in clips if c.corpus == corpus]
        keep = sorted(rng.choice(len(own), min(max_per_corpus, len(own)), replace=False))
        chosen += [own[i] for i in keep]
    return chosen


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def _figures(
    out: Path, clips: Sequence[Clip], durations: np.ndarray, measured: Sequence[tuple[Clip, ClipMeasures]]
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(c.corpus for c in clips))
    labels = list(dict.fromkeys(c.label for c in clips))
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(corpora)}
    figures: list[tuple[str, str]] = []

    # Counts per emotion and corpus; durations.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(corpora)
    for i, corpus in enumerate(corpora):
        counts = [sum(1 for c in clips if c.corpus == corpus and c.label == lab) for lab in labels]
        ax1.bar(np.arange(len(labels)) + i * width, counts, width, label=corpus, color=colours[corpus])
        own = durations[[c.corpus == corpus for c in clips]]
        ax2.hist(own[np.isfinite(own)], bins=40, range=(0, 10), histtype="step",
                 label=corpus, color=colours[corpus], density=True)  # fmt: skip
    ax1.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30)
    ax1.set_ylabel("clips")
    ax1.legend()
    ax2.set_xlabel("duration (s)")
    ax2.set_ylabel("density")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "counts.png", dpi=90)
    plt.close(fig)
    figures.append(("counts.png", "Clips per emotion and corpus; clip durations (all clips)"))

    # A waveform and a spectrogram per emotion, per corpus.
    for corpus in corpora:
        first = {lab: next((c for c, _ in measured if c.corpus == corpus and c.label == lab), None) for lab in labels}
        examples = [(lab, c) for lab, c in first.items() if c is not None]
        if not examples:
            continue
        fig, axes = plt.subplots(2, len(examples), figsize=(2.6 * len(examples), 4.6), squeeze=False)
        for k, (lab, clip) in enumerate(examples):
            y = load_audio(clip.path, sr=TARGET_SR)
            t = np.arange(y.size) / TARGET_SR
            axes[0, k].plot(t, y, lw=0.3, color=colours[corpus])
            axes[0, k].set_title(lab)
            axes[0, k].set_ylim(-1, 1)
            with np.errstate(divide="ignore"):  # digital silence: log10(0) draws as the darkest colour
                axes[1, k].specgram(y, NFFT=512, Fs=TARGET_SR, noverlap=384, cmap="magma", vmin=-140)
            axes[1, k].set_xlabel("s")
        axes[0, 0].set_ylabel("amplitude")
        axes[1, 0].set_ylabel("Hz")
        fig.suptitle(corpus)
        fig.tight_layout()
        name = f"examples-{corpus}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        figures.append((name, f"{corpus}: waveform and spectrogram of one clip per emotion"))

    # Distributions per emotion and corpus.
    measures = [("pitch_hz", "median pitch (Hz)"), ("level_dbfs", "loudness (dBFS)"), ("snr_db", "estimated SNR (dB)"),
                ("rate_per_s", "speaking rate (voicing onsets/s)")]  # fmt: skip
    fig, axes = plt.subplots(len(measures), 1, figsize=(13, 3.2 * len(measures)))
    for ax, (attr, title) in zip(axes, measures, strict=True):
        for i, corpus in enumerate(corpora):
            data = [[getattr(m, attr) for c, m in measured if c.corpus == corpus and c.label == lab] for lab in labels]
            data = [[v for v in d if np.isfinite(v)] for d in data]
            positions = np.arange(len(labels)) + i * width
            keep = [j for j, d in enumerate(data) if d]
            if keep:
                parts = ax.boxplot([data[j] for j in keep], positions=positions[keep], widths=width * 0.9,
                                   patch_artist=True, showfliers=False)  # fmt: skip
                for box in parts["boxes"]:
                    box.set_facecolor(colours[corpus])
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
        ax.set_ylabel(title)
    axes[0].legend([plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in corpora], corpora, ncol=len(corpora))
    fig.tight_layout()
    fig.savefig(out / "distributions.png", dpi=80)
    plt.close(fig)
    figures.append(("distributions.png", "Pitch, loudness, SNR and speaking rate per emotion and corpus (sample)"))

    # 2-D map of the feature vectors.
    if len(measured) >= 3:
        from sklearn.decomposition import PCA

        X = np.stack([m.features for _, m in measured]).astype(np.float64)
        X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-9)
        pca = PCA(n_components=2, random_state=0).fit(X)
        Z = pca.transform(X)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
        for corpus in corpora:
            mask = np.array([c.corpus == corpus for c, _ in measured])
            ax1.scatter(Z[mask, 0], Z[mask, 1], s=6, alpha=0.6, color=colours[corpus], label=corpus)
        label_colours = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
        for lab in labels:
            mask = np.array([c.label == lab for c, _ in measured])
            ax2.scatter(Z[mask, 0], Z[mask, 1], s=6, alpha=0.6, color=label_colours[lab], label=lab)
        for ax, title in ((ax1, "by corpus"), (ax2, "by emotion")):
            ax.set_title(title)
            ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%} of the variance)")
            ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
            ax.legend(markerscale=3, fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "map.png", dpi=80)
        plt.close(fig)
        figures.append(("map.png", "Feature vectors (standardised) on their first two principal components"))
    return figures


def build_report(
    roots: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    max_per_corpus: int = 200,
    emotions: Sequence[str] | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> Path:
    """Measure the corpora and write the report (see the module's notes).

    Parameters
    ----------
    roots : sequence of str or os.PathLike
        Corpus folders (RAVDESS or manifest, :func:`~ser_engine.corpora.load_corpora`).
    out_dir : str or os.PathLike
        Output folder, created if needed; files of an earlier report are overwritten.
    max_per_corpus : int, default 200
        Clips decoded and measured per corpus (a random sample); >= 1.
    emotions : sequence of str, optional
        Keep only these emotions.
    seed : int, default 0
        Seed of the sample.
    n_jobs : int, default 1
        Worker processes for the measures (joblib).

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.

    Raises
    ------
    ValueError
        If ``max_per_corpus`` or ``n_jobs`` is below 1.
    ser_engine.errors.CorpusError
        As :func:`~ser_engine.corpora.load_corpora`.

    Notes
    -----
    A sampled clip that cannot be decoded (or is refused as silent, too
    short...) is left out of the measures and named on the page.
    """
    from joblib import Parallel, delayed

    if max_per_corpus < 1 or n_jobs < 1:
        raise ValueError(f"build_report: max_per_corpus and n_jobs must be >= 1, got {max_per_corpus}, {n_jobs}")
    clips = load_corpora(list(roots), emotions=emotions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    durations = np.array([_duration(c.path) for c in clips])
    sample = _sample(clips, max_per_corpus, seed)
    results = Parallel(n_jobs=n_jobs)(delayed(_measure_or_none)(c.path) for c in sample)
    measured = [(c, m) for c, m in zip(sample, results, strict=True) if isinstance(m, ClipMeasures)]
    refused = [(c, m) for c, m in zip(sample, results, strict=True) if isinstance(m, str)]
    figures = _figures(out, clips, durations, measured)

    with open(out / "clips.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "corpus", "label", "speaker", "language", "gender", "duration_s", "level_dbfs",
                         "snr_db", "pitch_hz", "rate_per_s"])  # fmt: skip
        for c, m in measured:
            writer.writerow([c.path, c.corpus, c.label, c.speaker, c.language or "", c.gender or "",
                             f"{m.duration_s:.3f}", f"{m.level_dbfs:.2f}", f"{m.snr_db:.2f}", f"{m.pitch_hz:.1f}",
                             f"{m.rate_per_s:.3f}"])  # fmt: skip

    corpora = list(dict.fromkeys(c.corpus for c in clips))
    rows = []
    for corpus in corpora:
        mask = np.array([c.corpus == corpus for c in clips])
        ms = [m for c, m in measured if c.corpus == corpus]
        info = corpus_info(corpus)
        rows.append([corpus, str(int(mask.sum())), str(len({c.speaker for c in clips if c.corpus == corpus})),
                     _fmt(float(np.nansum(durations[mask])) / 3600, 2), _fmt(_median(list(durations[mask])), 2),
                     str(len(ms)), _fmt(_median([m.level_dbfs for m in ms])), _fmt(_median([m.snr_db for m in ms])),
                     info.licence if info else "unknown", "yes" if info and info.shareable else "no"])  # fmt: skip
    by_emotion = []
    for corpus in corpora:
        for label in dict.fromkeys(c.label for c in clips if c.corpus == corpus):
            mask = np.array([c.corpus == corpus and c.label == label for c in clips])
            ms = [m for c, m in measured if c.corpus == corpus and c.label == label]
            by_emotion.append([corpus, label, str(int(mask.sum())), _fmt(_median(list(durations[mask])), 2),
                               str(len(ms)), _fmt(_median([m.level_dbfs for m in ms])),
                               _fmt(_median([m.snr_db for m in ms])), _fmt(_median([m.pitch_hz for m in ms]), 0),
                               _fmt(_median([m.rate_per_s for m in ms]), 2)])  # fmt: skip

    def table(head: list[str], body: list[list[str]]) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        lines = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>\n" for r in body)
        return f"<table>\n<tr>{cells}</tr>\n{lines}</table>\n"

    page = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ser explore</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}</style>",
        "</head><body>\n<h1>The corpora</h1>",
        f"<p>{len(clips)} clips in {len(corpora)} corpora; measures on a sample of at most {max_per_corpus} clips per "
        f"corpus (seed {seed}). Loudness: active speech level; SNR: that level over the 10th percentile of 20 ms "
        "frame powers; pitch: median YIN F0 of voiced frames; rate: voicing onsets per second.</p>",
        "".join(
            f"<p>Not measured: {html.escape(c.corpus)} {html.escape(c.path.name)}: {html.escape(m)}</p>\n"
            for c, m in refused
        ),
        "<h2>Per corpus</h2>",
        table(["corpus", "clips", "speakers", "hours", "median s", "measured", "loudness dBFS", "SNR dB", "licence",
               "shareable"], rows),  # fmt: skip
        "<h2>Per corpus and emotion</h2>",
        table(["corpus", "emotion", "clips", "median s", "measured", "loudness dBFS", "SNR dB", "pitch Hz",
               "rate /s"], by_emotion),  # fmt: skip
    ]
    for name, caption in figures:
        src, alt = html.escape(name), html.escape(caption)
        page.append(f"<h2>{alt}</h2>\n<img src=\"{src}\" alt=\"{alt}\">")
    page.append("</body></html>\n")
    index = out / "index.html"
    index.write_text("\n".join(page), encoding="utf-8")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """``ser explore CORPUS... [--out-dir reports/explore] [--max-per-corpus 200] [--emotions ...] [--jobs N]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when an engine error (bad corpus, undecodable clip) stopped it (message on stderr).
    """
    parser = argparse.ArgumentParser(prog="ser explore", description="Report on corpora: HTML with PNG figures.")
    parser.add_argument("corpus", nargs="+", type=Path, help="corpus folders (RAVDESS or with a manifest.csv)")
    parser.add_argument("--out-dir", type=Path, default=Path("reports/explore"), help="default reports/explore")
    parser.add_argument("--max-per-corpus", type=int, default=200, help="clips measured per corpus (default 200)")
    parser.add_argument("--emotions", nargs="+", help="keep only these emotions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    try:
        index = build_report(args.corpus, args.out_dir, max_per_corpus=args.max_per_corpus, emotions=args.emotions,
                             seed=args.seed, n_jobs=args.jobs)  # fmt: skip
    except (SERError, ValueError) as exc:
        print(f"ser explore: {exc}", file=sys.stderr)
        return 1
    print(index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
