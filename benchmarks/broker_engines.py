"""Which engine carries the analyses: the round trip of an echo task with a 5 s voice note, arq vs Dramatiq.

Usage::

    python -m benchmarks.broker_engines --n 100

arq: Redis (a throw-away ``redis-server``), worker polling every 5 ms, the result
announced by pub/sub as ``ser worker`` does.  Dramatiq: RabbitMQ at
127.0.0.1:5672 (guest/guest) with its Redis result backend, the caller blocking
on ``get_result`` in a thread (Dramatiq's client is synchronous).  Both workers
run in this process (one thread / one task), so the figure is the broker
round trip itself; the payload is the same ~20 KB Ogg/Opus note.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _p50(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs):.2f} ms, p95 {xs[int(0.95 * len(xs))]:.2f} ms"


async def _arq(note: bytes, n: int, url: str) -> list[float]:
    from arq.connections import RedisSettings, create_pool
    from arq.worker import Worker, func

    from ser_engine.distributed.codec import dumps, loads

    redis = await create_pool(RedisSettings.from_dsn(url), job_serializer=dumps, job_deserializer=loads,
                              default_queue_name="echo")  # fmt: skip
    done: dict[str, asyncio.Future[None]] = {}

    async def echo(ctx: dict[str, Any], audio: bytes) -> int:
        return len(audio)

    async def after(ctx: dict[str, Any]) -> None:
        await ctx["redis"].publish("echo-done", ctx["job_id"])

    worker = Worker(functions=[func(echo, name="echo")], queue_name="echo", redis_pool=redis, poll_delay=0.005,
                    max_jobs=1, after_job_end=after, handle_signals=False, log_results=False,
                    job_serializer=dumps, job_deserializer=loads)  # fmt: skip
    task = asyncio.create_task(worker.main())
    pubsub = redis.pubsub()
    await pubsub.subscribe("echo-done")

    async def listen() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                fut = done.get(msg["data"].decode())
                if fut is not None and not fut.done():
                    fut.set_result(None)

    listener = asyncio.create_task(listen())
    times = []
    for i in range(n + 5):
        job_id = f"e{i}"
        done[job_id] = asyncio.get_running_loop().create_future()
        t = time.perf_counter()
        job = await redis.enqueue_job("echo", note, _job_id=job_id)
        await done[job_id]
        assert await job.result() == len(note)
        if i >= 5:
            times.append((time.perf_counter() - t) * 1000)
    listener.cancel()
    task.cancel()
    await worker.close()
    return times


def _dramatiq(note: bytes, n: int, url: str) -> list[float]:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672")
    broker.add_middleware(Results(backend=RedisBackend(url=url)))
    dramatiq.set_broker(broker)

    @dramatiq.actor(store_results=True, queue_name="ser_echo_bench")
    def echo(audio_b64: str) -> int:
        return len(base64.b64decode(audio_b64))

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=5)
    worker.start()
    payload = base64.b64encode(note).decode()
    times = []
    try:
        for i in range(n + 5):
            t = time.perf_counter()
            message = echo.send(payload)
            assert message.get_result(block=True, timeout=10_000) == len(note)
            if i >= 5:
                times.append((time.perf_counter() - t) * 1000)
    finally:
        worker.stop()
        broker.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    from benchmarks.clips import make_note
    from tests.test_scale_out import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        note = make_note(5.0, Path(tmp)).read_bytes()
        server = RedisServer(Path(tmp))
        server.start()
        try:
            a = asyncio.run(_arq(note, args.n, server.url))
            print(f"arq (Redis), echo of a {len(note)} B note: {_p50(a)}")
            box: list[list[float]] = []
            th = threading.Thread(target=lambda: box.append(_dramatiq(note, args.n, server.url)))
            th.start()
            th.join()
            print(f"Dramatiq (RabbitMQ + Redis results), same echo: {_p50(box[0])}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
