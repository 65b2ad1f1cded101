"""EmotionService: off-loop analysis, bounded queue, timeouts, hot swap, close."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from ser_engine.errors import ServiceBusyError, ServiceClosedError, ServiceTimeoutError, UndecodableAudioError
from ser_engine.predict import DEFAULT_MODEL_PATH, Prediction, Predictor
from ser_engine.service import EmotionService

from .conftest import _require


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    _require(Path(DEFAULT_MODEL_PATH).is_file(), f"shipped model missing at {DEFAULT_MODEL_PATH}")
    return Predictor.load()


class SlowPredictor:
    """A real predictor whose every prediction first waits on an event (to hold workers busy)."""

    def __init__(self, inner: Predictor, gate: threading.Event) -> None:
        self.inner, self.gate, self.labels = inner, gate, inner.labels
        self.threads: set[str] = set()

    def predict(self, source):
        self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        return self.inner.predict(source)

    def predict_signal(self, y, sr=16000):
        return self.inner.predict_signal(y, sr)


async def test_analyses_match_the_predictor_and_run_off_the_loop(predictor, angry_clip, voice_note_factory):
    note = voice_note_factory(angry_clip).read_bytes()
    expected = predictor.predict(note)
    async with EmotionService(predictor, workers=2) as service:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(*(service.analyse(note) for _ in range(6)))
        t.cancel()
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


async def test_swap_keeps_requests_in_flight_on_their_model(predictor, angry_clip):
    gate = threading.Event()
    old = SlowPredictor(predictor, gate)
    service = EmotionService(old, workers=2)
    in_flight = asyncio.create_task(service.analyse(angry_clip.read_bytes()))
    await asyncio.sleep(0.05)
    new = SlowPredictor(predictor, threading.Event())
    new.gate.set()
    assert service.swap_predictor(new) is old
    assert service.predictor is new
    gate.set()
    await in_flight
    assert old.threads and not new.threads  # the running request stayed on the old model
    await service.analyse(angry_clip.read_bytes())
    assert new.threads
    await service.close()


async def test_closed_service_refuses(predictor, angry_clip):
    service = EmotionService(predictor, workers=1)
    await service.close()
    with pytest.raises(ServiceClosedError):
        await service.analyse(angry_clip.read_bytes())


def test_bad_arguments():
    with pytest.raises(ValueError):
        EmotionService(object(), workers=0)  # type: ignore[arg-type]
