"""``ser explore``: the report on a tiny subset of real clips, and the measures on signals of known level and SNR."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from ser_engine.explore import main, measure_clip
from tests.conftest import RAVDESS_DIR, _require

EMOVO = RAVDESS_DIR.parent / "emovo"


@pytest.fixture()
def tiny(tmp_path: Path, fixture_clips: list[Path]) -> list[Path]:
    """A RAVDESS folder of the four fixture clips, a manifest folder of six EMOVO clips (2 actors, 3 emotions)."""
    _require((EMOVO / "manifest.csv").is_file(), f"EMOVO not found at {EMOVO}")
    ravdess = tmp_path / "ravdess"
    for clip in fixture_clips:
        actor = ravdess / f"Actor_{clip.stem[-2:]}"
        actor.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, actor / clip.name)
    emovo = tmp_path / "emovo"
    emovo.mkdir()
    rows = ["path,label,speaker,corpus,language,gender"]
    for code, label in (("rab", "angry"), ("tri", "sad"), ("neu", "neutral")):
        for actor, gender in (("f1", "F"), ("m1", "M")):
            rows.append(f"{EMOVO}/{code}-{actor}-b1.ogg,{label},emovo-{actor},emovo,it,{gender}")
    (emovo / "manifest.csv").write_text("\n".join(rows) + "\n")
    return [ravdess, emovo]


def test_report_on_a_tiny_subset(tiny: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main([*map(str, tiny), "--out-dir", str(out), "--max-per-corpus", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    page = (out / "index.html").read_text()
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]
    per_corpus = {r[0]: r for r in cells if len(r) == 10}
    assert per_corpus["ravdess"][1:3] == ["4", "4"] and per_corpus["emovo"][1:3] == ["6", "2"]
    assert per_corpus["ravdess"][5] == "4" and per_corpus["emovo"][5] == "4"  # measured: the sample cap
    assert per_corpus["ravdess"][-1] == "yes" and per_corpus["emovo"][-1] == "no"
    assert {(r[0], r[1]) for r in cells if len(r) == 9} == {
        ("ravdess", e) for e in ("neutral", "happy", "sad", "angry")
    } | {("emovo", e) for e in ("angry", "sad", "neutral")}
    # Every figure the page shows exists as a real PNG: counts, one example sheet per corpus, distributions, map.
    images = re.findall(r'<img src="([^"]+)"', page)
    assert set(images) == {"counts.png", "examples-ravdess.png", "examples-emovo.png", "distributions.png", "map.png"}
    for name in images:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
    with open(out / "clips.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    ravdess = {r["label"]: r for r in rows if r["corpus"] == "ravdess"}
    # The actors' strong angry take is far louder than the neutral one (-2 vs -28 dBFS peaks); studio SNR is high.
    assert float(ravdess["angry"]["level_dbfs"]) > float(ravdess["neutral"]["level_dbfs"]) + 10
    for r in rows:
        assert -60 < float(r["level_dbfs"]) < 0 and float(r["snr_db"]) > 10
        assert 60 < float(r["pitch_hz"]) < 500 and float(r["rate_per_s"]) > 0
        assert 1.0 < float(r["duration_s"]) < 6.0


def test_measures_of_a_known_signal(tmp_path: Path) -> None:
    # 1 s of noise at -70 dBFS, then 2 s of a 200 Hz tone at -23 dBFS (RMS) over the same noise: noise frames
    # are more than 40 dB down, so not in the active level.
    sr = 16000
    rng = np.random.default_rng(0)
    noise = 10 ** (-70 / 20) * rng.standard_normal(3 * sr)
    tone = np.zeros(3 * sr)
    tone[sr:] = 10 ** (-23 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 200 * np.arange(2 * sr) / sr)
    path = tmp_path / "known.wav"
    sf.write(path, (tone + noise).astype(np.float32), sr, subtype="FLOAT")
    m = measure_clip(path)
    assert m.duration_s == pytest.approx(3.0)
    assert m.level_dbfs == pytest.approx(-23.0, abs=0.2)
    assert m.snr_db == pytest.approx(47.0, abs=1.0)
    assert m.pitch_hz == pytest.approx(200.0, rel=0.03)


def test_a_broken_clip_is_named_and_left_out(tiny: list[Path], tmp_path: Path) -> None:
    broken = tiny[0] / "Actor_04" / "03-01-02-01-01-01-04.flac"
    broken.write_bytes(b"not audio at all")
    out = tmp_path / "report"
    assert main([str(tiny[0]), "--out-dir", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "Not measured: ravdess 03-01-02-01-01-01-04.flac" in page
    with open(out / "clips.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_bad_corpus_gets_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope"), "--out-dir", str(tmp_path / "r")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
