"""The asynchronous analysis service: the one object a front end talks to.

Decoding, feature extraction and prediction are CPU work; an event loop
(the Discord bot's) must never run them.  :class:`EmotionService` runs each
analysis in a thread pool (NumPy, libsndfile, soxr and the BLAS kernels
release the GIL for most of the work), bounds how many requests may wait,
and gives every request a timeout.  The model can be swapped between
requests; a request in flight finishes on the model it started with.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from .errors import ServiceBusyError, ServiceClosedError, ServiceTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Prediction, Predictor

__all__ = ["EmotionService"]

log = logging.getLogger(__name__)


class EmotionService:
    """Run analyses off the event loop, with bounded concurrency and timeouts.

    Parameters
    ----------
    predictor : Predictor
        The model to serve (see :meth:`swap_predictor`).
    workers : int, keyword-only
        Worker threads, i.e. analyses running at once (default 2).
    max_pending : int, keyword-only
        Most requests accepted at once, running or waiting; one more raises
        :class:`~ser_engine.errors.ServiceBusyError` at once (default 64).
    timeout_s : float, keyword-only
        Per-request limit in seconds, waiting included (default 20).
    blas_threads : int or None, keyword-only
        BLAS threads of the process, set by :meth:`start` (default 1;
        ``None`` leaves the BLAS library's own setting).

    Examples
    --------
    >>> async with EmotionService(Predictor.load(path)) as service:   # doctest: +SKIP
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
    ) -> None:
        if workers < 1 or max_pending < 1 or timeout_s <= 0:
            raise ValueError("EmotionService: workers, max_pending and timeout_s must be positive")
        self._predictor = predictor
        self.workers = workers
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.blas_threads = blas_threads
        self._blas_limit: object | None = None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-worker")
        self._slots: asyncio.Semaphore | None = None
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()

    # ---------------------------------------------------------- properties
    @property
    def predictor(self) -> Predictor:
        """The model new requests are served with."""
        return self._predictor

    @property
    def pending(self) -> int:
        """Requests accepted and not finished (running or waiting)."""
        return self._pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def swap_predictor(self, predictor: Predictor) -> Predictor:
        """Serve new requests with ``predictor``; return the previous one.

        Requests already started finish on the predictor they started with.
        """
        with self._lock:
            previous, self._predictor = self._predictor, predictor
        return previous

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Warm up every worker thread: JIT compilation and caches happen now.

        Runs one prediction per worker on a synthetic 1 s harmonic signal so a
        user's first voice note does not pay for numba compilation or filter
        bank construction.
        """
        if self._closed:
            raise ServiceClosedError()
        if self.blas_threads is not None:
            # Tiny matrix products (filter banks x spectrogram) run ~20x slower
            # with a multi-threaded BLAS than with one thread, and the worker
            # threads already use the cores: one BLAS thread each.  This is a
            # process-wide setting (threadpoolctl), made once at start.
            from threadpoolctl import threadpool_limits

            self._blas_limit = threadpool_limits(limits=self.blas_threads, user_api="blas")
        sr = 16_000
        t = np.arange(sr, dtype=np.float32) / sr
        f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 1.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        y = (0.1 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)
        loop = asyncio.get_running_loop()
        predictor = self._predictor
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, predictor.predict_signal, y, sr) for _ in range(self.workers))
        )
        log.info("emotion service ready: %d worker(s), labels %s", self.workers, ", ".join(predictor.labels))

    async def close(self) -> None:
        """Refuse new requests, let running ones finish, stop the threads."""
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def __aenter__(self) -> EmotionService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ requests
    async def analyse(self, source: bytes | str | Path) -> Prediction:
        """Decode, featurise and classify one recording.

        Parameters
        ----------
        source : bytes or path
            The encoded audio (e.g. a downloaded attachment) or its path.

        Returns
        -------
        Prediction
            Label, confidence, class probabilities and analysed duration (s).

        Raises
        ------
        ServiceBusyError
            ``max_pending`` requests are already accepted.
        ServiceTimeoutError
            The request took longer than ``timeout_s``, waiting included.
        ServiceClosedError
            The service was closed.
        ser_engine.errors.AudioError
            The audio was refused (empty, too big, too long, undecodable ...).
        """
        if self._closed:
            raise ServiceClosedError()
        if self._pending >= self.max_pending:
            raise ServiceBusyError()
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
            predictor = self._predictor
            try:
                future = self._executor.submit(predictor.predict, source)
            except RuntimeError:  # executor shut down meanwhile
                slots.release()
                raise ServiceClosedError() from None

            def _release(_: object) -> None:
                # The slot frees when the thread is done, not when the caller
                # stops waiting: a timed-out analysis still occupies a worker.
                try:
                    loop.call_soon_threadsafe(slots.release)
                except RuntimeError:  # loop already closed
                    pass

            future.add_done_callback(_release)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ServiceTimeoutError(self.timeout_s) from None
        finally:
            self._pending -= 1
