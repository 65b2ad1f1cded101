"""A small bounded in-memory store of recent clips' feature vectors (LRU).

The feedback buttons under an answer need the clip's feature vector when the
speaker clicks them, possibly minutes later. Keeping the vector from the
analysis avoids downloading and decoding the clip again; the store is
bounded (least recently used entries are dropped) and lives only in memory,
so after a restart the vector is recomputed from the voice note itself.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

import numpy as np

__all__ = ["FeatureMemory", "RememberedFeatures"]


@dataclass(frozen=True)
class RememberedFeatures:
    """A clip's raw feature vector and the feature configuration that produced it.

    Attributes
    ----------
    config_key : str
        :func:`ser_engine.cache.config_key` of the model's ``FeatureConfig``.
    features : np.ndarray, shape (n_features,), float32
        Raw (not normalised) features, as :attr:`ser_engine.predict.Prediction.features`.
    """

    config_key: str
    features: np.ndarray


class FeatureMemory:
    """Least-recently-used map of clip references to :class:`RememberedFeatures`.

    Parameters
    ----------
    capacity : int, default 512
        Most entries kept (a 1,298-feature float32 vector is about 5 KiB, so
        the default holds at most about 2.6 MiB).

    Raises
    ------
    ValueError
        If ``capacity < 1``.
    """

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError(f"FeatureMemory: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: OrderedDict[Hashable, RememberedFeatures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, config_key: str, features: np.ndarray) -> None:
        """Remember ``features`` (shape ``(n_features,)``) under ``key``, dropping the oldest entry when full."""
        vec = np.array(features, dtype=np.float32, copy=True).ravel()
        self._items[key] = RememberedFeatures(config_key, vec)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, key: Hashable) -> RememberedFeatures | None:
        """The entry under ``key`` (marked as recently used), or ``None``."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def clear(self) -> None:
        """Forget everything (as a restart would)."""
        self._items.clear()
