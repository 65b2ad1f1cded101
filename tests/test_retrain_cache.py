"""Per-file feature cache: same vectors as direct extraction, reused by content hash, keyed by configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ser_engine.cache import FeatureCache, config_key
from ser_engine.features import FeatureConfig, extract_many
from ser_engine.retrain import progress_bar


def test_cache_matches_extraction_and_hits_by_content(fixture_clips: list[Path], tmp_path: Path) -> None:
    clips = fixture_clips[:3]
    seen: list[tuple[int, int]] = []
    cache = FeatureCache(tmp_path / "c")
    X = cache.featurize(clips, progress=lambda d, t: seen.append((d, t)))
    assert np.allclose(X, extract_many(clips, config=FeatureConfig()), atol=1e-6)
    assert (cache.hits, cache.misses) == (0, 3) and seen[0] == (0, 3) and seen[-1] == (3, 3)
    renamed = tmp_path / "renamed.flac"
    shutil.copyfile(clips[0], renamed)  # same bytes, other name: a hit
    again = FeatureCache(tmp_path / "c")
    X2 = again.featurize([renamed, *clips[1:]])
    assert np.array_equal(X2, X) and (again.hits, again.misses) == (3, 0)
    tutorial = FeatureCache(tmp_path / "c", FeatureConfig.tutorial())
    assert config_key(FeatureConfig.tutorial()) != config_key(FeatureConfig())
    assert tutorial.featurize(clips[:1]).shape == (1, FeatureConfig.tutorial().n_features) and tutorial.misses == 1


def test_progress_bar() -> None:
    assert progress_bar(0.0, 10) == "[----------]   0%"
    assert progress_bar(0.5, 10) == "[#####-----]  50%"
    assert progress_bar(2.0, 10) == "[##########] 100%"
