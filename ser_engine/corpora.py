"""Labelled speech corpora: file lists with emotion, speaker and take metadata.

RAVDESS, TESS, SAVEE, EmoDB and CREMA-D by their published file-naming
conventions, any folder described by a CSV of ``path,label,speaker``, and
the project's *manifest* corpora (a folder with a ``manifest.csv`` of
``path,label,speaker,corpus,language,gender``: nEMO, ASED, EMOVO, URDU and
emotiontts in ``../shared/data``).  :func:`load_corpora` reads several
corpus folders at once, telling a manifest folder from a RAVDESS folder by
the manifest file; :data:`CORPORA` records each known corpus' licence and
whether a model trained on it may be shared.  Folders are walked through
symbolic links.
Labels live in the file names, so the loaders never open an audio file; all
map their emotions to one vocabulary, :data:`LABELS` (the eight RAVDESS
emotions plus EmoDB's ``"bored"``), and prefix speakers of the other corpora
with the corpus name (``"tess:OAF"``) so that speakers never collide.

References
----------
Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of
Emotional Speech and Song (RAVDESS): A dynamic, multimodal set of facial and
vocal expressions in North American English. PLoS ONE 13(5): e0196391.
https://doi.org/10.1371/journal.pone.0196391 -- the naming scheme
``MM-VC-EE-II-SS-RR-AA`` and its codes are from the corpus' README on Zenodo
(https://zenodo.org/record/1188976).  License CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import CorpusError

__all__ = [
    "AUDIO_SUFFIXES",
    "CORPORA",
    "LABELS",
    "LABEL_SYNONYMS",
    "LOADERS",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "RAVDESS_EMOTIONS",
    "SPEAKER_FIXES",
    "Clip",
    "CorpusInfo",
    "RavdessName",
    "corpus_format",
    "corpus_info",
    "label_counts",
    "licence_table",
    "load_corpora",
    "load_cremad",
    "load_csv_corpus",
    "load_emodb",
    "load_manifest",
    "load_ravdess",
    "load_savee",
    "load_tess",
    "normalise_label",
    "parse_ravdess_name",
    "shareable_clips",
]

#: The eight RAVDESS emotions, in the order of their codes ``01`` ... ``08``.
RAVDESS_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)

#: File suffixes read as audio clips (case-insensitive).
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")

_MODALITIES = {"01": "audio-video", "02": "video", "03": "audio"}
_CHANNELS = {"01": "speech", "02": "song"}
_INTENSITIES = {"01": "normal", "02": "strong"}
_STATEMENTS = {"01": "kids", "02": "dogs"}  # "Kids are talking by the door", "Dogs are sitting by the door"
_NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class Clip:
    """One labelled recording of a corpus.

    Attributes
    ----------
    path : pathlib.Path
        The audio file.
    label : str
        Emotion label, e.g. ``"angry"``.
    speaker : str
        Speaker identity, unique within the corpus (RAVDESS: ``"Actor_01"`` ...
        ``"Actor_24"``); the grouping key of speaker-independent evaluation.
    corpus : str
        Corpus name, e.g. ``"ravdess"``.
    intensity : str or None
        ``"normal"`` or ``"strong"`` where the corpus says, else None.
    statement : str or None
        Which scripted sentence was spoken (RAVDESS: ``"kids"`` or ``"dogs"``),
        else None.
    language : str or None
        ISO 639-1 code of the spoken language (RAVDESS ``"en"``, manifests
        their ``language`` column), else None.
    gender : str or None
        ``"F"`` or ``"M"`` as the corpus gives it, else None.
    """

    path: Path
    label: str
    speaker: str
    corpus: str
    intensity: str | None = None
    statement: str | None = None
    language: str | None = None
    gender: str | None = None


@dataclass(frozen=True)
class RavdessName:
    """The fields of a RAVDESS file name ``MM-VC-EE-II-SS-RR-AA``.

    Attributes
    ----------
    modality : str
        ``"audio-video"`` (01), ``"video"`` (02) or ``"audio"`` (03).
    channel : str
        ``"speech"`` (01) or ``"song"`` (02).
    emotion : str
        One of :data:`RAVDESS_EMOTIONS` (codes 01-08).
    intensity : str
        ``"normal"`` (01) or ``"strong"`` (02).
    statement : str
        ``"kids"`` (01, "Kids are talking by the door") or ``"dogs"``
        (02, "Dogs are sitting by the door").
    repetition : int
        1 or 2.
    actor : int
        1-24; odd numbers are male, even numbers female.
    """

    modality: str
    channel: str
    emotion: str
    intensity: str
    statement: str
    repetition: int
    actor: int

    @property
    def speaker(self) -> str:
        """The speaker key, ``"Actor_NN"`` as the corpus' folders name it."""
        return f"Actor_{self.actor:02d}"

    @property
    def gender(self) -> str:
        """``"M"`` for odd actor numbers, ``"F"`` for even ones (the corpus' README)."""
        return "M" if self.actor % 2 else "F"


