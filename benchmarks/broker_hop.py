"""Scale-out benchmarks (issue 15): the broker hop against in-process workers, and notes/s per worker count.

Usage::

    python -m benchmarks.broker_hop hop --n 60            # p50/p95 of a 5 s note: in-process vs through arq
    python -m benchmarks.broker_hop hop --engine dramatiq  # the same hop with an echo task (arq vs Dramatiq)
    python -m benchmarks.broker_hop throughput --workers 1,2,4 --notes 200

``hop`` alternates the two paths request by request (A/B, same run, same note),
one request at a time.  ``throughput`` starts ``k`` ``ser worker --concurrency 1``
processes and sends ``--notes`` notes at once (3-4 s RAVDESS notes, Ogg/Opus).
Each run starts its own ``redis-server`` on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.test_scale_out import RedisServer

    server = RedisServer(tmp)
    server.start()
    assert server.proc is not None
    return server.proc, server.url


def _worker(url: str, queue: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "ser_engine", "worker", "--broker", url, "--queue", queue,
                             "--concurrency", str(concurrency)], env=env, cwd=ROOT)  # fmt: skip


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _hop(n: int, tmp: Path) -> None:
    from benchmarks.clips import make_note
    from ser_engine.distributed.client import BrokerService
    from ser_engine.predict import Predictor
    from ser_engine.service import EmotionService

    note = make_note(5.0, tmp).read_bytes()
    redis, url = _redis(tmp)
    worker = _worker(url, "bench")
    predictor = Predictor.load()
    try:
        async with EmotionService(predictor, workers=1, mode="process") as local, \
                BrokerService(predictor, url, queue="bench") as broker:  # fmt: skip
            for _ in range(5):  # warm both paths (the worker is up once this answers)
                await local.analyse(note)
                await broker.analyse(note)
            a: list[float] = []
            b: list[float] = []
            for _ in range(n):
                t = time.perf_counter()
                await local.analyse(note)
                a.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await broker.analyse(note)
                b.append((time.perf_counter() - t) * 1000)
        print(f"5 s note, {n} requests each, alternating: in-process p50 {statistics.median(a):.1f} ms "
              f"(p95 {_pct(a, 0.95):.1f}); broker p50 {statistics.median(b):.1f} ms (p95 {_pct(b, 0.95):.1f}); "
              f"hop adds {statistics.median(b) - statistics.median(a):+.1f} ms at p50")  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(20)
        redis.terminate()


async def _throughput(counts: list[int], notes: int, tmp: Path) -> None:
    from benchmarks.clips import ravdess_clips
    from ser_engine.distributed.client import BrokerService
    from ser_engine.predict import Predictor
    from tests.conftest import voice_note

    ffmpeg = "ffmpeg"
    clips = [voice_note(ffmpeg, c, tmp / f"{i}.ogg").read_bytes() for i, c in enumerate(ravdess_clips()[:8])]
    redis, url = _redis(tmp)
    predictor = Predictor.load()
    try:
        for k in counts:
            queue = f"tp{k}"
            workers = [_worker(url, queue) for _ in range(k)]
            try:
                async with BrokerService(predictor, url, queue=queue, max_pending=notes + 1) as broker:
                    await asyncio.gather(*(broker.analyse(clips[0]) for _ in range(4 * k)))  # all workers up
                    t = time.perf_counter()
                    await asyncio.gather(*(broker.analyse(clips[i % len(clips)]) for i in range(notes)))
                    elapsed = time.perf_counter() - t
                print(f"{k} worker process(es): {notes} notes in {elapsed:.2f} s = {notes / elapsed:.1f} notes/s")
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(20)
    finally:
        redis.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("hop")
    h.add_argument("--n", type=int, default=60)
    t = sub.add_parser("throughput")
    t.add_argument("--workers", default="1,2,4")
    t.add_argument("--notes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "hop":
            asyncio.run(_hop(args.n, Path(tmp)))
        else:
            asyncio.run(_throughput([int(x) for x in args.workers.split(",")], args.notes, Path(tmp)))


if __name__ == "__main__":
    main()
