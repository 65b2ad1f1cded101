"""Child processes start with the minimal environment: no DISCORD_TOKEN, no DATABASE_URL, and they still work.

The ffmpeg and ffprobe subprocesses are observed through wrappers (configured
as pydub's converter, as an operator would) that record their own
``/proc/<pid>/environ`` and then execute the real ffmpeg.  The analysis
workers are observed in a fresh Python process that, like the bot, holds the
secrets in its environment from the start: it runs an :class:`EmotionService`
in process mode and reads each worker's ``/proc/<pid>/environ`` and
``os.environ`` inside the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_engine.audio import load_audio
from ser_engine.environment import ALLOWED_NAMES, minimal_environment, minimal_process_context

from .conftest import ROOT

SECRETS = {
    "DISCORD_TOKEN": "discord-token-must-not-leak",
    "DATABASE_URL": "postgresql://ser:pw-must-not-leak@127.0.0.1/ser",
    # A secret under a name no deny-list would know: the allow-list keeps it out too.
    "SER_UNLISTED_API_KEY": "unlisted-key-must-not-leak",
}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/environ")


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_minimal_environment_is_an_allow_list() -> None:
    parent = {
        **SECRETS,
        "PATH": "/usr/bin:/bin", "HOME": "/home/ser", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "PYTHONPATH": "/app", "AWS_SECRET_ACCESS_KEY": "x", "SER_MODEL_HMAC_KEY": "k",
    }  # fmt: skip
    assert minimal_environment(parent) == {
        "PATH": "/usr/bin:/bin", "HOME": "/home/ser", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "PYTHONPATH": "/app",
    }  # fmt: skip
    assert not any("KEY" in name or "TOKEN" in name or "URL" in name for name in ALLOWED_NAMES)


def test_ffmpeg_and_ffprobe_run_without_secrets(ffmpeg: str, angry_clip: Path, tmp_path: Path, monkeypatch) -> None:
    from pydub import AudioSegment

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        real = str(Path(ffmpeg).with_name(name))
        wrapper = bin_dir / name
        # $$ is the pid that exec hands on to the real program: its environ is what Popen gave.
        wrapper.write_text(f'#!/bin/sh\ncp /proc/$$/environ "{dumps}/{name}-$$"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o700)
    monkeypatch.setattr(AudioSegment, "converter", str(bin_dir / "ffmpeg"))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    y = load_audio(angry_clip, decoder="ffmpeg")
    reference = sf.read(angry_clip, dtype="float32")[0]
    assert y.size == reference.size and np.corrcoef(y, reference - reference.mean())[0, 1] > 0.999

    seen = {path.name.split("-")[0] for path in dumps.iterdir()}
    assert seen == {"ffmpeg", "ffprobe"}
    for path in dumps.iterdir():
        raw = path.read_bytes()
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        assert not set(SECRETS) & {k.decode() for k in env}, path.name
        assert not any(value.encode() in raw for value in SECRETS.values()), path.name
        assert env[b"PATH"] == os.environ["PATH"].encode()


# The bot's situation: the secrets are in the process's environment from its start.
_SERVICE = """
import asyncio, json, os, sys
from pathlib import Path
from ser_engine.predict import Predictor
from ser_engine.service import EmotionService

NAMES = ("DISCORD_TOKEN", "DATABASE_URL", "SER_UNLISTED_API_KEY", "PATH")

async def main():
    async with EmotionService(Predictor.load(sys.argv[1]), workers=1, mode="process") as service:
        prediction = await service.analyse(Path(sys.argv[2]).read_bytes())
        (pid,) = service.worker_pids()
        inside = {name: service._pool.executor.submit(os.getenv, name).result() for name in NAMES}
        proc = Path(f"/proc/{pid}/environ").read_bytes().decode()
        print(json.dumps({"label": prediction.label, "labels": list(service.predictor.labels), "pid": pid,
                          "inside": inside, "proc": proc, "parent_has": {n: n in os.environ for n in NAMES}}))

asyncio.run(main())
"""


def test_worker_processes_start_without_secrets(model_path: Path, angry_note: bytes, tmp_path: Path) -> None:
    note = tmp_path / "note.ogg"
    note.write_bytes(angry_note)
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **SECRETS, "PYTHONPATH": python_path}
    proc = subprocess.run(
        [sys.executable, "-c", _SERVICE, str(model_path), str(note)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(out["parent_has"].values())  # the parent did hold them
    assert out["label"] in out["labels"]  # and the worker still analyses
    assert out["inside"]["PATH"] == os.environ["PATH"]
    for name, value in SECRETS.items():
        assert out["inside"][name] is None, name
        assert name not in out["proc"] and value not in out["proc"], name


def test_spawned_children_start_without_secrets(monkeypatch) -> None:
    """The ``spawn`` method (the service's choice off Linux, and the retrain child's option) too."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    ctx = minimal_process_context("spawn")
    with ctx.Pool(1) as pool:
        pid = pool.apply(os.getpid)
        assert pool.apply(os.getenv, ("DISCORD_TOKEN",)) is None
        assert pool.apply(os.getenv, ("DATABASE_URL",)) is None
        assert pool.apply(os.getenv, ("PATH",)) == os.environ["PATH"]
        environ = _environ_of(pid)
    assert not set(SECRETS) & set(environ) and environ["PATH"] == os.environ["PATH"]
    with pytest.raises(ValueError):
        minimal_process_context("fork")
