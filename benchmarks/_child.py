"""Subprocess entry points of the cold-start case: ``python -m benchmarks._child KIND ARGS``.

Each prints one JSON line of wall-clock milestones (``time.time()``, seconds
since the epoch, so the parent can subtract its own spawn time) and exits.

``cold-engine MODEL NOTE``
    import the engine, ``Predictor.load``, ``EmotionService.start`` (warm-up),
    analyse the note twice.
``cold-reference CACHE NOTE``
    import the recipe's libraries, load the cached reference MLP, predict the
    note twice.
"""

from __future__ import annotations

import time

T_START = time.time()  # after interpreter start-up and `benchmarks/__init__` (which imports nothing)

import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def _engine(model: str, note_path: str) -> dict[str, Any]:
    marks: dict[str, Any] = {"t_main": T_START}
    from ser_engine.predict import Predictor
    from ser_engine.service import EmotionService

    marks["t_imported"] = time.time()
    predictor = Predictor.load(model)
    marks["t_loaded"] = time.time()
    data = Path(note_path).read_bytes()

    async def main() -> None:
        async with EmotionService(predictor, workers=2) as service:
            marks["t_ready"] = time.time()
            first = await service.analyse(data)
            marks["t_first"] = time.time()
            await service.analyse(data)
            marks["t_second"] = time.time()
            marks["label"] = first.label

    asyncio.run(main())
    return marks


def _reference(cache: str, note_path: str) -> dict[str, Any]:
    marks: dict[str, Any] = {"t_main": T_START}
    import joblib
    import librosa  # noqa: F401  (the recipe imports these at the top of its script)
    import librosa.feature  # noqa: F401
    import pydub  # noqa: F401
    import sklearn.neural_network  # noqa: F401

    from .reference import ReferencePredictor

    marks["t_imported"] = time.time()
    payload = joblib.load(cache)
    predictor = ReferencePredictor(payload["model"], payload["labels"])
    marks["t_loaded"] = time.time()
    marks["t_ready"] = marks["t_loaded"]  # the recipe has no warm-up
    data = Path(note_path).read_bytes()
    first = predictor.predict(data)
    marks["t_first"] = time.time()
    predictor.predict(data)
    marks["t_second"] = time.time()
    marks["label"] = first.label
    return marks


def main(argv: list[str]) -> int:
    """Run one child kind; print its milestones as one JSON line.

    Parameters
    ----------
    argv : list of str
        ``[kind, path, note]``.

    Returns
    -------
    int
        0, or 2 for a bad command line.
    """
    if len(argv) != 3 or argv[0] not in ("cold-engine", "cold-reference"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, path, note = argv
    marks = _engine(path, note) if kind == "cold-engine" else _reference(path, note)
    print(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
