"""Labelled speech corpora: file lists with emotion, speaker and take metadata.

Only RAVDESS is read for now.  Its labels live in the file names, so the
loader never opens an audio file; it works on the original 48 kHz ``.wav``
release and on the 16 kHz ``.flac`` copy in ``../shared/data`` alike.

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

from .errors import CorpusError

__all__ = [
    "AUDIO_SUFFIXES",
    "Clip",
    "RAVDESS_EMOTIONS",
    "RavdessName",
    "label_counts",
    "load_ravdess",
    "parse_ravdess_name",
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
    """

    path: Path
    label: str
    speaker: str
    corpus: str
    intensity: str | None = None
    statement: str | None = None


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

    The folder is searched recursively for ``.wav`` and ``.flac`` files, so
    both ``root/Actor_01/...`` and the release's
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
        Sorted by path; ``Clip.speaker`` is ``"Actor_NN"``.

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
    folder = Path(root)
    if not folder.is_dir():
        raise CorpusError(f"The corpus folder {folder.name!r} does not exist or is not a folder.")
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise CorpusError(f"The corpus folder {folder.name!r} holds no .wav or .flac files.")

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