def parse_ravdess_name(name: str | os.PathLike[str]) -> RavdessName:
    """Parse a RAVDESS file name (with or without folder and suffix).

    Parameters
    ----------
    name : str or os.PathLike
        E.g. ``"03-01-05-02-01-01-01.flac"`` or a full path to it.

    Returns
    -------
    RavdessName
        The decoded fields.

    Raises
    ------
    CorpusError
        If the name does not follow the scheme or holds an unknown code.
    """
    stem = Path(name).name.split(".", 1)[0]
    match = _NAME_RE.match(stem)
    if match is None:
        raise CorpusError(f"{Path(name).name!r} is not a RAVDESS file name (MM-VC-EE-II-SS-RR-AA).")
    mm, vc, ee, ii, ss, rr, aa = match.groups()
    emotion_index = int(ee) - 1
    actor, repetition = int(aa), int(rr)
    if (
        mm not in _MODALITIES
        or vc not in _CHANNELS
        or not 0 <= emotion_index < len(RAVDESS_EMOTIONS)
        or ii not in _INTENSITIES
        or ss not in _STATEMENTS
        or repetition not in (1, 2)
        or not 1 <= actor <= 24
    ):
        raise CorpusError(f"{Path(name).name!r} holds a code outside the RAVDESS scheme.")
    return RavdessName(
        modality=_MODALITIES[mm],
        channel=_CHANNELS[vc],
        emotion=RAVDESS_EMOTIONS[emotion_index],
        intensity=_INTENSITIES[ii],
        statement=_STATEMENTS[ss],
        repetition=repetition,
        actor=actor,
    )


def _check_emotions(emotions: Iterable[str] | None) -> tuple[str, ...]:
    if emotions is None:
        return RAVDESS_EMOTIONS
    chosen = tuple(dict.fromkeys(e.strip().lower() for e in emotions))
    unknown = [e for e in chosen if e not in RAVDESS_EMOTIONS]
    if unknown:
        raise ValueError(f"unknown RAVDESS emotion(s) {unknown}; choose from {list(RAVDESS_EMOTIONS)}")
    if not chosen:
        raise ValueError("choose at least one emotion")
    return chosen


def load_ravdess(
    root: str | os.PathLike[str],
    *,
    emotions: Iterable[str] | None = None,
    include_song: bool = False,
) -> list[Clip]:
    """List the labelled audio clips of a RAVDESS folder.

    The folder is searched recursively for ``.wav`` and ``.flac`` files,
    through symbolic links (a folder of linked ``Actor_NN`` folders reads
    like the real one), so both ``root/Actor_01/...`` and the release's
    ``Audio_Speech_Actors_01-24/Actor_01/...`` layouts work.  Labels,
    intensity, statement and actor come from the file name alone.

    Parameters
    ----------
    root : str or os.PathLike
        The corpus folder.
    emotions : iterable of str, optional
        Keep only these emotions (names from :data:`RAVDESS_EMOTIONS`);
        all eight by default.
    include_song : bool, default False
        Also keep the song recordings (vocal channel ``02``); speech only by
        default.  RAVDESS' song part has no disgust and no surprised takes.

    Returns
    -------
    list of Clip
        Sorted by path; ``Clip.speaker`` is ``"Actor_NN"``, ``language``
        ``"en"``, ``gender`` from the actor number.

    Raises
    ------
    CorpusError
        If ``root`` is missing or not a folder, holds no RAVDESS audio file
        (after the filters), an audio file's name is not a RAVDESS name, a
        file lies in an ``Actor_NN`` folder of another actor, or the same
        recording appears twice (e.g. as ``.wav`` and ``.flac``).
    ValueError
        If ``emotions`` names an emotion RAVDESS does not have, or none.
    """
    chosen = set(_check_emotions(emotions))
    folder, files = _audio_files(root, "corpus")

    clips: list[Clip] = []
    seen: dict[str, Path] = {}
    for path in files:
        fields = parse_ravdess_name(path)
        stem = path.name.split(".", 1)[0]
        if stem in seen:
            raise CorpusError(
                f"The recording {stem} appears twice ({seen[stem].relative_to(folder)} and {path.relative_to(folder)})."
            )
        seen[stem] = path
        parent = path.parent.name
        if re.fullmatch(r"Actor_\d\d", parent) and parent != fields.speaker:
            raise CorpusError(f"{path.relative_to(folder)} is a take of {fields.speaker} but lies in {parent}.")
        if fields.modality == "video":
            continue
        if fields.channel == "song" and not include_song:
            continue
        if fields.emotion not in chosen:
            continue
        clips.append(
            Clip(
                path=path,
                label=fields.emotion,
                speaker=fields.speaker,
                corpus="ravdess",
                intensity=fields.intensity,
                statement=fields.statement,
                language="en",
                gender=fields.gender,
            )
        )
    if not clips:
        raise CorpusError(f"The corpus folder {folder.name!r} holds no clip of the chosen emotions.")
    return clips


