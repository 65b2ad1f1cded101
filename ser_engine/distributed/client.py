"""The front end's side of the broker: :class:`BrokerService`, an :class:`~ser_engine.service.EmotionService` look-alike.

A front end that was written against :class:`~ser_engine.service.EmotionService`
(``analyse``, ``predictor``, ``model_version``, ``swap_predictor``, ``start``,
``close``, ``pending``) gets the same calls, but the CPU work runs on
``ser worker`` processes anywhere.  The predictor held here is only read for
its labels, limits and feature layout; it never analyses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from ..errors import ServiceBusyError, ServiceClosedError, ServiceTimeoutError
from ..service import ServiceWorkerError
from . import DEFAULT_QUEUE, DONE_CHANNEL_PREFIX, MODEL_CHANNEL
from .codec import dumps, error_from_wire, loads, prediction_from_wire, stats_to_wire

__all__ = ["ANALYSIS_JOB_ID", "BrokerService", "BrokerUnavailableError"]

log = logging.getLogger(__name__)

#: The job id of the analysis the current task asks for, when the caller does not pass ``job_id``
#: (the bot sets ``"note:<message id>"`` in the task that handles the message).
ANALYSIS_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("ser_analysis_job_id", default=None)


class BrokerUnavailableError(ServiceBusyError):
    """The broker cannot be reached: the user reads the short "busy" answer; the client reconnects by itself."""


class BrokerService:
    """Send analyses to ``ser worker`` processes through a Redis broker (:mod:`arq`).

    Parameters
    ----------
    predictor : Predictor
        The model the workers serve (labels, limits and feature layout for the
        front end; :meth:`swap_predictor` announces a new one to the workers).
    broker_url : str
        ``redis://host:6379/0``.
    timeout_s : float, keyword-only
        Seconds one analysis may take, broker and queue included; it must
        exceed :data:`~ser_engine.distributed.REDELIVERY_S` so a job whose
        worker died is answered by the next worker (default 60).
    max_pending : int, keyword-only
        Analyses this front end has in flight at once; one more is refused
        as busy (default 256).
    queue : str, keyword-only
        arq queue name (default :data:`~ser_engine.distributed.DEFAULT_QUEUE`).
    check_s : float, keyword-only
        Seconds between two looks at a job's result when no "done" message
        came (pub/sub is at-most-once; default 0.5).

    Notes
    -----
    ``analyse(..., job_id=...)``: the job id makes enqueueing idempotent; the
    bot passes ``"note:<message id>"``, so a note enqueued twice (a retry, a
    restart) is analysed once and both callers get the same result.
    """

    mode = "broker"

    def __init__(
        self, predictor: Any, broker_url: str, *, timeout_s: float = 60.0, max_pending: int = 256,
        queue: str = DEFAULT_QUEUE, check_s: float = 0.5,
    ) -> None:  # fmt: skip
        if timeout_s <= 0 or max_pending < 1:
            raise ValueError("BrokerService: timeout_s and max_pending must be positive")
        self._predictor = predictor
        self.broker_url = broker_url
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.queue = queue
        self.check_s = check_s
        self.client_id = uuid.uuid4().hex
        self.reply_channel = DONE_CHANNEL_PREFIX + self.client_id
        self._redis: Any = None
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._pending = 0
        self._closed = False

    # ------------------------------------------------------------- properties
    @property
    def predictor(self) -> Any:
        """The model the workers are asked to serve."""
        return self._predictor

    @property
    def model_version(self) -> str:
        """``predictor.model_version`` (each result names the version that produced it)."""
        return str(getattr(self._predictor, "model_version", "unknown"))

    @property
    def pending(self) -> int:
        """Analyses in flight from this front end."""
        return self._pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def redis(self) -> Any:
        """The broker connection pool (:class:`arq.connections.ArqRedis`), after :meth:`start`."""
        return self._redis

    def worker_pids(self) -> list[int]:
        """No local worker processes: the analyses run elsewhere."""
        return []

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Make the connection pool and start listening for "done" messages.

        Never fails for the broker itself: when it is down the connection is
        made on the first request that finds it up again (meanwhile requests
        are answered "busy").
        """
        from arq.connections import ArqRedis, RedisSettings

        if self._closed:
            raise ServiceClosedError()
        settings = RedisSettings.from_dsn(self.broker_url)
        # arq's create_pool pings (and fails) at once; this pool connects lazily and reconnects by itself.
        self._redis = ArqRedis(
            host=settings.host, port=settings.port, db=settings.database, username=settings.username,
            password=settings.password, socket_connect_timeout=2.0, socket_timeout=None, health_check_interval=15,
            job_serializer=dumps, job_deserializer=loads, default_queue_name=self.queue,
            retry_on_timeout=False,
        )  # fmt: skip
        self._listener = asyncio.create_task(self._listen(), name="ser-broker-done")
        log.info("analyses go to the broker (queue %s)", self.queue)

    async def close(self) -> None:
        """Refuse new requests, stop listening, close the connections (jobs already queued still run)."""
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    async def __aenter__(self) -> BrokerService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self) -> None:
        """Wake the waiting requests when a worker announces a stored result; resubscribe after a broker outage."""
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.reply_channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None:
                        continue
                    data = message["data"]
                    job_id = data.decode() if isinstance(data, bytes) else str(data)
                    fut = self._waiters.get(job_id)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker: result channel lost (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # ----------------------------------------------------------------- model
    def swap_predictor(self, predictor: Any) -> Any:
        """Ask every worker to serve ``predictor``'s registry version; return the previous predictor.

        The announcement (:data:`~ser_engine.distributed.MODEL_CHANNEL`) carries
        ``predictor.model_version``; workers started with the shared registry
        load that version.  Workers that miss it read the registry's pointer
        within their ``registry_poll_s``.
        """
        if self._closed:
            raise ServiceClosedError()
        previous, self._predictor = self._predictor, predictor
        asyncio.get_running_loop().create_task(self.announce_model(predictor.model_version))
        return previous

    async def announce_model(self, model_version: str) -> int:
        """Publish ``model_version`` on the model channel; return how many workers heard it (0 if the broker is down)."""
        try:
            return int(await self._redis.publish(MODEL_CHANNEL, model_version))
        except Exception as exc:
            log.warning("broker: model version %s not announced (%s); workers read the registry", model_version, exc)
            return 0

    # -------------------------------------------------------------- requests
    async def analyse(
        self, source: bytes | str | Path, *, speaker_stats: Any = None, job_id: str | None = None
    ) -> Any:
        """Analyse one recording on a worker; same contract as :meth:`ser_engine.service.EmotionService.analyse`.

        Parameters
        ----------
        source : bytes or path
            The encoded audio (sent inside the job) or its path (read here).
        speaker_stats : SpeakerStats or None, keyword-only
            The speaker's running statistics, shape (n_features,) each.
        job_id : str, optional, keyword-only
            Idempotency key (default: :data:`ANALYSIS_JOB_ID`, else a random one).  A job id already queued,
            running or finished within 120 s is not analysed again; this call
            returns that job's result.

        Returns
        -------
        Prediction
            Naming the model version that produced it.

        Raises
        ------
        ServiceBusyError
            Too many requests in flight, or the broker is down
            (:class:`BrokerUnavailableError`).
        ServiceTimeoutError
            No result within ``timeout_s``.
        ServiceWorkerError
            The job failed on the worker outside the engine (arq's own timeout).
        ServiceClosedError
            :meth:`close` was called.
        ser_engine.errors.AudioError
            The worker refused the audio.
        """
        if self._closed or self._redis is None:
            raise ServiceClosedError()
        if self._pending >= self.max_pending:
            raise ServiceBusyError()
        if not isinstance(source, (bytes, bytearray, memoryview)):
            source = await asyncio.to_thread(Path(os.fspath(source)).read_bytes)
        job_id = job_id or ANALYSIS_JOB_ID.get() or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        self._pending += 1
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters[job_id] = fut
        try:
            from arq.jobs import Job

            try:
                job = await self._redis.enqueue_job(
                    "analyse", bytes(source), stats_to_wire(speaker_stats), self.reply_channel,
                    _job_id=job_id, _expires=self.timeout_s,
                )  # fmt: skip
            except (OSError, ConnectionError, TimeoutError) as exc:
                raise BrokerUnavailableError() from exc
            except Exception as exc:
                if type(exc).__module__.startswith("redis"):
                    raise BrokerUnavailableError() from exc
                raise
            if job is None:  # already queued, running or done: wait for that one
                job = Job(job_id, self._redis, _queue_name=self.queue, _deserializer=loads)
            return await self._wait(job, fut, deadline)
        finally:
            self._pending -= 1
            self._waiters.pop(job_id, None)

    async def result_of(self, job_id: str) -> Any:
        """The result of a job enqueued earlier (e.g. by a process that stopped since), waiting for it if queued.

        Returns
        -------
        Prediction or None
            ``None`` when the broker knows no such job (never enqueued, or its
            result expired after 120 s).

        Raises
        ------
        ServiceTimeoutError, ServiceWorkerError, ser_engine.errors.AudioError
            As :meth:`analyse`.
        BrokerUnavailableError
            The broker is down.
        """
        from arq.jobs import Job, JobStatus

        if self._closed or self._redis is None:
            raise ServiceClosedError()
        job = Job(job_id, self._redis, _queue_name=self.queue, _deserializer=loads)
        try:
            status = await job.status()
        except Exception as exc:
            raise BrokerUnavailableError() from exc
        if status == JobStatus.not_found:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters[job_id] = fut
        try:
            return await self._wait(job, fut, loop.time() + self.timeout_s)
        finally:
            self._waiters.pop(job_id, None)

    async def _wait(self, job: Any, fut: asyncio.Future[None], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ServiceTimeoutError(self.timeout_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), timeout=min(self.check_s, remaining))
            try:
                info = await job.result_info()
            except Exception as exc:
                if type(exc).__module__.startswith("redis") or isinstance(exc, (OSError, ConnectionError)):
                    await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
                    continue  # the broker blinked: the job is still there, keep waiting
                raise
            if info is None:
                if fut.done():  # a "done" for an earlier try; wait for the next one
                    fut = loop.create_future()
                    self._waiters[job.job_id] = fut
                continue
            result = info.result
            if not info.success or not isinstance(result, dict):
                raise ServiceWorkerError()
            if "prediction" in result:
                return prediction_from_wire(result["prediction"])
            raise error_from_wire(result)
