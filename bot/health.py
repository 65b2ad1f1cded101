"""Health, readiness and Prometheus metrics over HTTP, served in the bot's own event loop.

With ``SER_HTTP_PORT`` set, :class:`HealthServer` (aiohttp) answers:

``/healthz``
    200 while the bot is connected to Discord's gateway and its analysis
    service is live (open, with at least one live worker), else 503. The body
    is a small JSON object saying which part failed. For a container's
    ``HEALTHCHECK`` or a liveness probe.
``/readyz``
    200 once start-up finished (model loaded, cogs loaded, READY received) and
    while healthy, else 503; also reports whether the database is reachable
    (not a condition: the bot answers voice notes without it).
``/metrics``
    Prometheus text format (``prometheus-client``), see :class:`BotMetrics`.

:class:`BotMetrics` always exists on the bot (``bot.metrics``), so counting
costs nothing when nobody scrapes; it has its own registry, so several bots
in one process (tests) never share counters.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from .client import SERBot

__all__ = ["BotMetrics", "HealthServer", "HealthPortError", "health_status", "ANALYSIS_BUCKETS_S"]

log = logging.getLogger(__name__)

#: Bucket bounds (seconds) of ``ser_analysis_seconds``: a 5 s voice note takes 20-40 ms
#: (README, benchmarks), a busy queue or a long note up to ``SER_REQUEST_TIMEOUT_S`` (30 s).
ANALYSIS_BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _live_workers(bot: SERBot) -> int:
    """Workers able to analyse now: live worker processes, or the worker threads of an open service."""
    service = bot.service
    if service is None or service.closed:
        return 0
    if service.mode == "process":
        return len(service.worker_pids())
    return int(service.workers)


def _gateway_connected(bot: SERBot) -> bool:
    """READY received, not closed, and the gateway websocket open (the first heartbeat may not be answered yet)."""
    ws = getattr(bot, "ws", None)
    return bool(bot.is_ready() and not bot.is_closed() and ws is not None and getattr(ws, "open", False))


def health_status(bot: SERBot) -> dict[str, Any]:
    """What ``/healthz`` and ``/readyz`` report.

    Returns
    -------
    dict
        ``gateway`` (connected to Discord's gateway), ``service`` (the
        analysis service open with ``workers`` live workers), ``ready``
        (start-up finished and READY received), ``database`` (the store has
        migrated and is not marked down), ``healthy`` (gateway and service).
    """
    workers = _live_workers(bot)
    gateway = _gateway_connected(bot)
    store = bot.store
    database = bool(store is not None and store.available)
    return {
        "healthy": gateway and workers > 0,
        "gateway": gateway,
        "service": workers > 0,
        "workers": workers,
        "ready": bool(bot.is_ready() and getattr(bot, "setup_done", False)),
        "database": database,
    }


class _LiveCollector(Collector):
    """Values read from the running bot at scrape time (nothing to keep in step)."""

    def __init__(self, bot: SERBot) -> None:
        self.bot = bot

    def collect(self) -> Iterator[Any]:
        bot = self.bot
        service = bot.service
        queue = GaugeMetricFamily("ser_queue_depth", "Analyses accepted and not finished (running or waiting).")
        queue.add_metric([], float(service.pending) if service is not None else 0.0)
        yield queue
        workers = GaugeMetricFamily("ser_live_workers", "Analysis workers able to take work now.")
        workers.add_metric([], float(_live_workers(bot)))
        yield workers
        model = InfoMetricFamily("ser_model", "The model version new analyses are served with.")
        model.add_metric([], {"version": service.model_version if service is not None else "none"})
        yield model
        latency = GaugeMetricFamily("ser_gateway_latency_seconds",
                                    "Time between the gateway's last heartbeat and its acknowledgement (NaN: none).")  # fmt: skip
        value = bot.latency
        latency.add_metric([], float(value) if math.isfinite(value) else math.nan)
        yield latency
        connected = GaugeMetricFamily("ser_gateway_connected", "1 while connected to Discord's gateway.")
        connected.add_metric([], 1.0 if _gateway_connected(bot) else 0.0)
        yield connected
        errors = CounterMetricFamily("ser_database_errors", "Database errors (unreachable, failed statements).")
        errors.add_metric([], float(getattr(bot.store, "errors", 0)))
        yield errors


class BotMetrics:
    """The bot's Prometheus metrics, in a registry of its own.

    Metrics
    -------
    ser_voice_notes_total{outcome, reason}
        Voice notes by outcome: ``answered``; ``refused`` with its reason
        (``cooldown``, ``service_busy``, ``audio_too_large``, ``opted_out``,
        ...); ``failed`` (an unexpected error, answered with an error id);
        ``skipped`` with its reason (``channel_off``, ``opted_out``,
        ``no_permission``, ``storage_unavailable``).
    ser_analysis_seconds
        Histogram of one analysis in the service (waiting for a worker
        included, download excluded), seconds.
    ser_queue_depth, ser_live_workers, ser_model_info{version},
    ser_gateway_latency_seconds, ser_gateway_connected, ser_database_errors_total
        Read from the bot at scrape time.

    Parameters
    ----------
    bot : SERBot
        The bot whose state is exported.
    """

    def __init__(self, bot: SERBot) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.voice_notes = Counter("ser_voice_notes", "Voice notes by outcome and reason.", ["outcome", "reason"],
                                   registry=self.registry)  # fmt: skip
        self.analysis_seconds = Histogram("ser_analysis_seconds", "Duration of one analysis in the service (s).",
                                          buckets=ANALYSIS_BUCKETS_S, registry=self.registry)  # fmt: skip
        self.registry.register(_LiveCollector(bot))

    def count_outcome(self, outcome: Any) -> None:
        """Count one :class:`bot.cogs.emotion.cog.VoiceNoteOutcome`."""
        status, reason = outcome.status, outcome.reason or ""
        if status == "refused" and reason == "error":
            status = "failed"
        self.voice_notes.labels(outcome=status, reason=reason).inc()

    def observe_analysis(self, seconds: float) -> None:
        """Record one analysis's duration in seconds."""
        self.analysis_seconds.observe(max(0.0, float(seconds)))

    def render(self) -> bytes:
        """The metrics in Prometheus text exposition format."""
        return generate_latest(self.registry)


