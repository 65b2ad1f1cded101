"""The asynchronous analysis service: the one object a front end talks to.

Decoding, feature extraction and prediction are CPU work; an event loop
(the Discord bot's) must never run them.  :class:`EmotionService` runs each
analysis in a pool of workers, bounds how many requests may wait, and gives
every request a timeout.  The model can be swapped between requests; a
request in flight finishes on the model it started with, and its
:class:`~ser_engine.predict.Prediction` names that model
(``model_version``, stamped by the predictor that ran it).

Two kinds of workers (``mode=``):

``"thread"``
    A thread pool in this process.  Cheap to start and shares the model, but
    feature extraction holds the GIL for much of its time, so two threads do
    little more than one.
``"process"``
    A pool of worker processes (:class:`concurrent.futures.ProcessPoolExecutor`,
    ``forkserver`` start method on Linux, ``spawn`` elsewhere -- never plain
    ``fork`` of a process running an event loop and threads), started with
    the minimal environment of :mod:`ser_engine.environment` (no
    ``DISCORD_TOKEN``, no ``DATABASE_URL``: the forkserver and every worker
    it forks begin with the allowed variables only).  Each worker
    unpickles the model once in its initializer and warms up there; requests
    carry only the audio (and the speaker's statistics).  A worker that dies
    breaks its pool: the service starts a new pool and that request fails with
    :class:`ServiceWorkerError`.  :meth:`EmotionService.swap_predictor` starts a
    new pool (a new *generation*) for the new model; the old pool finishes the
    requests it has and then exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from .environment import minimal_process_context
from .errors import ServiceBusyError, ServiceClosedError, ServiceError, ServiceTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from .normalization import RunningStatsLike
    from .predict import Prediction, Predictor
    from .timeline import Timeline

__all__ = ["WORKER_MODES", "EmotionService", "ServiceWorkerError", "WorkerMode", "prestart_process_workers"]

log = logging.getLogger(__name__)

WorkerMode = Literal["thread", "process"]
#: The accepted values of ``EmotionService(mode=...)``.
WORKER_MODES: Final[tuple[str, ...]] = ("thread", "process")

#: Modules the forkserver imports once, so that every worker process it forks
#: starts with numpy, scipy, scikit-learn, the engine and PyAV (imported by the
#: engine on its first compressed file) already loaded, and shares those pages
#: copy-on-write with its siblings.  A name that does not import is skipped by
#: the forkserver.  (librosa is not needed to predict and is left out.)
_FORKSERVER_PRELOAD: Final[list[str]] = ["ser_engine.predict", "ser_engine.service", "av"]

#: Seconds :meth:`EmotionService.start` waits for worker processes to load the
#: model and warm up (a cold ``spawn`` start imports scipy, scikit-learn and PyAV: ~3-10 s
#: on a busy 2-core machine; generous so a slow disk is not mistaken for a failure).
_START_TIMEOUT_S: Final[float] = 180.0


class ServiceWorkerError(ServiceError):
    """A worker process died (crash, out of memory, killed) while this request was running.

    The service has already started fresh workers; trying again may work.
    """

    def __init__(self, message: str = "The analysis stopped unexpectedly; please try again.") -> None:
        super().__init__(message)


# ====================================================================== worker
def _warmup_signal(sr: int = 16_000) -> np.ndarray:
    """A 1 s harmonic signal with a gliding f0 (140 +- 30 Hz): voiced, non-silent, cheap.

    Returns
    -------
    np.ndarray, shape (sr,), float32
    """
    t = np.arange(sr, dtype=np.float32) / sr
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


# Per worker process: the model of this pool's generation and the BLAS limit object (kept alive).
_WORKER_STATE: dict[str, Any] = {}


def _worker_init(payload: bytes, blas_threads: int | None, start_barrier: Any) -> None:
    """Initializer of a worker process: BLAS threads, unpickle the model, warm up.

    ``payload`` is :func:`pickle.dumps` of the parent's own predictor object
    (never bytes from outside the service).  ``start_barrier`` is the pool's
    :class:`multiprocessing.Barrier` of ``workers`` parties, kept for
    :func:`_worker_ping` (see :meth:`_Pool.wait_ready`).
    """
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STATE["start_barrier"] = start_barrier
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        _WORKER_STATE["blas"] = threadpool_limits(limits=blas_threads, user_api="blas")
    predictor = pickle.loads(payload)  # noqa: S301 - our own object, pickled by the parent
    _preload_decoders()
    predictor.warm_up(_warmup_signal(), 16_000)  # filter banks, FFT plans, caches, the speech detector's model
    _WORKER_STATE["predictor"] = predictor


def _preload_decoders() -> None:
    """Load the in-process decoders (PyAV) now, not on the first voice note (see :func:`ser_engine.audio.preload_decoders`)."""
    from .audio import preload_decoders

    preload_decoders()


def _worker_ping(timeout_s: float) -> int:
    """The start-up task: wait until every worker of the pool runs one, then return this process's id.

    It runs after the initializer (model loaded, warmed up).  Holding each
    worker at the pool's barrier until all ``workers`` pings are taken is what
    makes :meth:`_Pool.wait_ready` start every process: a worker that finished
    its ping early would count as idle, and
    :class:`~concurrent.futures.ProcessPoolExecutor` (Python >= 3.9) spawns a
    process on ``submit`` only when no worker is idle.

    Raises
    ------
    threading.BrokenBarrierError
        Not every worker reached the barrier within ``timeout_s`` (one failed
        to start, or the pool is being stopped).
    """
    _WORKER_STATE["start_barrier"].wait(timeout_s)
    return os.getpid()


@dataclass(frozen=True)
class _RemoteError:
    """An exception raised in a worker process, in a form that always unpickles.

    Exceptions whose ``__init__`` takes other arguments than their message
    (e.g. :class:`~ser_engine.errors.AudioTooLargeError`) cannot be rebuilt
    by :mod:`pickle` from ``args``; this carries the class, ``args`` and
    attributes and rebuilds the exception without calling ``__init__``.
    """

    cls: type[BaseException]
    args: tuple[Any, ...]
    state: dict[str, Any]
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> _RemoteError:
        tb = "".join(traceback.format_exception(exc))
        state = dict(getattr(exc, "__dict__", {}))
        candidate = cls(type(exc), tuple(exc.args), state, tb)
        try:
            pickle.loads(pickle.dumps(candidate))  # noqa: S301 - round trip of our own object
        except Exception:  # an attribute or argument that does not pickle: keep the text only
            candidate = cls(RuntimeError, (f"{type(exc).__name__}: {exc}",), {}, tb)
        return candidate

    def rebuild(self) -> BaseException:
        exc = self.cls.__new__(self.cls)
        exc.args = self.args
        exc.__dict__.update(self.state)
        exc.__cause__ = _RemoteTraceback(self.traceback)
        return exc


class _RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process (set as ``__cause__``)."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0])


def _worker_analyse(
    source: bytes | str | Path, speaker_stats: Any, timeline: bool = False
) -> Prediction | _RemoteError:
    """Task of a worker process: one analysis with this pool's model."""
    predictor = _WORKER_STATE["predictor"]
    try:
        return _predict(predictor, source, speaker_stats, timeline)
    except Exception as exc:
        return _RemoteError.capture(exc)


