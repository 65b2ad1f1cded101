"""Model registry: adoption of the shipped model, activation, rollback, refusal of altered bundles, CLI."""

from __future__ import annotations

import io
import re
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from ser_engine.bundle import DEFAULT_MODEL_PATH, HMAC_KEY_ENV, load_bundle, sidecar_path
from ser_engine.cli import main
from ser_engine.errors import ModelError, ModelIntegrityError, ModelNotFoundError
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




# --------------------------------------------------------------- concurrency
VERSIONS = (1, 2, 3)


def _churn(root: str, seed: int, n_ops: int, barrier: object) -> tuple[int, list[str]]:
    """Worker process: ``n_ops`` random activations and rollbacks on one registry.

    Returns the number of pointer writes it made and every problem it saw when
    reading ``active.json`` between operations (unparseable, unknown version).
    """
    import random

    rng = random.Random(seed)
    reg = ModelRegistry(root)
    writes, problems = 0, []
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(n_ops):
        if rng.random() < 0.6:
            reg.activate(rng.choice(VERSIONS))
            writes += 1
        else:
            try:
                reg.rollback()
                writes += 1
            except ModelNotFoundError:  # empty history: nothing written
                pass
        try:
            seen = json.loads((Path(root) / "active.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"unparseable: {exc}")
            continue
        if seen["active"] not in VERSIONS or any(v not in VERSIONS for v in seen["history"]):
            problems.append(f"unknown version in {seen}")
    return writes, problems


def _pointer_is_consistent(registry: ModelRegistry) -> None:
    ptr = json.loads((registry.root / "active.json").read_text(encoding="utf-8"))
    assert set(ptr) == {"active", "history", "revision", "updated_at"}
    chain = [*ptr["history"], ptr["active"]]
    assert all(v in registry.version_numbers() for v in chain)
    # Activation pushes only a different version and rollback pops the top, so
    # neighbours of the history + active chain always differ when writes are serialised.
    assert all(a != b for a, b in zip(chain, chain[1:])), chain
    registry.load_active()


def test_concurrent_activate_and_rollback_from_processes_lose_no_write(registry: ModelRegistry) -> None:
    import multiprocessing

    registry.import_file(DEFAULT_MODEL_PATH, source="copy")  # v3
    before = registry.pointer()["revision"]
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the files
    n_procs, n_ops = 4, 25
    barrier = ctx.Manager().Barrier(n_procs)
    with ctx.Pool(n_procs) as pool:
        results = pool.starmap(_churn, [(str(registry.root), seed, n_ops, barrier) for seed in range(n_procs)])
    writes = sum(w for w, _ in results)
    assert [p for _, problems in results for p in problems] == []
    assert writes >= n_procs * n_ops * 0.6 * 0.5  # most operations did write
    # Every read-modify-write counted once: no update was lost to a concurrent one.
    assert registry.pointer()["revision"] == before + writes
    _pointer_is_consistent(registry)
    assert not list(registry.root.glob(".active.json.*"))  # no temporary files left behind


def _adopt(root: str, barrier: object) -> int:
    barrier.wait()  # type: ignore[attr-defined]
    return ModelRegistry(root).ensure_default(DEFAULT_MODEL_PATH)


def test_concurrent_start_up_adopts_the_default_once(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(3)
    with ctx.Pool(3) as pool:
        active = pool.starmap(_adopt, [(str(tmp_path / "reg"), barrier)] * 3)
    registry = ModelRegistry(tmp_path / "reg")
    assert active == [1, 1, 1] and registry.version_numbers() == [1]
    assert registry.pointer()["revision"] == 1
    assert not list(registry.versions_dir.glob("*.reserved"))


def _hold_lock(root: str, held: object, release: object) -> None:
    reg = ModelRegistry(root)
    with reg._locked():
        held.set()  # type: ignore[attr-defined]
        release.wait(30)  # type: ignore[attr-defined]


def test_a_held_lock_makes_writers_wait_and_a_dead_holder_leaves_none(registry: ModelRegistry) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(registry.root), held, release))
    holder.start()
    try:
        assert held.wait(60)
        pointer = (registry.root / "active.json").read_bytes()
        impatient = ModelRegistry(registry.root, lock_timeout_s=0.3)
        with pytest.raises(ModelError, match="busy") as info:
            impatient.activate(2)
        assert str(registry.root) not in info.value.user_message
        with pytest.raises(ModelError, match="busy"):
            impatient.rollback()
        assert (registry.root / "active.json").read_bytes() == pointer  # nothing changed
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it
        holder.join()
    ModelRegistry(registry.root, lock_timeout_s=5).activate(2)
    assert registry.active_version == 2


# ------------------------------------------------------------ ensure_default
def _drop_pointer(registry: ModelRegistry) -> None:
    (registry.root / "active.json").unlink()


def test_ensure_default_falls_back_to_the_newest_promoted_version(registry: ModelRegistry) -> None:
    registry.annotate(2, promoted=True)
    registry.import_file(DEFAULT_MODEL_PATH, source="retrain")  # v3 ...
    registry.annotate(3, promoted=False)  # ... refused by the quality gate
    registry.activate(3)  # an operator tried it
    _drop_pointer(registry)
    assert registry.get(3).promoted is False and registry.get(2).promoted and registry.get(1).promoted
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 2
    assert registry.pointer()["active"] == 2 and registry.version_numbers() == [1, 2, 3]  # nothing adopted
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 2  # a valid pointer is kept as it is


def test_ensure_default_adopts_the_default_when_every_version_was_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.import_file(DEFAULT_MODEL_PATH, source="retrain")
    registry.annotate(1, promoted=False)
    assert registry.ensure_default(DEFAULT_MODEL_PATH) == 2
    assert registry.get(2).source == f"adopted {DEFAULT_MODEL_PATH.name}" and registry.active_version == 2


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"active": null, "history": []}', "does not name an active version"),
        ('{"active": 2, "history": ["v1"]}', "does not name an active version"),
        ('{"active": 9, "history": [1]}', "names v9, which is not registered"),
    ],
)
def test_ensure_default_refuses_a_damaged_pointer(registry: ModelRegistry, pointer: str, message: str) -> None:
    (registry.root / "active.json").write_text(pointer)
    before = sorted((p.name, p.read_bytes()) for p in registry.root.rglob("*") if p.is_file())
    with pytest.raises(ModelError, match=message) as info:
        registry.ensure_default(DEFAULT_MODEL_PATH)
    assert not isinstance(info.value, ModelNotFoundError)
    assert str(registry.root) not in info.value.user_message
    assert sorted((p.name, p.read_bytes()) for p in registry.root.rglob("*") if p.is_file()) == before