def label_counts(clips: Sequence[Clip]) -> dict[str, int]:
    """Count clips per label.

    Parameters
    ----------
    clips : sequence of Clip

    Returns
    -------
    dict of str to int
        Label -> number of clips, labels in order of first appearance.
    """
    return dict(Counter(c.label for c in clips))


# ------------------------------------------------------------ other corpora
#: The shared label vocabulary: the RAVDESS emotions plus EmoDB's boredom.
LABELS: tuple[str, ...] = RAVDESS_EMOTIONS + ("bored",)

#: Label spellings of other corpora and CSV files -> :data:`LABELS`.
LABEL_SYNONYMS: dict[str, str] = {
    **{e: e for e in LABELS},
    "anger": "angry", "ang": "angry", "mad": "angry",
    "fear": "fearful", "fea": "fearful", "afraid": "fearful", "scared": "fearful",
    "happiness": "happy", "hap": "happy", "joy": "happy", "happy": "happy",
    "sadness": "sad", "sa": "sad",
    "surprise": "surprised", "su": "surprised", "ps": "surprised", "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "disgusted": "disgust", "dis": "disgust",
    "neu": "neutral", "boredom": "bored",
}  # fmt: skip


def normalise_label(label: str) -> str:
    """Map a corpus' emotion name to :data:`LABELS` (case-insensitive, see :data:`LABEL_SYNONYMS`).

    Parameters
    ----------
    label : str
        E.g. ``"Anger"``, ``"ps"``, ``"FEA"``.

    Returns
    -------
    str
        One of :data:`LABELS`.

    Raises
    ------
    CorpusError
        If the label is unknown.
    """
    key = label.strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return LABEL_SYNONYMS[key]
    except KeyError:
        raise CorpusError(f"The emotion label {label!r} is not one this engine knows ({', '.join(LABELS)}).") from None


