"""EmotionService: off-loop analysis, bounded queue, timeouts, hot swap, close; thread and process workers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ser_engine.audio import AudioLimits
from ser_engine.errors import (
    AudioTooLargeError,
    ServiceBusyError,
    ServiceClosedError,
    ServiceTimeoutError,
    UndecodableAudioError,
)
from ser_engine.normalization import SpeakerStats
from ser_engine.predict import DEFAULT_MODEL_PATH, Prediction, Predictor
from ser_engine.service import EmotionService, ServiceWorkerError

from .conftest import _require


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    _require(Path(DEFAULT_MODEL_PATH).is_file(), f"shipped model missing at {DEFAULT_MODEL_PATH}")
    return Predictor.load()


class SlowPredictor:
    """A real predictor whose every prediction first waits on an event (to hold workers busy)."""

    def __init__(self, inner: Predictor, gate: threading.Event) -> None:
        self.inner, self.gate, self.labels, self.model_version = inner, gate, inner.labels, inner.model_version
        self.threads: set[str] = set()

    def predict(self, source):
        self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        return self.inner.predict(source)

    def predict_signal(self, y, sr=16000):
        return self.inner.predict_signal(y, sr)

    def warm_up(self, y, sr=16000):
        return self.inner.warm_up(y, sr)


async def _gather_while_ticking(coros) -> tuple[list, int]:
    """Await the coroutines together while a 1 ms ticker counts how often the event loop got to run."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    t = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*coros)
    finally:
        t.cancel()
    return results, ticks


async def test_analyses_match_the_predictor_and_run_off_the_loop(predictor, angry_clip, voice_note_factory):
    note = voice_note_factory(angry_clip).read_bytes()
    expected = predictor.predict(note)
    async with EmotionService(predictor, workers=2) as service:
        results, ticks = await _gather_while_ticking(service.analyse(note) for _ in range(6))
    assert all(isinstance(r, Prediction) and r.label == expected.label for r in results)
    assert all(abs(r.confidence - expected.confidence) < 1e-6 for r in results)
    assert ticks > 0, "the event loop was blocked while analysing"
    assert service.pending == 0


async def test_busy_when_the_queue_is_full(predictor, angry_clip):
    gate = threading.Event()
    slow = SlowPredictor(predictor, gate)
    service = EmotionService(slow, workers=1, max_pending=2, timeout_s=15)
    data = angry_clip.read_bytes()
    first = asyncio.create_task(service.analyse(data))
    second = asyncio.create_task(service.analyse(data))
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceBusyError) as err:
        await service.analyse(data)
    assert "busy" in err.value.user_message
    gate.set()
    assert (await first).label == (await second).label
    await service.close()
    assert slow.threads and all(name.startswith("ser-worker") for name in slow.threads)


async def test_timeout_frees_the_caller_and_later_the_worker(predictor, angry_clip):
    gate = threading.Event()
    service = EmotionService(SlowPredictor(predictor, gate), workers=1, timeout_s=0.2)
    data = angry_clip.read_bytes()
    started = time.monotonic()
    with pytest.raises(ServiceTimeoutError):
        await service.analyse(data)
    assert time.monotonic() - started < 5
    gate.set()  # the stuck analysis finishes; its slot comes back
    service.timeout_s = 10
    assert (await service.analyse(data)).label
    await service.close()


async def test_audio_errors_pass_through(predictor):
    async with EmotionService(predictor, workers=1) as service:
        with pytest.raises(UndecodableAudioError):
            await service.analyse(b"definitely not audio" * 10)
        assert service.pending == 0


async def test_swap_keeps_requests_in_flight_on_their_model(predictor, angry_clip, tmp_path):
    from ser_engine.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "reg")  # two registered versions, as after a retrain
    registry.ensure_default(DEFAULT_MODEL_PATH)
    registry.import_file(DEFAULT_MODEL_PATH, source="retrain")
    gate = threading.Event()
    old = SlowPredictor(Predictor(registry.load(1)), gate)
    service = EmotionService(old, workers=2)
    assert service.model_version.startswith("v1@sha256:")
    in_flight = asyncio.create_task(service.analyse(angry_clip.read_bytes()))
    for _ in range(200):  # until the request runs in a worker, held there by the gate
        if old.threads:
            break
        await asyncio.sleep(0.01)
    assert old.threads and service.pending == 1
    new = SlowPredictor(Predictor(registry.load(2)), threading.Event())
    new.gate.set()
    assert service.swap_predictor(new) is old
    assert service.predictor is new and service.model_version.startswith("v2@sha256:")
    gate.set()
    first = await in_flight
    assert old.threads and not new.threads  # the running request stayed on the old model ...
    assert first.model_version == old.inner.model_version == f"v1@sha256:{registry.get(1).sha256}"  # ... and says so
    second = await service.analyse(angry_clip.read_bytes())
    assert new.threads and second.model_version == f"v2@sha256:{registry.get(2).sha256}"
    await service.close()


