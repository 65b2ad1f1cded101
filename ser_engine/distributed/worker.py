"""``ser worker``: take analyses from the broker and run them on this machine's cores.

One worker process runs an :class:`arq.worker.Worker` (asyncio, one Redis
connection pool) and an :class:`~ser_engine.service.EmotionService` with
``concurrency`` worker processes (``mode="process"``; the start-up fix of
issue 15 makes any count start).  arq takes at most ``concurrency`` jobs at a
time, so idle workers elsewhere take the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, SERError
from . import DEFAULT_QUEUE, JOB_TIMEOUT_S, MODEL_CHANNEL
from .codec import dumps, error_to_wire, loads, prediction_to_wire, stats_from_wire

__all__ = ["WorkerConfig", "run_worker", "parse_model_version"]

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^v(\d+)@")


def parse_model_version(model_version: str) -> int | None:
    """The registry version number of a ``Prediction.model_version`` (``"v3@sha256:..."`` -> 3), else ``None``."""
    match = _VERSION_RE.match(model_version)
    return int(match.group(1)) if match else None


@dataclass
class WorkerConfig:
    """Settings of one ``ser worker`` process.

    Attributes
    ----------
    broker_url : str
        Redis URL of the broker, ``redis://host:6379/0``.
    concurrency : int
        Analyses at once: worker processes of the local service (default 2).
    model_path : Path or None
        Model bundle to serve when no registry is given (default: the shipped model).
    registry_dir : Path or None
        Shared model registry (a volume): serve its active version, and follow
        announcements on :data:`~ser_engine.distributed.MODEL_CHANNEL` and the
        registry's pointer (checked every ``registry_poll_s``).
    queue : str
        arq queue name (default :data:`~ser_engine.distributed.DEFAULT_QUEUE`).
    poll_s : float
        Seconds between two looks at the queue when it is empty (default 0.005;
        half of it is the mean wait a job adds).
    job_timeout_s : float
        arq's limit per job in seconds; a job whose worker died is delivered
        again ``job_timeout_s + 10`` s after it started (default 10).
    registry_poll_s : float
        Seconds between two reads of the registry's pointer (default 10).
    max_bytes, max_duration_s : int, float or None
        Audio limits (bytes; s) of :class:`~ser_engine.audio.AudioLimits` (default its own).
    """

    broker_url: str
    concurrency: int = 2
    model_path: Path | None = None
    registry_dir: Path | None = None
    queue: str = DEFAULT_QUEUE
    poll_s: float = 0.005
    job_timeout_s: float = JOB_TIMEOUT_S
    registry_poll_s: float = 10.0
    max_bytes: int | None = None
    max_duration_s: float | None = None
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def _limits(cfg: WorkerConfig) -> Any:
    from ..audio import AudioLimits

    kwargs: dict[str, Any] = {}
    if cfg.max_bytes is not None:
        kwargs["max_bytes"] = cfg.max_bytes
    if cfg.max_duration_s is not None:
        kwargs["max_duration_s"] = cfg.max_duration_s
    return AudioLimits(**kwargs)


def _load_predictor(cfg: WorkerConfig, version: int | None = None) -> Any:
    """The predictor to serve: registry ``version`` (default the active one), else ``model_path``."""
    from ..predict import Predictor

    if cfg.registry_dir is not None:
        from ..registry import ModelRegistry

        from ..errors import ModelNotFoundError

        registry = ModelRegistry(cfg.registry_dir)
        try:
            bundle = registry.load_active()[1] if version is None else registry.load(version)
        except ModelNotFoundError:
            if version is not None:
                raise
            # An empty registry (nothing activated yet): serve the model file, as the bot does.
            return Predictor.load(cfg.model_path, limits=_limits(cfg))
        return Predictor(bundle, limits=_limits(cfg))
    return Predictor.load(cfg.model_path, limits=_limits(cfg))


class _ModelFollower:
    """Swap the service's model when the registry's active version changes (pub/sub, then the pointer)."""

    def __init__(self, cfg: WorkerConfig, service: Any, redis: Any) -> None:
        self.cfg, self.service, self.redis = cfg, service, redis
        self._lock = asyncio.Lock()

    async def serve(self, model_version: str | None) -> None:
        """Serve ``model_version`` (``None``: the registry's active version), unless it is served already."""
        if self.cfg.registry_dir is None:
            return
        async with self._lock:
            if model_version is not None and model_version == self.service.model_version:
                return
            version = parse_model_version(model_version) if model_version else None
            try:
                predictor = await asyncio.to_thread(_load_predictor, self.cfg, version)
            except ModelError as exc:
                log.error("worker %s: model %s refused: %s", self.cfg.name, model_version or "(active)", exc)
                return
            if predictor.model_version == self.service.model_version:
                return
            self.service.swap_predictor(predictor)
            log.info("worker %s: now serving %s", self.cfg.name, predictor.model_version)

    async def run(self) -> None:
        """Listen on the model channel; read the registry pointer every ``registry_poll_s`` in any case."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(MODEL_CHANNEL)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.cfg.registry_poll_s)
                    if message is None:
                        await self.serve(None)
                    else:
                        data = message["data"]
                        await self.serve(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone: keep serving, try again
                log.warning("worker %s: model channel lost (%s); retrying", self.cfg.name, exc)
                await asyncio.sleep(1.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: S110 - the connection is already gone
                    pass


async def run_worker(cfg: WorkerConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT (or ``stop`` is set): take jobs, analyse, store results.

    Parameters
    ----------
    cfg : WorkerConfig
        Broker, concurrency, model.
    stop : asyncio.Event, optional
        Set it to stop the worker (tests); signals do the same.

    Raises
    ------
    ser_engine.errors.ModelError
        The model does not load.
    ser_engine.errors.ServiceError
        The worker processes do not start.
    """
    from arq.connections import RedisSettings, create_pool
    from arq.worker import Worker, func

    from ..service import EmotionService, prestart_process_workers

    prestart_process_workers()
    predictor = await asyncio.to_thread(_load_predictor, cfg)
    service = EmotionService(
        predictor, workers=cfg.concurrency, max_pending=cfg.concurrency * 4,
        timeout_s=max(1.0, cfg.job_timeout_s - 1.0), mode="process",
    )  # fmt: skip
    await service.start()
    settings = RedisSettings.from_dsn(cfg.broker_url)
    settings.conn_retries, settings.conn_retry_delay = 1_000_000, 1  # wait for the broker, however long
    redis = await create_pool(settings, job_serializer=dumps, job_deserializer=loads, default_queue_name=cfg.queue)
    follower = _ModelFollower(cfg, service, redis)

    async def analyse(ctx: dict[str, Any], audio: bytes, stats: dict[str, Any] | None, reply_to: str) -> dict[str, Any]:
        ctx["reply_to"] = reply_to
        try:
            prediction = await service.analyse(bytes(audio), speaker_stats=stats_from_wire(stats))
        except SERError as exc:
            return error_to_wire(exc)
        return {"prediction": prediction_to_wire(prediction)}

    async def after_job_end(ctx: dict[str, Any]) -> None:
        reply_to = ctx.get("reply_to")
        if reply_to:
            await ctx["redis"].publish(reply_to, ctx["job_id"])

    def make_worker() -> Any:
        return Worker(
            functions=[func(analyse, name="analyse")], queue_name=cfg.queue, redis_pool=redis,
            max_jobs=cfg.concurrency, job_timeout=cfg.job_timeout_s, keep_result=120, poll_delay=cfg.poll_s,
            max_tries=5, after_job_end=after_job_end, handle_signals=False, log_results=False,
            job_serializer=dumps, job_deserializer=loads,
        )  # fmt: skip

    async def take_jobs() -> None:
        """arq's loop, started again after a broker outage (redis-py reconnects the pool by itself)."""
        while True:
            worker = make_worker()
            try:
                await worker.main()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not (type(exc).__module__.startswith("redis") or isinstance(exc, (OSError, ConnectionError))):
                    raise
                log.warning("worker %s: broker unavailable (%s); retrying in 1 s", cfg.name, type(exc).__name__)
                await asyncio.sleep(1.0)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    log.info("worker %s: %d process(es) on %s, queue %s, serving %s",
             cfg.name, cfg.concurrency, _masked(cfg.broker_url), cfg.queue, service.model_version)  # fmt: skip
    tasks = [asyncio.create_task(take_jobs(), name="arq-worker"),
             asyncio.create_task(follower.run(), name="ser-model-follower")]  # fmt: skip
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        with contextlib.suppress(Exception):
            await redis.aclose()
        await service.close()


def _masked(url: str) -> str:
    """``url`` without its password (for logs)."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)
