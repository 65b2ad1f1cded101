"""What travels through the broker: jobs, results and errors as MessagePack, never pickle.

A worker must not unpickle bytes that anyone with access to the broker could
have written, so :mod:`arq`'s default :mod:`pickle` serialiser is replaced by
:func:`dumps`/:func:`loads` (MessagePack: dicts, lists, strings, numbers and
raw bytes only).  Numpy arrays cross as ``{"__nd__": dtype, "shape": ..., "data": bytes}``
(float32/float64/int64 only); a :class:`~ser_engine.predict.Prediction` as
:func:`prediction_to_wire`; an engine error as :func:`error_to_wire`, rebuilt
only as a subclass of :class:`~ser_engine.errors.SERError` defined in
:mod:`ser_engine.errors`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final

import msgpack
import numpy as np

from .. import errors as _errors
from ..errors import SERError

__all__ = [
    "dumps", "loads", "prediction_to_wire", "prediction_from_wire", "stats_to_wire", "stats_from_wire",
    "error_to_wire", "error_from_wire",
]  # fmt: skip

_DTYPES: Final[frozenset[str]] = frozenset({"float32", "float64", "int64"})


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _DTYPES:
            raise TypeError(f"codec: arrays of {obj.dtype} do not cross the broker")
        return {"__nd__": obj.dtype.name, "shape": list(obj.shape), "data": np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _dt.datetime):  # arq's job metadata (enqueue and start times)
        return {"__dt__": obj.timestamp()}
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, BaseException):  # arq's own failures (job timeout, cancelled): their name and text only
        return {"__exc__": type(obj).__name__, "message": str(obj)[:500]}
    raise TypeError(f"codec: {type(obj).__name__} does not cross the broker")


def _hook(obj: dict[Any, Any]) -> Any:
    if "__nd__" in obj:
        dtype = str(obj["__nd__"])
        if dtype not in _DTYPES:
            raise ValueError(f"codec: arrays of {dtype} are not accepted")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(obj["shape"]).copy()
    if "__dt__" in obj and len(obj) == 1:
        return _dt.datetime.fromtimestamp(float(obj["__dt__"]), tz=_dt.timezone.utc)
    return obj


def dumps(obj: Any) -> bytes:
    """MessagePack of ``obj`` (dicts, lists, str, bytes, numbers, numpy arrays, datetimes).

    Raises
    ------
    TypeError
        ``obj`` holds anything else (an exception object, a class, ...).
    """
    return msgpack.packb(obj, default=_default, use_bin_type=True)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    """The object :func:`dumps` wrote.  Never executes code from ``data``."""
    return msgpack.unpackb(data, object_hook=_hook, raw=False, strict_map_key=False)


# ---------------------------------------------------------------- predictions
def prediction_to_wire(prediction: Any) -> dict[str, Any]:
    """A :class:`~ser_engine.predict.Prediction` as plain data (features included, shape (n_features,))."""
    wire = prediction.to_dict()
    wire["features"] = None if prediction.features is None else np.asarray(prediction.features)
    return wire  # type: ignore[no-any-return]


def prediction_from_wire(wire: dict[str, Any]) -> Any:
    """The :class:`~ser_engine.predict.Prediction` of :func:`prediction_to_wire`."""
    from ..predict import Prediction

    return Prediction(
        label=str(wire["label"]), confidence=float(wire["confidence"]),
        probabilities={str(k): float(v) for k, v in wire["probabilities"].items()},
        duration_s=float(wire["duration_s"]), unsure=bool(wire.get("unsure", False)),
        top_two=tuple(wire.get("top_two", ())), normalization=str(wire.get("normalization", "none")),
        features=wire.get("features"), model_version=str(wire.get("model_version", "unknown")),
    )  # fmt: skip


def stats_to_wire(stats: Any) -> dict[str, Any] | None:
    """A speaker's running statistics (``n``, ``mean``, ``m2``; shape (n_features,)) as plain data."""
    if stats is None:
        return None
    return {"n": int(stats.n), "mean": np.asarray(stats.mean, dtype=np.float64), "m2": np.asarray(stats.m2, dtype=np.float64)}


def stats_from_wire(wire: dict[str, Any] | None) -> Any:
    """The :class:`~ser_engine.normalization.SpeakerStats` of :func:`stats_to_wire` (``None`` stays ``None``)."""
    if wire is None:
        return None
    from ..normalization import SpeakerStats

    return SpeakerStats(n=int(wire["n"]), mean=np.asarray(wire["mean"]), m2=np.asarray(wire["m2"]))


# --------------------------------------------------------------------- errors
def error_to_wire(exc: SERError) -> dict[str, Any]:
    """An engine error as plain data: class name, ``args`` and scalar attributes (``message``, limits ...)."""
    state = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool)) or v is None}
    return {"error": type(exc).__name__, "args": [str(a) for a in exc.args], "state": state}


def error_from_wire(wire: dict[str, Any]) -> SERError:
    """The engine error of :func:`error_to_wire`, rebuilt without calling ``__init__``.

    A class name that is not a :class:`~ser_engine.errors.SERError` of
    :mod:`ser_engine.errors` becomes a plain :class:`SERError` with a generic
    message (nothing else is ever instantiated from broker data).
    """
    cls = getattr(_errors, str(wire.get("error", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, SERError)):
        return SERError("The analysis failed; please try again.")
    exc = cls.__new__(cls)
    exc.args = tuple(wire.get("args", ()))
    exc.__dict__.update(wire.get("state", {}))
    if not isinstance(getattr(exc, "message", None), str):
        exc.message = exc.args[0] if exc.args else "The analysis failed."
    return exc