class HealthPortError(Exception):
    """``SER_HTTP_PORT`` cannot be listened on (in use, or not allowed); ``str()`` is one line naming it."""


class HealthServer:
    """The aiohttp server of ``/healthz``, ``/readyz`` and ``/metrics``, in the bot's event loop.

    Parameters
    ----------
    bot : SERBot
        The bot to report on.
    host : str
        Address to listen on (``SER_HTTP_HOST``).
    port : int
        TCP port (``SER_HTTP_PORT``; 0: any free port, see :attr:`port`).
    """

    def __init__(self, bot: SERBot, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; :attr:`port` is then the bound port.

        Raises
        ------
        HealthPortError
            The port cannot be bound (in use, or not allowed).
        """
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise HealthPortError(f"SER_HTTP_PORT: cannot listen on {self.host}:{self.port} ({exc.strerror})") from None
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - aiohttp exposes no bound port
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    async def close(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @staticmethod
    def _json(body: dict[str, Any], ok: bool) -> web.Response:
        from aiohttp import web

        return web.Response(status=200 if ok else 503, text=json.dumps(body), content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        status = health_status(self.bot)
        return self._json(status, status["healthy"])

    async def _readyz(self, request: web.Request) -> web.Response:
        status = health_status(self.bot)
        return self._json(status, status["healthy"] and status["ready"])

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = self.bot.metrics.render()  # a few hundred bytes: fine on the event loop
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