def _predict(predictor: Any, source: bytes | str | Path, speaker_stats: Any, timeline: bool = False) -> Any:
    """``predictor.predict(source)``, with ``speaker_stats`` only when given (duck-typed predictors).

    With ``timeline``, :func:`ser_engine.timeline.predict_timeline` instead: its
    overall prediction, carrying the :class:`~ser_engine.timeline.Timeline` as ``timeline``.

    Statistics of another feature configuration (the model was swapped after
    the caller read them) are dropped: the model's fallback statistics are
    used, as for a new speaker.
    """
    if speaker_stats is not None:
        bundle = getattr(predictor, "bundle", None)
        n_features = getattr(getattr(bundle, "feature_config", None), "n_features", None)
        if n_features is not None and np.size(speaker_stats.mean) != n_features:
            speaker_stats = None
    if timeline:
        return predictor.predict_timeline(source, speaker_stats=speaker_stats)  # type: ignore[no-any-return]
    if speaker_stats is None:
        return predictor.predict(source)  # type: ignore[no-any-return]
    return predictor.predict(source, speaker_stats=speaker_stats)  # type: ignore[no-any-return]


# ======================================================================= pools
def _process_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (Linux: preloaded, fork-fast, no inherited threads) or ``spawn``, minimal environment.

    The interpreter multiprocessing executes for the forkserver (or each
    spawned worker) is :func:`ser_engine.environment.python_launcher`, so
    those processes start without the parent's secrets (see
    :func:`ser_engine.environment.minimal_process_context`).
    """
    ctx = minimal_process_context()
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_FORKSERVER_PRELOAD)  # no effect once the forkserver runs
    return ctx


def prestart_process_workers() -> None:
    """Start the forkserver (and its imports) in the background, ahead of the first process pool.

    The forkserver imports numpy, scipy, scikit-learn, PyAV and the engine
    once (~2-4 s of CPU); starting it while the caller still imports and loads
    its own modules overlaps the two on a second core.  Does nothing where
    the ``spawn`` start method is used.  Safe to call more than once.
    """
    ctx = _process_context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    def run() -> None:
        try:
            forkserver.ensure_running()
        except Exception as exc:  # the first pool will try again and report it
            log.warning("emotion service: the forkserver did not start early: %s", exc)

    threading.Thread(target=run, name="ser-forkserver-start", daemon=True).start()


class _Pool:
    """One generation of workers serving one predictor."""

    def __init__(self, predictor: Any, *, mode: WorkerMode, workers: int, blas_threads: int | None, generation: int):
        self.predictor = predictor
        self.mode = mode
        self.workers = workers
        self.generation = generation
        self.executor: Executor
        if mode == "thread":
            self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-worker")
        else:
            try:
                payload = pickle.dumps(predictor, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise TypeError(
                    f"EmotionService(mode='process'): the predictor must pickle to reach the worker processes "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            ctx = _process_context()
            # Passed at process start (a synchronisation object cannot travel with a task).
            self.start_barrier = ctx.Barrier(workers)
            self.executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_worker_init,
                initargs=(payload, blas_threads, self.start_barrier),
            )  # fmt: skip

    def rebind(self, predictor: Any, generation: int) -> _Pool:
        """Thread mode: the same threads serving ``predictor`` (requests already submitted keep theirs)."""
        if self.mode != "thread":
            raise RuntimeError("_Pool.rebind: only thread pools share their workers between models")
        twin = object.__new__(_Pool)
        twin.__dict__.update(self.__dict__)
        twin.predictor, twin.generation = predictor, generation
        return twin

    def submit(self, source: bytes | str | Path, speaker_stats: Any, timeline: bool = False) -> Future[Any]:
        if self.mode == "thread":
            return self.executor.submit(_predict, self.predictor, source, speaker_stats, timeline)
        return self.executor.submit(_worker_analyse, source, speaker_stats, timeline)

    def wait_ready(self, timeout_s: float) -> list[int]:
        """Start every worker process and block until each has loaded the model and warmed up (process mode).

        :class:`~concurrent.futures.ProcessPoolExecutor` (Python >= 3.9) starts
        a process on ``submit`` only when no worker is idle, and a worker that
        finished a task counts as idle.  The former handshake submitted one
        ping per worker and waited for ``workers`` "ready" messages: once the
        first workers were up and had answered pings while the others were
        still being submitted, later submits found an idle worker and started
        no process, so fewer than ``workers`` ever reported and the wait ran
        into its limit (issue 15: 5-8 workers on 2 cores, 8 on 16 cores; more
        likely the more workers and the faster each starts).  Now every ping
        waits at a barrier of ``workers`` parties: no ping ends, so no worker
        is idle, before ``workers`` distinct processes hold one, so each of
        the ``workers`` submits starts a process.

        Parameters
        ----------
        timeout_s : float
            Limit in seconds for all workers to start.

        Returns
        -------
        list of int
            The workers' process ids, ``workers`` distinct ones.

        Raises
        ------
        ServiceError
            A worker failed to start (its initializer raised or it died) or
            not all were ready within ``timeout_s``.
        """
        pings = [self.executor.submit(_worker_ping, timeout_s) for _ in range(self.workers)]  # starts the processes
        done, not_done = wait(pings, timeout=timeout_s + 1.0, return_when=FIRST_EXCEPTION)
        failed = next((p for p in done if p.exception() is not None), None)
        if failed is not None:
            exc = failed.exception()
            if isinstance(exc, threading.BrokenBarrierError):
                raise ServiceError("The analysis workers did not start in time.") from exc
            raise ServiceError("The analysis workers could not start.") from exc
        if not_done:
            self.start_barrier.abort()  # frees the workers waiting at the barrier
            raise ServiceError("The analysis workers did not start in time.") from None
        pids = [p.result() for p in pings]
        if len(set(pids)) != self.workers:  # pragma: no cover - the barrier makes this impossible
            raise ServiceError(f"The analysis workers did not start: {len(set(pids))} of {self.workers} answered.")
        return pids

    def pids(self) -> list[int]:
        """Process ids of the live worker processes (empty in thread mode)."""
        processes = getattr(self.executor, "_processes", None) or {}
        return [p.pid for p in list(processes.values()) if p.pid is not None and p.is_alive()]

    def shutdown(self, wait: bool) -> None:
        self.executor.shutdown(wait=wait)


# ===================================================================== service
class EmotionService:
    """Run analyses off the event loop, with bounded concurrency and timeouts.

    Parameters
    ----------
    predictor : Predictor
        The model to serve (see :meth:`swap_predictor`).  In process mode it
        must pickle (a :class:`~ser_engine.predict.Predictor` does).
    workers : int, keyword-only
        Analyses running at once: worker threads or processes (default 2).
    max_pending : int, keyword-only
        Most requests accepted at once, running or waiting; one more raises
        :class:`~ser_engine.errors.ServiceBusyError` at once (default 64).
    timeout_s : float, keyword-only
        Per-request limit in seconds, waiting included (default 20).
    blas_threads : int or None, keyword-only
        BLAS threads per worker process, or of this process in thread mode,
        set by :meth:`start` (default 1; ``None`` leaves the BLAS library's
        own setting).
    mode : {"thread", "process"}, keyword-only
        Worker threads in this process or worker processes (default
        ``"thread"``; see the module docstring).

    Raises
    ------
    ValueError
        A count or the timeout is not positive, or ``mode`` is unknown.
    TypeError
        ``mode="process"`` with a predictor that does not pickle.

    Examples
    --------
    >>> async with EmotionService(Predictor.load(path), mode="process") as service:   # doctest: +SKIP
    ...     prediction = await service.analyse(voice_note_bytes)
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        workers: int = 2,
        max_pending: int = 64,
        timeout_s: float = 20.0,
        blas_threads: int | None = 1,
        mode: WorkerMode = "thread",
    ) -> None:
        if workers < 1 or max_pending < 1 or timeout_s <= 0:
            raise ValueError("EmotionService: workers, max_pending and timeout_s must be positive")
        if mode not in WORKER_MODES:
            raise ValueError(f"EmotionService: mode must be one of {', '.join(WORKER_MODES)}, got {mode!r}")
        self.workers = workers
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.blas_threads = blas_threads
        self.mode: WorkerMode = mode
        self._blas_limit: object | None = None
        self._generation = 0
        self._pool = _Pool(predictor, mode=mode, workers=workers, blas_threads=blas_threads, generation=0)
        self._retired: list[_Pool] = []
        self._restarts = 0
        self._slots: asyncio.Semaphore | None = None
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()

    # ---------------------------------------------------------- properties
    @property
    def predictor(self) -> Predictor:
        """The model new requests are served with."""
        return self._pool.predictor  # type: ignore[no-any-return]

    @property
    def model_version(self) -> str:
        """Identity of the model new requests are served with (``"v3@sha256:<hex>"``; ``"unknown"`` if not given).

        A finished analysis carries its own :attr:`Prediction.model_version
        <ser_engine.predict.Prediction.model_version>`; store that one, not this.
        """
        return str(getattr(self._pool.predictor, "model_version", "unknown"))

    @property
    def pending(self) -> int:
        """Requests accepted and not finished (running or waiting)."""
        return self._pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def generation(self) -> int:
        """Number of the current worker pool: +1 at every swap and every restart after a crash."""
        return self._pool.generation

    @property
    def restarts(self) -> int:
        """How many times a broken process pool was replaced since the service was made."""
        return self._restarts

    def worker_pids(self) -> list[int]:
        """Process ids of the current pool's live worker processes (empty in thread mode)."""
        return self._pool.pids()

    def swap_predictor(self, predictor: Predictor) -> Predictor:
        """Serve new requests with ``predictor``; return the previous one.

        Requests already started finish on the predictor they started with.
        In process mode a new pool of workers loads ``predictor``; the old
        pool finishes its requests and exits.

        Raises
        ------
        TypeError
            In process mode, if ``predictor`` does not pickle (nothing changes then).
        ServiceClosedError
            The service was closed.
        """
        if self._closed:
            raise ServiceClosedError()
        with self._lock:
            previous = self._pool
            if self.mode == "thread":
                # Same threads, new model: nothing to start or stop.
                self._generation += 1
                self._pool = previous.rebind(predictor, self._generation)
                return previous.predictor  # type: ignore[no-any-return]
            self._pool = self._new_pool(predictor, self._generation + 1)  # TypeError: nothing changed
            self._generation += 1
        self._retire(previous)
        log.info("emotion service: model swapped, worker pool generation %d", self._generation)
        return previous.predictor  # type: ignore[no-any-return]

    def _new_pool(self, predictor: Any, generation: int) -> _Pool:
        pool = _Pool(predictor, mode=self.mode, workers=self.workers, blas_threads=self.blas_threads,
                     generation=generation)  # fmt: skip
        if self.mode == "process":
            # Launch the workers now (forkserver: a few ms) so their start-up overlaps the wait for requests.
            threading.Thread(target=_launch_quietly, args=(pool,), name="ser-pool-launch", daemon=True).start()
        return pool

    def _retire(self, pool: _Pool) -> None:
        """Let ``pool`` finish what it runs, then stop it (without blocking the caller)."""
        self._retired = [p for p in self._retired if _has_live_workers(p)]
        self._retired.append(pool)
        pool.shutdown(wait=False)

    def _replace_broken(self, broken: _Pool) -> None:
        """Start a new pool with the same model if ``broken`` is still the current one."""
        with self._lock:
            if self._pool is not broken or self._closed:
                return
            self._generation += 1
            self._restarts += 1
            log.error(
                "emotion service: a worker process died; restarting the pool (generation %d, restart %d)",
                self._generation, self._restarts,
            )  # fmt: skip
            self._pool = self._new_pool(broken.predictor, self._generation)
        self._retire(broken)

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start and warm up every worker: JIT compilation and caches happen now.

        Each worker loads the in-process decoders and runs one prediction on
        a synthetic 1 s harmonic signal, so a user's first voice note does not
        pay for loading FFmpeg's libraries or building filter banks.  In process mode this waits until every worker
        process has loaded the model and warmed up.

        Raises
        ------
        ServiceClosedError
            The service was closed.
        ServiceError
            A worker process could not start (process mode).
        """
        if self._closed:
            raise ServiceClosedError()
        loop = asyncio.get_running_loop()
        pool = self._pool
        if self.mode == "process":
            pids = await loop.run_in_executor(None, pool.wait_ready, _START_TIMEOUT_S)
            log.info(
                "emotion service ready: %d worker process(es) %s, labels %s",
                self.workers, pids, ", ".join(pool.predictor.labels),
            )  # fmt: skip
            return
        if self.blas_threads is not None and self._blas_limit is None:
            # Tiny matrix products (filter banks x spectrogram) run ~20x slower
            # with a multi-threaded BLAS than with one thread, and the worker
            # threads already use the cores: one BLAS thread each.  This is a
            # process-wide setting (threadpoolctl), made once at start.
            from threadpoolctl import threadpool_limits

            self._blas_limit = threadpool_limits(limits=self.blas_threads, user_api="blas")
        y = _warmup_signal()
        predictor = pool.predictor
        await loop.run_in_executor(pool.executor, _preload_decoders)
        await asyncio.gather(
            *(loop.run_in_executor(pool.executor, predictor.warm_up, y, 16_000) for _ in range(self.workers))
        )
        log.info("emotion service ready: %d worker thread(s), labels %s", self.workers, ", ".join(predictor.labels))

    async def close(self) -> None:
        """Refuse new requests, let running ones finish, stop the workers."""
        self._closed = True
        pools = [self._pool, *self._retired]
        self._retired = []

        def stop() -> None:
            for pool in pools:
                pool.shutdown(wait=True)

        await asyncio.get_running_loop().run_in_executor(None, stop)

    async def __aenter__(self) -> EmotionService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ requests
    #: Whether :meth:`analyse` computes timelines by default (the bot turns it on: long notes get one).
    timelines: bool = False

    async def analyse_timeline(
        self, source: bytes | str | Path, *, speaker_stats: RunningStatsLike | None = None
    ) -> Timeline:
        """The overall emotion and the emotions over time of one recording, in one worker call.

        As :meth:`analyse` (same queue, timeout and errors), but the worker runs
        :func:`ser_engine.timeline.predict_timeline`: one STFT serves the whole
        note and its windows; notes shorter than 8 s get one segment.

        Parameters
        ----------
        source : bytes or path
        speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional, keyword-only

        Returns
        -------
        Timeline
            ``overall`` is what :meth:`analyse` returns (with the feature vector).

        Raises
        ------
        ServiceBusyError, ServiceTimeoutError, ServiceClosedError, ServiceWorkerError, ser_engine.errors.AudioError
            As :meth:`analyse`.
        """
        prediction = await self.analyse(source, speaker_stats=speaker_stats, timeline=True)
        return prediction.timeline  # type: ignore[no-any-return]

    async def analyse(
        self, source: bytes | str | Path, *, speaker_stats: RunningStatsLike | None = None,
        timeline: bool | None = None,
    ) -> Prediction:
        """Decode, featurise and classify one recording.

        Parameters
        ----------
        source : bytes or path
            The encoded audio (e.g. a downloaded attachment) or its path.
        speaker_stats : SpeakerStats or object with ``n``, ``mean``, ``m2``, optional, keyword-only
            The speaker's running feature statistics, for models that
            normalise per speaker (see :meth:`ser_engine.predict.Predictor.predict`);
            sent to the worker as a :class:`~ser_engine.normalization.SpeakerStats`.
        timeline : bool, optional, keyword-only
            Also compute the note's emotions over time, in the same worker call
            from the same STFT, as the prediction's ``timeline``
            (:class:`~ser_engine.timeline.Timeline`); default :attr:`timelines`.

        Returns
        -------
        Prediction
            Label, confidence, class probabilities, analysed duration (s) and
            the raw feature vector.

        Raises
        ------
        ServiceBusyError
            ``max_pending`` requests are already accepted.
        ServiceTimeoutError
            The request took longer than ``timeout_s``, waiting included.
        ServiceClosedError
            The service was closed.
        ServiceWorkerError
            Process mode: the worker process died during this request (the
            service has started new workers).
        ser_engine.errors.AudioError
            The audio was refused (empty, too big, too long, undecodable ...).
        """
        if self._closed:
            raise ServiceClosedError()
        timeline = self.timelines if timeline is None else timeline
        if self._pending >= self.max_pending:
            raise ServiceBusyError()
        if speaker_stats is not None:
            from .normalization import SpeakerStats

            speaker_stats = SpeakerStats.coerce(speaker_stats)  # a plain engine object crosses to the workers
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        slots = self._slots
        self._pending += 1
        deadline = loop.time() + self.timeout_s
        try:
            try:
                await asyncio.wait_for(slots.acquire(), timeout=self.timeout_s)
            except TimeoutError:
                raise ServiceTimeoutError(self.timeout_s) from None
            pool = self._pool
            try:
                try:
                    future = pool.submit(source, speaker_stats, timeline)
                except BrokenProcessPool:  # broken by an earlier request: this one has lost nothing
                    self._replace_broken(pool)
                    pool = self._pool
                    future = pool.submit(source, speaker_stats, timeline)
            except (RuntimeError, BrokenProcessPool):  # executor shut down meanwhile
                slots.release()
                raise ServiceClosedError() from None

            def _release(_: object) -> None:
                # The slot frees when the worker is done, not when the caller
                # stops waiting: a timed-out analysis still occupies a worker.
                try:
                    loop.call_soon_threadsafe(slots.release)
                except RuntimeError:  # loop already closed
                    pass

            future.add_done_callback(_release)
            try:
                result = await asyncio.wait_for(
                    asyncio.wrap_future(future), timeout=max(0.0, deadline - loop.time())
                )
            except TimeoutError:
                raise ServiceTimeoutError(self.timeout_s) from None
            except BrokenProcessPool as exc:
                self._replace_broken(pool)
                raise ServiceWorkerError() from exc
            if isinstance(result, _RemoteError):
                raise result.rebuild()
            return result  # type: ignore[no-any-return]
        finally:
            self._pending -= 1


def _launch_quietly(pool: _Pool) -> None:
    """Start a new pool's worker processes (a failure shows up on its first request instead)."""
    try:
        pool.wait_ready(_START_TIMEOUT_S)
    except (ServiceError, BrokenProcessPool, RuntimeError) as exc:
        log.warning("emotion service: worker pool generation %d did not start cleanly: %s", pool.generation, exc)