def _walk_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, following symbolic links to folders and files.

    ``Path.rglob`` does not descend into linked folders before Python 3.13,
    so a corpus whose ``Actor_NN`` folders are links read as empty.  A link
    back to a folder above it (a cycle) is not entered.  Paths keep the
    link names (``root/Actor_01/x.flac``), not the link targets.
    """
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if any(real == (folder / above).resolve() for above in here.relative_to(folder).parents):
            dirnames[:] = []  # a cycle: this folder is one of its own ancestors
            continue
        files.extend(here / name for name in filenames)
    return files


def _audio_files(root: str | os.PathLike[str], corpus: str) -> tuple[Path, list[Path]]:
    folder = Path(root)
    if not folder.is_dir():
        raise CorpusError(f"The corpus folder {folder.name!r} does not exist or is not a folder.")
    files = sorted(
        p for p in _walk_files(folder)
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )  # fmt: skip
    if not files:
        raise CorpusError(f"The {corpus} folder {folder.name!r} holds no .wav or .flac files.")
    return folder, files


def _keep(clips: list[Clip], emotions: Iterable[str] | None, corpus: str, folder: Path) -> list[Clip]:
    if emotions is not None:
        chosen = {normalise_label(e) for e in emotions}
        clips = [c for c in clips if c.label in chosen]
    if not clips:
        raise CorpusError(f"The {corpus} folder {folder.name!r} holds no clip of the chosen emotions.")
    return sorted(clips, key=lambda c: c.path)


_TESS_RE = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z_]+)$", re.IGNORECASE)


def load_tess(root: str | os.PathLike[str], *, emotions: Iterable[str] | None = None) -> list[Clip]:
    """Clips of the Toronto Emotional Speech Set (TESS).

    Files are named ``{OAF|YAF}_{word}_{emotion}.wav`` (e.g.
    ``OAF_back_angry.wav``, ``YAF_dog_ps.wav``): two actresses, aged 64 (OAF)
    and 26 (YAF), saying "Say the word ___" with 200 target words in seven
    emotions: angry, disgust, fear, happy, neutral, ps (pleasant surprise), sad.

    Parameters
    ----------
    root : str or os.PathLike
        Folder searched recursively.
    emotions : iterable of str, optional
        Keep only these (any spelling :func:`normalise_label` knows).

    Returns
    -------
    list of Clip
        ``speaker`` ``"tess:OAF"`` or ``"tess:YAF"``; ``statement`` the word.

    Raises
    ------
    CorpusError
        If the folder is missing, holds no audio, or a name does not follow the scheme.

    References
    ----------
    Pichora-Fuller MK, Dupuis K (2020) Toronto emotional speech set (TESS),
    Borealis, https://doi.org/10.5683/SP2/E8H2MF.  License CC BY-NC-ND 4.0.
    """
    folder, files = _audio_files(root, "TESS")
    clips = []
    for path in files:
        m = _TESS_RE.match(path.stem)
        if m is None:
            raise CorpusError(f"{path.name!r} is not a TESS file name (OAF|YAF_word_emotion).")
        clips.append(Clip(path, normalise_label(m.group(3)), f"tess:{m.group(1).upper()}", "tess",
                          statement=m.group(2).lower()))  # fmt: skip
    return _keep(clips, emotions, "TESS", folder)


_SAVEE_CODES = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
_SAVEE_RE = re.compile(r"^(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d\d)$", re.IGNORECASE)


def load_savee(root: str | os.PathLike[str], *, emotions: Iterable[str] | None = None) -> list[Clip]:
    """Clips of the Surrey Audio-Visual Expressed Emotion (SAVEE) database.

    Four male speakers (DC, JE, JK, KL), files ``{code}{NN}.wav`` in a folder
    per speaker (``AudioData/DC/a01.wav``) or flattened as ``DC_a01.wav``;
    codes: a anger, d disgust, f fear, h happiness, n neutral, sa sadness,
    su surprise.

    Parameters
    ----------
    root : str or os.PathLike
    emotions : iterable of str, optional

    Returns
    -------
    list of Clip
        ``speaker`` ``"savee:DC"`` etc.

    Raises
    ------
    CorpusError
        If a name does not follow the scheme or its speaker is unknown.

    References
    ----------
    Haq S, Jackson PJB (2009) "Speaker-dependent audio-visual emotion
    recognition", Proc. AVSP, 53-58; http://kahlan.eps.surrey.ac.uk/savee/.
    """
    folder, files = _audio_files(root, "SAVEE")
    clips = []
    for path in files:
        m = _SAVEE_RE.match(path.stem)
        speaker = (m.group(1) if m and m.group(1) else path.parent.name).upper() if m else ""
        if m is None or speaker not in ("DC", "JE", "JK", "KL"):
            raise CorpusError(f"{path.name!r} is not a SAVEE file (DC|JE|JK|KL folder or prefix, code a|d|f|h|n|sa|su, NN).")
        clips.append(Clip(path, _SAVEE_CODES[m.group(2).lower()], f"savee:{speaker}", "savee"))
    return _keep(clips, emotions, "SAVEE", folder)


_EMODB_CODES = {"W": "angry", "L": "bored", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
_EMODB_SPEAKERS = {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
_EMODB_RE = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")


def load_emodb(root: str | os.PathLike[str], *, emotions: Iterable[str] | None = None) -> list[Clip]:
    """Clips of the Berlin Database of Emotional Speech (EmoDB).

    Names like ``03a01Fa.wav``: speaker ``03``-``16`` (10 actors), text code
    ``a01``-``b10``, emotion letter from the German name (W Wut/anger,
    L Langeweile/boredom, E Ekel/disgust, A Angst/fear, F Freude/happiness,
    T Trauer/sadness, N neutral), version letter.

    Parameters
    ----------
    root : str or os.PathLike
    emotions : iterable of str, optional

    Returns
    -------
    list of Clip
        ``speaker`` ``"emodb:03"`` etc.; ``statement`` the text code;
        boredom is ``"bored"``.

    Raises
    ------
    CorpusError
        If a name does not follow the scheme.

    References
    ----------
    Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005) "A
    database of German emotional speech", Proc. Interspeech, 1517-1520.
    """
    folder, files = _audio_files(root, "EmoDB")
    clips = []
    for path in files:
        m = _EMODB_RE.match(path.stem)
        if m is None or m.group(1) not in _EMODB_SPEAKERS:
            raise CorpusError(f"{path.name!r} is not an EmoDB file name (e.g. 03a01Fa).")
        clips.append(Clip(path, _EMODB_CODES[m.group(3)], f"emodb:{m.group(1)}", "emodb", statement=m.group(2)))
    return _keep(clips, emotions, "EmoDB", folder)


_CREMAD_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": None}
_CREMAD_SENTENCES = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
_CREMAD_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def load_cremad(root: str | os.PathLike[str], *, emotions: Iterable[str] | None = None) -> list[Clip]:
    """Clips of CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset).

    Names ``{actor}_{sentence}_{emotion}_{level}.wav``, e.g.
    ``1001_DFA_ANG_XX.wav``: actor 1001-1091, one of 12 sentences (IEO, TIE,
    IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI), emotion ANG, DIS, FEA,
    HAP, NEU, SAD, level LO, MD, HI or XX (unspecified).

    Parameters
    ----------
    root : str or os.PathLike
    emotions : iterable of str, optional

    Returns
    -------
    list of Clip
        ``speaker`` ``"cremad:1001"`` etc.; ``intensity`` low/medium/high or
        None; ``statement`` the sentence code.

    Raises
    ------
    CorpusError
        If a name does not follow the scheme.

    References
    ----------
    Cao H, Cooper DG, Keutmann MK, Gur RC, Nenkova A, Verma R (2014)
    "CREMA-D: Crowd-sourced emotional multimodal actors dataset", IEEE
    Trans. Affective Computing 5(4), 377-390.  License ODbL 1.0.
    """
    folder, files = _audio_files(root, "CREMA-D")
    clips = []
    for path in files:
        m = _CREMAD_RE.match(path.stem)
        if (
            m is None
            or not 1001 <= int(m.group(1)) <= 1091
            or m.group(2) not in _CREMAD_SENTENCES
            or m.group(3) not in _CREMAD_CODES
            or m.group(4) not in _CREMAD_LEVELS
        ):
            raise CorpusError(f"{path.name!r} is not a CREMA-D file name (e.g. 1001_DFA_ANG_XX).")
        clips.append(Clip(path, _CREMAD_CODES[m.group(3)], f"cremad:{m.group(1)}", "cremad",
                          intensity=_CREMAD_LEVELS[m.group(4)], statement=m.group(2)))  # fmt: skip
    return _keep(clips, emotions, "CREMA-D", folder)


def load_csv_corpus(
    csv_path: str | os.PathLike[str], *, emotions: Iterable[str] | None = None, corpus: str | None = None
) -> list[Clip]:
    """Clips listed in a CSV file with the columns ``path,label,speaker``.

    ``path`` is relative to the CSV file's folder (or absolute); ``label``
    any spelling :func:`normalise_label` knows; ``speaker`` any identifier,
    prefixed with the corpus name so that it cannot collide with another
    corpus' speakers.  Extra columns are ignored.

    Parameters
    ----------
    csv_path : str or os.PathLike
        The CSV file (UTF-8, header row required).
    emotions : iterable of str, optional
    corpus : str, optional
        Corpus name (default: the CSV file's stem).

    Returns
    -------
    list of Clip
        ``speaker`` ``"{corpus}:{speaker}"``.

    Raises
    ------
    CorpusError
        If the file is missing, lacks a column, names a missing audio file,
        an unknown label or an empty speaker.
    """
    import csv

    source = Path(csv_path)
    name = corpus or source.stem
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise CorpusError(f"The corpus list {source.name!r} cannot be read.") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"path", "label", "speaker"} - {f.strip().lower() for f in reader.fieldnames or []}
    if missing:
        raise CorpusError(f"The corpus list {source.name!r} lacks the column(s) {', '.join(sorted(missing))}.")
    clips = []
    for line, row in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        path = Path(row["path"])
        path = path if path.is_absolute() else source.parent / path
        if not path.is_file():
            raise CorpusError(f"{source.name} line {line}: the audio file {row['path']!r} does not exist.")
        if not row["speaker"]:
            raise CorpusError(f"{source.name} line {line}: no speaker.")
        clips.append(Clip(path, normalise_label(row["label"]), f"{name}:{row['speaker']}", name))
    return _keep(clips, emotions, name, source.parent)


# ------------------------------------------------------- manifest corpora
#: File name of a manifest corpus' clip list, in the corpus folder.
MANIFEST_NAME: Final[str] = "manifest.csv"

#: Columns of a manifest (``../shared/data/README.md``).
MANIFEST_COLUMNS: Final[tuple[str, ...]] = ("path", "label", "speaker", "corpus", "language", "gender")

#: ``(corpus, file stem) -> (speaker, gender)`` corrections of known errors in source file names.
#: ASED's five one-clip male ids ``ased-M09``, ``-M15``, ``-M21``, ``-M23``, ``-M25`` are each the
#: missing other repetition of a clip by the female speaker of the same number, with a female
#: pitch (median F0 266-399 Hz): gender typos, merged as ``../shared/data/README.md`` ("ased/") says.
SPEAKER_FIXES: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("ased", "s4-01-02-02-09"): ("ased-F09", "F"),
    ("ased", "f2-01-01-02-15"): ("ased-F15", "F"),
    ("ased", "f2-07-02-02-21"): ("ased-F21", "F"),
    ("ased", "s4-04-01-02-23"): ("ased-F23", "F"),
    ("ased", "f2-02-01-02-25"): ("ased-F25", "F"),
}


def load_manifest(
    root: str | os.PathLike[str], *, emotions: Iterable[str] | None = None, fix_speakers: bool = True
) -> list[Clip]:
    """Clips of a manifest corpus: a folder with a ``manifest.csv``.

    The manifest (UTF-8, header ``path,label,speaker,corpus,language,gender``,
    extra columns ignored) has one row per clip: ``path`` relative to the
    folder (or absolute, symbolic links followed), ``label`` any spelling
    :func:`normalise_label` knows, ``speaker`` an id unique across corpora
    (kept as it is, e.g. ``"nemo-EB0"``), ``language`` an ISO 639-1 code,
    ``gender`` ``F`` or ``M`` (or empty).

    Parameters
    ----------
    root : str or os.PathLike
        The corpus folder, or its manifest file itself.
    emotions : iterable of str, optional
        Keep only these (any spelling :func:`normalise_label` knows).
    fix_speakers : bool, default True
        Apply :data:`SPEAKER_FIXES` (ASED's gender typos: five one-clip ids
        merged into the female speaker they belong to), so that a
        speaker-grouped split keeps each person on one side.

    Returns
    -------
    list of Clip
        Sorted by path, with ``corpus``, ``language`` and ``gender`` from
        the manifest.

    Raises
    ------
    CorpusError
        If the folder or manifest is missing or unreadable, lacks a column,
        a row names a missing audio file, the same file twice, an unknown
        label, an empty speaker or corpus, or a gender other than F/M; or no
        clip of the chosen emotions remains.
    """
    import csv

    given = Path(root)
    source = given / MANIFEST_NAME if given.is_dir() else given
    if not source.is_file():
        raise CorpusError(f"The corpus folder {given.name!r} has no {MANIFEST_NAME}.")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise CorpusError(f"The corpus list {source.name!r} cannot be read.") from None
    reader = csv.DictReader(text.splitlines())
    missing = set(MANIFEST_COLUMNS) - {f.strip().lower() for f in reader.fieldnames or []}
    if missing:
        raise CorpusError(f"The manifest {source.name!r} lacks the column(s) {', '.join(sorted(missing))}.")
    clips: list[Clip] = []
    seen: dict[Path, int] = {}
    where = source.parent.name
    for line, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        path = Path(row["path"])
        path = path if path.is_absolute() else source.parent / path
        if not path.is_file():
            raise CorpusError(f"{where}/{source.name} line {line}: the audio file {row['path']!r} does not exist.")
        if path in seen:
            raise CorpusError(
                f"{where}/{source.name} line {line}: {row['path']!r} is listed twice (line {seen[path]})."
            )
        seen[path] = line
        if not row["speaker"] or not row["corpus"]:
            raise CorpusError(f"{where}/{source.name} line {line}: no speaker or no corpus.")
        gender = row["gender"].upper() or None
        if gender not in (None, "F", "M"):
            raise CorpusError(f"{where}/{source.name} line {line}: gender {row['gender']!r} is not F or M.")
        speaker, corpus = row["speaker"], row["corpus"].lower()
        if fix_speakers and (corpus, path.name.split(".", 1)[0]) in SPEAKER_FIXES:
            speaker, gender = SPEAKER_FIXES[(corpus, path.name.split(".", 1)[0])]
        clips.append(Clip(path, normalise_label(row["label"]), speaker, corpus,
                          language=row["language"].lower() or None, gender=gender))  # fmt: skip
    return _keep(clips, emotions, where, source.parent)


def corpus_format(root: str | os.PathLike[str]) -> str:
    """Tell a manifest corpus from a RAVDESS folder.

    Parameters
    ----------
    root : str or os.PathLike
        A corpus folder, or a ``.csv`` manifest file.

    Returns
    -------
    str
        ``"manifest"`` for a ``.csv`` file or a folder holding
        :data:`MANIFEST_NAME`, else ``"ravdess"``.

    Raises
    ------
    CorpusError
        If ``root`` is neither a folder nor a ``.csv`` file.
    """
    path = Path(root)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if not path.is_dir():
        raise CorpusError(f"The corpus folder {path.name!r} does not exist or is not a folder.")
    return "manifest" if (path / MANIFEST_NAME).is_file() else "ravdess"


def load_corpora(
    roots: Iterable[str | os.PathLike[str]],
    *,
    emotions: Iterable[str] | None = None,
    include_song: bool = False,
    fix_speakers: bool = True,
) -> list[Clip]:
    """Clips of several corpus folders, each read by the loader its layout needs.

    A folder with a ``manifest.csv`` (or the file itself) is read by
    :func:`load_manifest`, any other folder by :func:`load_ravdess`
    (:func:`corpus_format`).  A corpus without one of the chosen emotions
    simply contributes no clip of it.

    Parameters
    ----------
    roots : iterable of str or os.PathLike
        Corpus folders (or manifest files), e.g. ``../shared/data/ravdess-16k``
        and ``../shared/data/nemo``.
    emotions : iterable of str, optional
        Keep only these; every emotion by default.  Names outside RAVDESS'
        eight are refused when a RAVDESS folder is among ``roots``.
    include_song : bool, default False
        Passed to :func:`load_ravdess`.
    fix_speakers : bool, default True
        Passed to :func:`load_manifest`.

    Returns
    -------
    list of Clip
        Corpus by corpus in the order of ``roots``, each sorted by path.

    Raises
    ------
    CorpusError
        If no folder is given, the same folder or audio file comes twice, a
        speaker id occurs in two corpora, a corpus holds none of the chosen
        emotions, or any error of the loaders.
    ValueError
        As :func:`load_ravdess` for emotions RAVDESS does not know.
    """
    chosen = None if emotions is None else list(emotions)
    clips: list[Clip] = []
    folders: dict[Path, str] = {}
    speakers: dict[str, str] = {}
    for root in roots:
        path = Path(root)
        real = path.resolve()
        if real in folders:
            raise CorpusError(f"The corpus {path.name!r} is given twice.")
        folders[real] = path.name
        if corpus_format(path) == "manifest":
            found = load_manifest(path, emotions=chosen, fix_speakers=fix_speakers)
        else:
            found = load_ravdess(path, emotions=chosen, include_song=include_song)
        for clip in found:
            if speakers.setdefault(clip.speaker, clip.corpus) != clip.corpus:
                raise CorpusError(
                    f"The speaker {clip.speaker!r} occurs in both {speakers[clip.speaker]} and {clip.corpus}."
                )
        clips.extend(found)
    if not folders:
        raise CorpusError("No corpus folder was given.")
    by_file: dict[Path, Clip] = {}
    for clip in clips:
        other = by_file.setdefault(clip.path.resolve(), clip)
        if other is not clip:
            raise CorpusError(
                f"The audio file {clip.path.name!r} belongs to two corpora ({other.corpus}, {clip.corpus})."
            )
    return clips


# ----------------------------------------------------------------- licences
@dataclass(frozen=True)
class CorpusInfo:
    """What a corpus may be used for, and how to score it.

    Attributes
    ----------
    name : str
        ``Clip.corpus`` of its clips.
    title : str
        The corpus' full name and language.
    licence : str
        Its terms, as its source states them.
    shareable : bool
        Whether a model trained on it may be shipped to others (under the
        licence's conditions, e.g. non-commercial, share-alike).  A shipped
        model trains only on shareable corpora; the others serve for
        measurement and for a user's own local model.
    own_speaker_stats : bool
        Whether scoring with a speaker's own feature statistics measures
        anything: not where speakers are tied to one emotion (URDU), because
        per-speaker normalisation then erases the emotion.
    source : str
        Where the data comes from and how to cite it.
    """

    name: str
    title: str
    licence: str
    shareable: bool
    own_speaker_stats: bool
    source: str


#: Corpus name -> :class:`CorpusInfo`, from ``../shared/data/README.md`` and each source's licence file.
CORPORA: Final[dict[str, CorpusInfo]] = {
    info.name: info
    for info in (
        CorpusInfo("ravdess", "RAVDESS speech, English (North American)", "CC BY-NC-SA 4.0", True, True,
                   "Livingstone & Russo (2018) PLoS ONE 13(5): e0196391; zenodo.org/record/1188976"),
        CorpusInfo("nemo", "nEMO, Polish", "CC BY-NC-SA 4.0", True, True,
                   "Christop (2024) LREC-COLING 2024, 12111-12116; amu-cai/nEMO"),
        CorpusInfo("emotiontts", "emotiontts open DB (emotional part), Korean",
                   "CC BY-NC-SA 4.0 (README: research use, not commercial)", True, True,
                   "emotiontts/emotiontts_open_db (SELVAS AI)"),
        CorpusInfo("ased", "ASED v1, Amharic", "none stated", False, True,
                   "Retta et al. (2023) ACM TALLIP, doi:10.1145/3529759; wgwangang/ASED_V1"),
        CorpusInfo("emovo", "EMOVO, Italian",
                   "not stated (the redistributing repository is Apache-2.0, not the corpus)", False, True,
                   "Costantini et al. (2014) LREC 2014; via fp1acm8/SER"),
        CorpusInfo("urdu", "URDU, Urdu (TV talk shows)", "research use only (README)", False, False,
                   "Latif et al. (2018) arXiv:1812.10411; siddiquelatif/URDU-Dataset"),
    )
}  # fmt: skip


def corpus_info(name: str) -> CorpusInfo | None:
    """The :class:`CorpusInfo` of a corpus name (case-insensitive), None if unknown.

    Parameters
    ----------
    name : str
        E.g. ``"nemo"``.

    Returns
    -------
    CorpusInfo or None
    """
    return CORPORA.get(name.strip().lower())


def shareable_clips(clips: Sequence[Clip]) -> list[Clip]:
    """The clips a shipped model may train on: those of corpora whose licence allows sharing it.

    Unknown corpora count as not shareable: nothing ships whose terms are not recorded in :data:`CORPORA`.

    Parameters
    ----------
    clips : sequence of Clip

    Returns
    -------
    list of Clip
        In the input order.
    """
    return [c for c in clips if (info := corpus_info(c.corpus)) is not None and info.shareable]


def licence_table(clips: Sequence[Clip]) -> list[dict[str, object]]:
    """One row per corpus of ``clips`` for a model card: licence, shareability and counts.

    Parameters
    ----------
    clips : sequence of Clip

    Returns
    -------
    list of dict
        In order of first appearance, each with ``corpus``, ``title``,
        ``licence`` (``"unknown"`` for a corpus not in :data:`CORPORA`),
        ``shareable``, ``clips``, ``speakers`` and ``labels`` (label ->
        clip count).
    """
    rows: dict[str, dict[str, object]] = {}
    for name in dict.fromkeys(c.corpus for c in clips):
        info = corpus_info(name)
        own = [c for c in clips if c.corpus == name]
        rows[name] = {
            "corpus": name,
            "title": info.title if info else name,
            "licence": info.licence if info else "unknown",
            "shareable": bool(info and info.shareable),
            "clips": len(own),
            "speakers": len({c.speaker for c in own}),
            "labels": label_counts(own),
        }
    return list(rows.values())


#: ``--format`` name -> loader(root, emotions=...).
LOADERS = {
    "ravdess": load_ravdess,
    "tess": load_tess,
    "savee": load_savee,
    "emodb": load_emodb,
    "cremad": load_cremad,
    "csv": load_csv_corpus,
    "manifest": load_manifest,
}