async def test_closed_service_refuses(predictor, angry_clip):
    service = EmotionService(predictor, workers=1)
    await service.close()
    with pytest.raises(ServiceClosedError):
        await service.analyse(angry_clip.read_bytes())


def test_bad_arguments():
    with pytest.raises(ValueError):
        EmotionService(object(), workers=0)  # type: ignore[arg-type]


# ------------------------------------------------------------ process workers
# Predictors for process mode must pickle, so these are module-level classes (the
# worker processes import this module to unpickle them).

#: The input on which :class:`CrashingPredictor` kills its worker process.
POISON = b"OggS" + b"\x00" * 60 + b"poison: this worker process dies here"


class CrashingPredictor(Predictor):
    """A real predictor whose worker process is killed (SIGKILL, as by the OOM killer) on :data:`POISON`."""

    def predict(self, source, **kwargs):  # type: ignore[override]
        if source == POISON:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(source, **kwargs)


class SleepyPredictor(Predictor):
    """A real predictor that sleeps ``delay_s`` before every prediction (holds its worker busy)."""

    delay_s = 1.5

    def predict(self, source, **kwargs):  # type: ignore[override]
        time.sleep(self.delay_s)
        return super().predict(source, **kwargs)


class PidPredictor(Predictor):
    """A real predictor that reports which process served it, as ``duration_s`` (its process id)."""

    def predict(self, source, **kwargs):  # type: ignore[override]
        result = super().predict(source, **kwargs)
        object.__setattr__(result, "duration_s", float(os.getpid()))  # frozen dataclass: tag the serving process
        return result


class ColdPredictor(PidPredictor):
    """A :class:`PidPredictor` without warm-up: each worker process is ready a few ms after its fork.

    Fast-starting workers are what broke the old start-up handshake (issue 15): a
    worker that had answered its ping counted as idle, so later submits started
    no process and fewer than ``workers`` ever came up.
    """

    def warm_up(self, y, sr=16000):  # type: ignore[override]
        return None


def _same(a: Prediction, b: Prediction) -> bool:
    return a.label == b.label and all(abs(a.probabilities[k] - b.probabilities[k]) < 1e-6 for k in a.probabilities)


async def test_process_workers_match_the_predictor_in_other_processes(predictor, angry_clip, voice_note_factory):
    note = voice_note_factory(angry_clip).read_bytes()
    expected = predictor.predict(note)
    tagged = PidPredictor(predictor.bundle)
    async with EmotionService(tagged, workers=2, mode="process") as service:
        pids = service.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        results, ticks = await _gather_while_ticking(service.analyse(note) for _ in range(8))
        assert {int(r.duration_s) for r in results} <= set(pids)
        assert all(_same(r, expected) for r in results)
        assert all(r.features is not None and np.allclose(r.features, expected.features) for r in results)
        assert ticks > 0, "the event loop was blocked while analysing"
        assert service.pending == 0
    assert all(not _alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) counts as gone
        return f.read().split(") ", 1)[1][0] != "Z"


async def test_process_workers_apply_the_speakers_statistics(predictor, ravdess_dir, voice_note_factory):
    """Per-user normalisation crosses the process boundary: the worker uses the statistics it is sent."""
    if predictor.min_clips is None:
        pytest.skip("the shipped model does not normalise per speaker")
    clips = sorted((ravdess_dir / "Actor_07").glob("03-01-*.flac"))[:8]
    stats = SpeakerStats.of(np.stack([predictor.predict(c).features for c in clips[1:]]))
    assert stats.n >= predictor.min_clips
    note = voice_note_factory(clips[0]).read_bytes()
    own = predictor.predict(note, speaker_stats=stats)
    generic = predictor.predict(note)
    assert own.normalization == "speaker" and generic.normalization == "fallback"
    assert not _same(own, generic)
    async with EmotionService(predictor, workers=1, mode="process") as service:
        served = await service.analyse(note, speaker_stats=stats)
        served_generic = await service.analyse(note)
    assert served.normalization == "speaker" and _same(served, own)
    assert served_generic.normalization == "fallback" and _same(served_generic, generic)


async def test_engine_errors_cross_the_process_boundary_intact(predictor, angry_clip):
    small = Predictor(predictor.bundle, limits=AudioLimits(max_bytes=10_000))
    async with EmotionService(small, workers=1, mode="process") as service:
        with pytest.raises(UndecodableAudioError):
            await service.analyse(b"definitely not audio" * 10)
        with pytest.raises(AudioTooLargeError) as err:  # its __init__ takes numbers, not the message
            await service.analyse(angry_clip.read_bytes())
        assert err.value.limit_bytes == 10_000 and err.value.size_bytes == angry_clip.stat().st_size
        assert "too big" in err.value.user_message
        assert service.pending == 0 and service.restarts == 0


