"""Model registry: adoption of the shipped model, activation, rollback, refusal of altered bundles, CLI."""

from __future__ import annotations

import io
import re
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from ser_engine.bundle import DEFAULT_MODEL_PATH, load_bundle
from ser_engine.cli import main
from ser_engine.errors import ModelIntegrityError, ModelNotFoundError
from ser_engine.registry import ModelRegistry

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="shipped model missing")


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.ensure_default(DEFAULT_MODEL_PATH) == 1
    reg.import_file(DEFAULT_MODEL_PATH, source="copy")  # v2, identical bytes
    return reg


def test_adopts_default_as_version_1_with_its_metrics(registry: ModelRegistry) -> None:
    v1 = registry.get(1)
    assert registry.active_version == 1 and registry.previous_version is None
    shipped = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    assert v1.sha256 == shipped["sha256"] and list(v1.labels) == shipped["labels"]
    assert v1.metrics["macro_f1"] == shipped["metadata"]["metrics"]["speaker"]["macro_f1"]
    assert load_bundle(DEFAULT_MODEL_PATH).labels == registry.load(1).labels  # shipped file still loads


def test_activate_and_rollback_move_the_pointer(registry: ModelRegistry) -> None:
    registry.activate(2)
    assert registry.pointer()["active"] == 2 and registry.previous_version == 1
    version, bundle = registry.rollback()
    assert version == 1 and registry.active_version == 1 and bundle.labels == registry.load(1).labels
    with pytest.raises(ModelNotFoundError):
        registry.rollback()
    with pytest.raises(ModelNotFoundError):
        registry.activate(9)
    assert not list(registry.root.glob(".active.json.*"))  # no temporary files left behind


def test_altered_bundle_is_refused_and_previous_stays_active(registry: ModelRegistry) -> None:
    pointer = (registry.root / "active.json").read_bytes()
    path = registry.get(2).path
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"v2 refused: .*altered"):
        registry.activate(2)
    assert (registry.root / "active.json").read_bytes() == pointer
    # Made active behind our back, it is skipped at load in favour of the previous version.
    (registry.root / "active.json").write_text(json.dumps({"active": 2, "history": [1]}))
    version, _ = registry.load_active()
    assert version == 1


def test_cli_models_list_activate_rollback(registry: ModelRegistry) -> None:
    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["models", "--registry", str(registry.root), *args])
        return code, out.getvalue()

    code, text = run("activate", "v2")
    assert code == 0 and registry.active_version == 2
    code, text = run("list")
    assert code == 0 and re.search(r"^\* v2 ", text, re.M) and re.search(r"^< v1 ", text, re.M)
    code, _ = run("rollback")
    assert code == 0 and registry.active_version == 1
    assert run("activate", "x")[0] == 1 and run("activate", "7")[0] == 1 and registry.active_version == 1


