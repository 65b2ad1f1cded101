"""The temporal model (issue 16): a tiny CRNN trained on real RAVDESS clips, exported to ONNX.

Needs the ``[deep]`` extra (PyTorch, onnx).  Without it these tests skip,
except under ``CI=true``, where .ci/run installs the extra and a missing
torch is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IN_CI, ROOT

if importlib.util.find_spec("torch") is None and not IN_CI:
    pytest.skip("PyTorch is not installed (pip install '.[deep]')", allow_module_level=True)

from ser_engine.audio import load_audio  # noqa: E402
from ser_engine.corpora import load_ravdess  # noqa: E402
from ser_engine.deep.frames import FrameConfig, clip_frames, log_mel_frames  # noqa: E402
from ser_engine.deep.onnx_model import CRNNPredictor, load_crnn, save_crnn  # noqa: E402
from ser_engine.deep.train import CRNNConfig, torch_proba  # noqa: E402
from ser_engine.errors import ModelIntegrityError  # noqa: E402

#: Two emotions far apart in arousal; 8 training actors, 4 held out (16 clips each: 2 x 2 x 2 x 2).
EMOTIONS = ("angry", "calm")
TRAIN_ACTORS = {f"Actor_{i:02d}" for i in range(1, 9)}
TEST_ACTORS = {"Actor_09", "Actor_10", "Actor_11", "Actor_12"}
#: Small enough for CI's minute on one core; big enough to learn angry vs calm.
TINY = CRNNConfig(channels=(32, 32), hidden=32, epochs=12, batch_size=16, lr=5e-3, crop_frames=150, seed=0)


@pytest.fixture(scope="module")
def tiny(ravdess_dir: Path) -> dict:
    """A tiny CRNN trained on 128 clips of 8 actors, with its ONNX export and the held-out clips' frames."""
    from ser_engine.deep.onnx_model import crnn_from_network
    from ser_engine.deep.train import fit_crnn

    clips = [c for c in load_ravdess(ravdess_dir, emotions=EMOTIONS) if Path(c.path).parent.name in TRAIN_ACTORS | TEST_ACTORS]
    train = [c for c in clips if Path(c.path).parent.name in TRAIN_ACTORS]
    test = [c for c in clips if Path(c.path).parent.name in TEST_ACTORS]
    frames = clip_frames([c.path for c in clips])["clean"]
    by_path = dict(zip([c.path for c in clips], frames, strict=True))
    y_train = np.array([EMOTIONS.index(c.label) for c in train])
    y_test = np.array([EMOTIONS.index(c.label) for c in test])
    F_train = [by_path[c.path] for c in train]
    F_test = [by_path[c.path] for c in test]
    net, losses = fit_crnn(F_train, y_train, len(EMOTIONS), TINY)
    model = crnn_from_network(net, EMOTIONS, FrameConfig(), TINY.crop_frames)
    return {"net": net, "losses": losses, "model": model, "F_train": F_train, "y_train": y_train,
            "F_test": F_test, "y_test": y_test, "test_paths": [c.path for c in test]}  # fmt: skip


def test_tiny_crnn_learns_and_onnx_matches_torch(tiny: dict) -> None:
    assert len(tiny["F_train"]) == 128 and len(tiny["F_test"]) == 64
    assert tiny["losses"][-1] < tiny["losses"][0] - 0.1, tiny["losses"]
    P_torch_test = torch_proba(tiny["net"], tiny["F_test"], TINY.crop_frames)
    P_onnx_test = tiny["model"].predict_proba(tiny["F_test"])
    # The ONNX export computes what torch computes.
    np.testing.assert_allclose(P_onnx_test, P_torch_test, atol=1e-4)
    train_acc = np.mean(tiny["model"].predict_proba(tiny["F_train"]).argmax(axis=1) == tiny["y_train"])
    test_acc = np.mean(P_onnx_test.argmax(axis=1) == tiny["y_test"])
    print(f"tiny CRNN: accuracy {train_acc:.3f} on its training clips, {test_acc:.3f} on 4 held-out actors")
    assert train_acc >= 0.85, train_acc  # chance 0.5
    assert test_acc >= 0.70, test_acc  # four actors it never heard


def test_saved_crnn_loads_verified_and_predicts_without_torch(tiny: dict, tmp_path: Path) -> None:
    path = tmp_path / "tiny-crnn.onnx"
    side = save_crnn(tiny["model"], path)
    meta = json.loads(side.read_text())
    assert meta["kind"] == "crnn" and meta["labels"] == list(EMOTIONS) and meta["crop_frames"] == TINY.crop_frames
    loaded = load_crnn(path)
    np.testing.assert_allclose(loaded.predict_proba(tiny["F_test"][:4]), tiny["model"].predict_proba(tiny["F_test"][:4]))

    # The predictor on a file = the model on that file's frames; and it never imports torch.
    clip = tiny["test_paths"][0]
    expected = loaded.predict_proba([log_mel_frames(load_audio(clip))])[0]
    code = (
        "import json, sys\n"
        "from ser_engine.deep.onnx_model import CRNNPredictor\n"
        f"p = CRNNPredictor.load({str(path)!r}).predict({str(clip)!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'probabilities': p.probabilities}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["torch"] is False
    np.testing.assert_allclose([answer["probabilities"][e] for e in EMOTIONS], expected, atol=1e-6)

    # One flipped byte of the ONNX file: refused before onnxruntime sees it.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        CRNNPredictor.load(path)


def test_ser_train_model_crnn_then_predict(ravdess_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ser_engine.cli import main

    out = tmp_path / "cli-crnn.onnx"
    status = main(["train", "--model", "crnn", "--corpus", str(ravdess_dir), "--emotions", "angry,calm",
                   "--max-clips-per-corpus", "24", "--augment", "none", "--epochs", "2", "--no-eval", "--quiet",
                   "--out", str(out)])  # fmt: skip
    assert status == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["metadata"]["model"] == "crnn" and meta["metadata"]["n_clips"] == 24
    assert meta["metadata"]["crnn"]["epochs"] == 2
    capsys.readouterr()
    clip = next(ravdess_dir.glob("Actor_01/03-01-05-*.flac"))
    assert main(["predict", "--model", str(out), "--json", str(clip)]) == 0
    answer = json.loads(capsys.readouterr().out.strip())
    assert answer["label"] in EMOTIONS and answer["model_version"].startswith("cli-crnn@sha256:")
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-6
    capsys.readouterr()
    assert main(["evaluate", "--protocol", "score", "--model", str(out), "--corpus", str(ravdess_dir), "--emotions",
                 "angry,calm", "--max-clips-per-corpus", "8", "--seed", "1", "--quiet", "--out-dir",
                 str(tmp_path / "score")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "score" / "report.json").read_text())
    assert report["protocol"] == "score" and report["model"]["model_version"] == answer["model_version"]
    assert [r["n_clips"] for r in report["rows"]] == [8] and report["rows"][0]["known"] is None
