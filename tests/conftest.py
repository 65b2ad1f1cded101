"""Shared pytest fixtures: the RAVDESS corpus, fixture clips, ffmpeg encoders."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data"
RAVDESS_DIR = Path(os.environ.get("SER_RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess-16k"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _require(condition: bool, reason: str) -> None:
    """Fail under CI (the data must be there), skip with a reason elsewhere."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required data or tool is missing)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """The whole RAVDESS speech set (1440 FLAC clips), from ``../shared``."""
    _require(
        RAVDESS_DIR.is_dir() and any(RAVDESS_DIR.glob("Actor_*/*.flac")),
        f"RAVDESS corpus not found at {RAVDESS_DIR} (set SER_RAVDESS_DIR)",
    )
    return RAVDESS_DIR


@pytest.fixture(scope="session")
def fixture_clips() -> list[Path]:
    """Four real RAVDESS clips copied into ``tests/data`` (16 kHz mono FLAC)."""
    clips = sorted(FIXTURES.glob("*.flac"))
    assert clips, "tests/data must hold the fixture FLAC clips"
    return clips


@pytest.fixture(scope="session")
def angry_clip() -> Path:
    """Actor 01, angry, strong intensity: ``03-01-05-02-01-01-01.flac``."""
    return FIXTURES / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of the ffmpeg executable."""
    exe = shutil.which("ffmpeg")
    _require(exe is not None, "ffmpeg is not installed")
    return exe  # type: ignore[return-value]


def encode(ffmpeg_exe: str, src: Path, dst: Path, *args: str) -> Path:
    """Encode ``src`` to ``dst`` with ffmpeg; extra ``args`` go before the output."""
    subprocess.run(
        [ffmpeg_exe, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
        check=True,
        timeout=60,
    )
    return dst


def voice_note(ffmpeg_exe: str, src: Path, dst: Path, bitrate: str = "32k") -> Path:
    """Make a Discord-style voice note: Ogg/Opus, 48 kHz, mono."""
    return encode(ffmpeg_exe, src, dst, "-c:a", "libopus", "-b:a", bitrate, "-ar", "48000", "-ac", "1")


@pytest.fixture(scope="session")
def voice_note_factory(ffmpeg, tmp_path_factory):
    """Return ``make(src) -> Path`` that encodes a clip as a Discord voice note."""
    out = tmp_path_factory.mktemp("voice_notes")

    def make(src: Path, bitrate: str = "32k") -> Path:
        return voice_note(ffmpeg, src, out / (src.stem + f"-{bitrate}.ogg"), bitrate)

    return make


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The model bundle the bot is configured with: ``SER_MODEL_PATH`` or the shipped default."""
    from ser_engine.predict import DEFAULT_MODEL_PATH

    path = Path(os.environ.get("SER_MODEL_PATH") or DEFAULT_MODEL_PATH)
    path = path if path.is_absolute() else ROOT / path
    _require(path.is_file(), f"model bundle {path} not found (train it or set SER_MODEL_PATH)")
    return path


@pytest.fixture(scope="session")
def predictor(model_path: Path):
    """The engine's predictor on that model, to compute the answers the bot must give."""
    from ser_engine.predict import Predictor

    return Predictor.load(model_path)


@pytest.fixture(scope="session")
def angry_note(voice_note_factory, angry_clip: Path) -> bytes:
    """Actor 01 angry (strong) as a Discord voice note: Ogg/Opus 48 kHz mono."""
    return voice_note_factory(angry_clip).read_bytes()
