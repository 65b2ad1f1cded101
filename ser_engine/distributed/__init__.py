"""Analysis workers on other processes or machines, through a Redis broker (:mod:`arq`).

``ser worker --broker redis://HOST:6379/0 [--concurrency N]`` runs
:func:`~ser_engine.distributed.worker.run_worker`: an :class:`arq.worker.Worker`
whose one task, ``analyse``, hands the audio to a local
:class:`~ser_engine.service.EmotionService` of ``N`` worker processes.  A front
end (the bot, when ``SER_BROKER_URL`` is set) uses
:class:`~ser_engine.distributed.client.BrokerService`, which has the
:class:`~ser_engine.service.EmotionService` interface the front end already
uses (``analyse``, ``predictor``, ``swap_predictor``, ``start``, ``close``).

Why arq (measured in ``benchmarks/broker_hop.py``, README "Scaling out"): it is
asyncio-native on both ends (the bot awaits a job without a thread per
request), its job ids make enqueueing idempotent (the Discord message id is the
job id: the same note is never analysed into two replies), a job whose worker
died is taken again once its in-progress key expires (``job_timeout + 10 s``,
here 20 s, not an hour), and Redis is also what the shards share for cool-downs
and what carries the model-version announcements (pub/sub).

Wire format: MessagePack (:mod:`ser_engine.distributed.codec`), never pickle;
the audio travels inside the job (a Redis key that expires), never to a disk
on the worker.

Channels and keys (``<queue>`` defaults to :data:`DEFAULT_QUEUE`):

``<queue>``
    arq's job queue (a sorted set) and its ``arq:job:<id>``, ``arq:in-progress:<id>``,
    ``arq:result:<id>`` keys.
``ser:done:<client id>``
    pub/sub: a worker publishes the job id when its result is stored, so a
    waiting client fetches it at once instead of polling.
:data:`MODEL_CHANNEL`
    pub/sub: the active model's ``model_version`` (``"v3@sha256:<hex>"``); every
    worker loads that registry version and swaps to it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_QUEUE", "MODEL_CHANNEL", "DONE_CHANNEL_PREFIX", "JOB_TIMEOUT_S", "REDELIVERY_S"]

#: arq queue of the analyses.
DEFAULT_QUEUE: Final[str] = "ser:analyses"
#: pub/sub channel of model-version changes (payload: ``Prediction.model_version`` of the new model).
MODEL_CHANNEL: Final[str] = "ser:model"
#: prefix of each client's "result stored" channel.
DONE_CHANNEL_PREFIX: Final[str] = "ser:done:"
#: seconds one job may run on a worker (arq ``job_timeout``); the worker's service times out first.
JOB_TIMEOUT_S: Final[float] = 10.0
#: seconds after which a job whose worker died is delivered again: arq's in-progress key lives
#: ``job_timeout + 10 s`` (``arq.worker.Worker.in_progress_timeout_s``).
REDELIVERY_S: Final[float] = JOB_TIMEOUT_S + 10.0
