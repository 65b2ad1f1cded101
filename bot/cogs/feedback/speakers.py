"""Speaker normalisation in the bot: each user's running feature statistics.

Only a bot knows who is speaking. Models trained on speaker-normalised
features (``bundle.normalizer``, see :mod:`ser_engine.normalization`)
standardise a clip with its speaker's own feature mean and standard
deviation; the bot keeps, per Discord user and feature configuration, the
running count, mean and sum of squared deviations (Welford) of the raw
feature vectors of their earlier voice notes -- only these statistics, never
the audio nor the vectors -- and deletes them with the user's data. Below
the model's ``min_clips`` the predictor uses the training speakers'
statistics instead.

The speaker's statistics travel with the request to the service's workers
(threads or processes), which decode, extract the features, normalise them
with those statistics and classify. The event loop only awaits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from bot.storage import StoreError, StoreUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from ser_engine.predict import Prediction, Predictor
    from ser_engine.service import EmotionService

    from bot.storage import Store

__all__ = ["analyse_for_speaker", "feature_key"]

log = logging.getLogger(__name__)


def feature_key(predictor: Predictor) -> str:
    """:func:`ser_engine.cache.config_key` of the predictor's ``FeatureConfig``.

    Speaker statistics and feedback are kept per key, so vectors of different
    feature configurations never mix.
    """
    from ser_engine.cache import config_key

    return config_key(predictor.bundle.feature_config)


async def analyse_for_speaker(
    service: EmotionService,
    store: Store | None,
    data: bytes,
    *,
    speaker_id: int | None,
    learn: bool,
) -> tuple[Prediction, str]:
    """Analyse a clip with its speaker's running statistics, then add the clip to them.

    Parameters
    ----------
    service : EmotionService
        The analysis service (decoding, features and classification run in its workers).
    store : Store or None
        Where the statistics live; ``None`` or unavailable: global (fallback)
        statistics are used and nothing is updated.
    data : bytes
        The encoded clip.
    speaker_id : int or None
        The speaker; ``None`` (unknown speaker): global statistics, no update.
    learn : bool
        Whether to add this clip's raw feature vector to the speaker's
        statistics (the store refuses it for users who opted out).

    Returns
    -------
    prediction : Prediction
        With ``normalization`` ``"speaker"`` when the speaker's own
        statistics were used.
    config_key : str
        Feature configuration key of ``prediction.features``.

    Raises
    ------
    ser_engine.errors.AudioError, ser_engine.errors.ServiceError
        As :meth:`ser_engine.service.EmotionService.analyse`.
    """
    predictor = service.predictor
    key = feature_key(predictor)
    stats = None
    if store is not None and speaker_id is not None and predictor.min_clips is not None:
        try:
            stats = await store.get_speaker_stats(speaker_id, key)
        except StoreError as exc:
            if not isinstance(exc, StoreUnavailableError):
                log.error("reading speaker statistics failed; using global statistics", exc_info=exc)
            stats = None
    # The statistics travel with the request: the worker (thread or process) normalises with them
    # (statistics of another feature configuration, after a model swap, are dropped there).
    prediction = await service.analyse(data, speaker_stats=stats)
    features = prediction.features
    if service.predictor is not predictor and feature_key(service.predictor) != key:
        # The model changed meanwhile: the service may have used the new one; the
        # vector's configuration is unknown, so do not learn from it.
        return prediction, feature_key(service.predictor) if features is None else _key_for(service, features, key)
    if features is None:
        return prediction, key
    if learn and store is not None and speaker_id is not None and np.all(np.isfinite(features)):
        try:
            await store.update_speaker_stats(speaker_id, key, features)
        except StoreUnavailableError as exc:
            log.warning("speaker statistics not updated: %s", exc.message)
        except (StoreError, ValueError):
            log.exception("speaker statistics not updated")
    return prediction, key


def _key_for(service: EmotionService, features: np.ndarray, old_key: str) -> str:
    """The key of whichever model's features ``features`` has the length of (the new one when both do)."""
    new = service.predictor
    if features.size == new.bundle.feature_config.n_features:
        return feature_key(new)
    return old_key
