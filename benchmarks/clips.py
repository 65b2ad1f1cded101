"""Test recordings for the benchmark, made with ffmpeg from real RAVDESS speech.

Every recording is a Discord-style voice note: Ogg/Opus, 48 kHz, mono,
libopus at 32 kbit/s (what ``tests/conftest.py`` calls a voice note).  A
recording of ``d`` seconds is the concatenation of consecutive RAVDESS clips
of one actor, cut to exactly ``d`` seconds, so it is speech (with RAVDESS's
short pauses) from start to end, never padded silence.

The RAVDESS clips are 16 kHz mono FLAC, so the notes carry at most 8 kHz of
audio bandwidth; that does not change decoding or feature cost, which depends
on the sample rate and length only.

Data: Livingstone & Russo, "The Ryerson Audio-Visual Database of Emotional
Speech and Song (RAVDESS)", PLoS ONE 13(5), 2018 (CC BY-NC-SA 4.0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["RAVDESS_DIR", "NOTE_ACTOR", "ffmpeg_exe", "make_note", "ravdess_clips", "duration_s"]

ROOT = Path(__file__).resolve().parents[1]
RAVDESS_DIR = Path(os.environ.get("SER_RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess-16k"))
"""The 1440 RAVDESS speech clips (``../shared/data/ravdess-16k`` from the repository, or ``SER_RAVDESS_DIR``)."""

NOTE_ACTOR = "Actor_01"
"""Actor whose clips make up the test notes."""

_FIRST_CLIP = "03-01-05-02-01-01-01.flac"  # Actor 01, angry, strong: also tests/data's fixture


def ffmpeg_exe() -> str:
    """Path of ffmpeg.

    Raises
    ------
    RuntimeError
        If ffmpeg is not on ``PATH``.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    return exe


def ravdess_clips(root: Path = RAVDESS_DIR) -> list[Path]:
    """All RAVDESS speech clips under ``root``, sorted by path.

    Parameters
    ----------
    root : Path
        Folder with ``Actor_XX/*.flac`` (or ``.wav``).

    Returns
    -------
    list of Path
        Sorted; 1440 for the full speech set.

    Raises
    ------
    FileNotFoundError
        If ``root`` holds no clip.
    """
    clips = sorted(p for p in root.glob("Actor_*/*") if p.suffix.lower() in (".flac", ".wav"))
    clips = [p for p in clips if p.name.split("-")[1:2] == ["01"]]  # vocal channel 01: speech
    if not clips:
        raise FileNotFoundError(f"no RAVDESS clips under {root} (set SER_RAVDESS_DIR)")
    return clips


def _note_sources(root: Path) -> list[Path]:
    """Clips of :data:`NOTE_ACTOR`, the angry fixture clip first."""
    clips = sorted((root / NOTE_ACTOR).glob("*.flac")) or sorted((root / NOTE_ACTOR).glob("*.wav"))
    if not clips:
        raise FileNotFoundError(f"no clips in {root / NOTE_ACTOR}")
    first = [c for c in clips if c.name == _FIRST_CLIP]
    return first + [c for c in clips if c.name != _FIRST_CLIP]


def duration_s(path: Path) -> float:
    """Duration of an audio file in seconds, from ffprobe's container header."""
    ffprobe = str(Path(ffmpeg_exe()).with_name("ffprobe"))
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return float(out.stdout.strip())


def make_note(seconds: float, out_dir: Path, *, root: Path = RAVDESS_DIR, bitrate: str = "32k") -> Path:
    """Make (or reuse) a voice note of exactly ``seconds`` seconds of RAVDESS speech.

    Parameters
    ----------
    seconds : float
        Duration in seconds (> 0).
    out_dir : Path
        Where to write ``note-<seconds>s.ogg``; an existing file is reused.
    root : Path
        RAVDESS folder.
    bitrate : str
        libopus bit rate (ffmpeg syntax).

    Returns
    -------
    Path
        Ogg/Opus, 48 kHz, mono.

    Raises
    ------
    FileNotFoundError
        If the actor's clips are missing.
    subprocess.CalledProcessError
        If ffmpeg fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"note-{seconds:g}s-{bitrate}.ogg"
    if out.is_file() and out.stat().st_size > 0:
        return out
    sources = _note_sources(root)
    # Each RAVDESS clip lasts 3-5 s; take enough of them to cover the length.
    n = min(len(sources), max(1, int(seconds // 2.5) + 1))
    inputs: list[str] = []
    for clip in sources[:n]:
        inputs += ["-i", str(clip)]
    graph = "".join(f"[{i}:a]" for i in range(n)) + f"concat=n={n}:v=0:a=1,atrim=0:{seconds:g}[a]"
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".ogg", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[a]",
             "-c:a", "libopus", "-b:a", bitrate, "-ar", "48000", "-ac", "1", str(tmp_path)],
            check=True, timeout=120,
        )  # fmt: skip
        os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)
    return out