def _has_live_workers(pool: _Pool) -> bool:
    return bool(pool.pids())


# ================================================================= forkserver
def _importing_in_forkserver() -> bool:
    """Whether this module is being imported by the forkserver's preload (see :data:`_FORKSERVER_PRELOAD`)."""
    from multiprocessing import forkserver

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


def _prepare_forkserver() -> None:
    """Warm the feature extractor in the forkserver, then freeze its objects for the forks.

    Feature extraction warmed once here (cached filter banks and windows of
    the default :class:`~ser_engine.features.FeatureConfig`, PyAV) is inherited by
    every worker process the forkserver forks, so a new pool (after a model
    swap or a crash) starts fast and the workers share that memory.
    :func:`gc.freeze` keeps the workers' garbage collector from touching,
    and so copying, every object inherited from here (the pattern the
    :mod:`gc` documentation gives for pre-forking servers).  A failure only
    costs the workers their own warm-up, which they do anyway.
    """
    try:
        from .features import FeatureConfig, extract_features

        _preload_decoders()
        extract_features(y=_warmup_signal(), sr=16_000, config=FeatureConfig())
    except Exception as exc:  # pragma: no cover - the workers warm up themselves
        log.debug("forkserver warm-up skipped: %s", exc)
    gc.collect()
    gc.freeze()


if _importing_in_forkserver():
    _prepare_forkserver()