def test_ensure_default_refuses_unreadable_records_and_bundles(registry: ModelRegistry) -> None:
    _drop_pointer(registry)
    info2 = registry._info_path(2)
    good = info2.read_bytes()
    info2.write_text("{truncated")
    with pytest.raises(ModelError, match="v2 is unreadable"):
        registry.ensure_default(DEFAULT_MODEL_PATH)
    assert not (registry.root / "active.json").exists()
    info2.write_bytes(good)
    bundle = registry.get(2).path
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="v2 refused"):  # not a silent fall back to v1
        registry.ensure_default(DEFAULT_MODEL_PATH)
    assert not (registry.root / "active.json").exists() and registry.version_numbers() == [1, 2]


def test_promote_marks_and_activates_and_registration_hides_half_written_versions(registry: ModelRegistry) -> None:
    bundle = registry.load(1)
    entry = registry.register(bundle, source="retrain", extra={"promoted": False})
    assert entry.version == 3 and not entry.promoted and not list(registry.versions_dir.glob("*.reserved"))
    registry.promote(3)
    assert registry.get(3).promoted and registry.active_version == 3 and registry.previous_version == 1
    # A reservation (a registration in progress, or one whose process was killed) retires its number
    # and is not listed as a version.
    marker = registry.versions_dir / "v0004.reserved"
    marker.touch()
    assert registry.version_numbers() == [1, 2, 3] and [v.version for v in registry.list()] == [1, 2, 3]
    assert registry.import_file(DEFAULT_MODEL_PATH).version == 5


def test_with_a_signing_key_registered_versions_are_signed_and_unsigned_ones_refused(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = registry.load(1)  # loaded before a key is set: the shipped model is unsigned
    monkeypatch.setenv(HMAC_KEY_ENV, "registry key")
    pointer = (registry.root / "active.json").read_bytes()
    with pytest.raises(ModelIntegrityError, match="v2 refused: .*not signed"):
        registry.activate(2)
    assert (registry.root / "active.json").read_bytes() == pointer
    entry = registry.register(bundle, source="retrain")  # e.g. the end of a retrain: signed at save
    assert json.loads(sidecar_path(entry.path).read_text())["hmac_sha256"]
    assert registry.promote(entry.version).model_version == f"v{entry.version}@sha256:{entry.sha256}"
    assert registry.active_version == entry.version
