"""``ser listen`` (issue 16): a file through the streaming path, and no microphone in one line with exit 2."""

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
from ser_engine.listen import RollingAnalyser, file_chunks

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


def _ser(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ser_engine", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)  # fmt: skip


def test_listen_input_json_ends_on_the_clips_emotion(angry_clip: Path, predictor, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    y = load_audio(angry_clip)
    sf.write(clip, y, SR)
    proc = _ser("listen", "--input", str(clip), "--json", "--speed", "20")
    assert proc.returncode == 0, proc.stderr
    updates = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(updates) >= y.size / SR / 0.5 - 1  # one at least every 0.5 s of audio
    times = [u["t_s"] for u in updates]
    assert times == sorted(times) and times[-1] == pytest.approx(y.size / SR, abs=0.01)
    assert all(u["window_s"] <= 3.0 + 1e-6 for u in updates)
    labelled = [u for u in updates if u["label"] is not None]
    assert labelled and not updates[0]["speech"]  # RAVDESS clips open with silence
    last = updates[-1]
    assert last["label"] == "angry"  # the clip's emotion (Actor 01, angry, strong)
    # ... and the engine's answer for the same last 3 s.
    expected = predictor.predict_signal(y[-3 * SR :])
    assert last["label"] == expected.label and last["confidence"] == pytest.approx(expected.confidence, abs=1e-3)
    assert sum(last["probabilities"].values()) == pytest.approx(1.0)


def test_listen_text_lines(angry_clip: Path) -> None:
    proc = _ser("listen", "--input", str(angry_clip), "--speed", "50")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "(no speech)" in lines[0] and "angry" in lines[-1]


def test_listen_without_microphone_says_so_in_one_line_and_exits_2() -> None:
    """No PortAudio library here (or no input device): one line on stderr, exit status 2, nothing on stdout."""
    for args in (("listen",), ("listen", "--device", "999")):
        proc = _ser(*args, timeout=120)
        assert proc.returncode == 2, proc
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert any(word in lines[0] for word in ("PortAudio", "microphone", "sounddevice"))


def test_speech_onset_is_answered_between_steps(angry_clip: Path, predictor) -> None:
    """The first label comes at the first 0.1 s check after the detector hears speech, not at the next 0.5 s step."""
    from ser_engine.vad import default_detector

    y = np.concatenate([np.zeros(int(1.23 * SR), np.float32) + 1e-4, load_audio(angry_clip)])
    analyser = RollingAnalyser(predictor)
    updates = [u for chunk in file_chunks(y, speed=float("inf")) for u in analyser.push(chunk)]
    first = next(u for u in updates if u.label is not None)
    onset = default_detector().speech_segments(y)[0][0]
    assert onset < first.t_s <= onset + 0.6
    assert all(u.window_s <= 3.0 + 1e-6 for u in updates)