async def test_a_dying_worker_process_is_replaced_and_its_request_gets_a_clear_error(predictor, angry_clip):
    data = angry_clip.read_bytes()
    expected = predictor.predict(data)
    async with EmotionService(CrashingPredictor(predictor.bundle), workers=2, mode="process") as service:
        before = set(service.worker_pids())
        generation = service.generation
        with pytest.raises(ServiceWorkerError) as err:
            await service.analyse(POISON)
        assert "try again" in err.value.user_message
        assert service.restarts == 1 and service.generation == generation + 1
        results = await asyncio.gather(*(service.analyse(data) for _ in range(4)))  # the new pool serves
        assert all(_same(r, expected) for r in results)
        after = set(service.worker_pids())
        assert len(after) == 2 and not after & before
        assert service.pending == 0
    assert all(not _alive(pid) for pid in before | after)


async def test_process_timeout_frees_the_caller_and_later_the_worker(predictor, angry_clip):
    service = EmotionService(SleepyPredictor(predictor.bundle), workers=1, timeout_s=0.3, mode="process")
    await service.start()
    data = angry_clip.read_bytes()
    started = time.monotonic()
    with pytest.raises(ServiceTimeoutError):
        await service.analyse(data)
    assert time.monotonic() - started < 1.2  # the caller did not wait for the 1.5 s sleep
    service.timeout_s = 10
    assert (await service.analyse(data)).label == predictor.predict(data).label  # waited for the slot, then ran
    assert service.restarts == 0
    await service.close()


async def test_process_swap_serves_new_requests_with_the_new_model(predictor, angry_clip):
    """After a swap (retrain, rollback) new requests use the new model; the one in flight keeps the old."""
    data = angry_clip.read_bytes()
    old = SleepyPredictor(predictor.bundle, unsure_below=0.0, model_version="old@sha256:" + "0" * 64)  # never unsure
    new = Predictor(predictor.bundle, unsure_below=1.0, model_version="new@sha256:" + "1" * 64)  # always unsure
    service = EmotionService(old, workers=1, mode="process")
    await service.start()
    old_pids = set(service.worker_pids())
    in_flight = asyncio.create_task(service.analyse(data))
    await asyncio.sleep(0.2)  # submitted to the old pool, sleeping there
    assert service.swap_predictor(new) is old
    assert service.predictor is new and service.generation == 1
    first_new = await service.analyse(data)
    finished_old = await in_flight
    assert first_new.unsure and not finished_old.unsure
    # The version travels with the prediction from the worker that ran it, not from the service's current model.
    assert finished_old.model_version == old.model_version and first_new.model_version == new.model_version
    assert set(service.worker_pids()).isdisjoint(old_pids)
    for _ in range(50):  # the retired pool exits once its request is done
        if not any(_alive(pid) for pid in old_pids):
            break
        await asyncio.sleep(0.1)
    assert not any(_alive(pid) for pid in old_pids)
    assert service.swap_predictor(old) is new  # a rollback: the old model again
    assert not (await service.analyse(data)).unsure
    await service.close()


async def test_process_mode_refuses_what_cannot_reach_a_worker(predictor):
    with pytest.raises(TypeError, match="pickle"):
        EmotionService(SlowPredictor(predictor, threading.Event()), mode="process")  # type: ignore[arg-type]
    service = EmotionService(predictor, workers=1, mode="process")
    with pytest.raises(TypeError, match="pickle"):
        service.swap_predictor(SlowPredictor(predictor, threading.Event()))  # type: ignore[arg-type]
    assert service.predictor is predictor and service.generation == 0
    await service.close()
    with pytest.raises(ValueError, match="mode"):
        EmotionService(predictor, mode="fork")  # type: ignore[arg-type]


def test_the_bot_setting_chooses_the_worker_mode(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.delenv("SER_WORKER_MODE", raising=False)
    from bot.config import Settings

    token = "MTA5.test.not-a-real-token"
    assert Settings(_env_file=None, discord_token=token).ser_worker_mode == "process"  # the measured default
    assert Settings(_env_file=None, discord_token=token, ser_worker_mode=" Thread ").ser_worker_mode == "thread"
    with pytest.raises(ValidationError, match="ser_worker_mode"):
        Settings(_env_file=None, discord_token=token, ser_worker_mode="fork")


async def test_eight_process_workers_start_on_two_cores_and_analyse(predictor, angry_clip, voice_note_factory):
    """Issue 15: more workers than cores (8 on this 2-core machine) all start, and every one analyses."""
    note = voice_note_factory(angry_clip).read_bytes()
    expected = predictor.predict(note)
    for attempt in range(3):  # the old handshake failed most of these starts; each must succeed
        service = EmotionService(ColdPredictor(predictor.bundle), workers=8, mode="process", timeout_s=60)
        try:
            await service.start()
            pids = service.worker_pids()
            assert len(set(pids)) == 8 and os.getpid() not in pids, f"start {attempt}: workers {pids}"
            results = await asyncio.gather(*(service.analyse(note) for _ in range(16)))
            assert all(_same(r, expected) for r in results)
            assert {int(r.duration_s) for r in results} <= set(pids)
            assert service.restarts == 0
        finally:
            await service.close()
        assert all(not _alive(pid) for pid in pids)
