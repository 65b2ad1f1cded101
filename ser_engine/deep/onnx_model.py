"""The CRNN at inference: ONNX with onnxruntime, no PyTorch.

A saved CRNN is two files: ``<name>.onnx`` (the network, from
:func:`ser_engine.deep.train.export_onnx`) and ``<name>.json`` beside it,
the sidecar: ``kind: "crnn"``, the labels, the :class:`FrameConfig`, the
training crop length, the temperature, metadata (recipe, metrics) and the
SHA-256 of the ONNX bytes.  :func:`load_crnn` checks that hash before the
bytes reach onnxruntime, as :func:`ser_engine.bundle.load_bundle` does
before unpickling.  ONNX is a protobuf graph, not a pickle: loading one runs
no Python code.

:class:`CRNNPredictor` answers like :class:`ser_engine.predict.Predictor`
(the same :class:`~ser_engine.predict.Prediction`, the same speech gate and
audio limits); it has no speaker normalisation (each clip's log-mel bands
are mean-normalised on their own), so ``speaker_stats`` is accepted and
ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..audio import TARGET_SR, AudioLimits, AudioSource, load_audio
from ..bundle import atomic_write
from ..errors import ModelCompatibilityError, ModelIntegrityError, ModelNotFoundError
from ..predict import Prediction, apply_temperature
from .frames import FrameConfig, log_mel_frames

__all__ = ["CRNN_FORMAT", "CRNNModel", "CRNNPredictor", "crnn_from_network", "is_crnn_path", "load_crnn", "save_crnn"]

#: Layout version of the sidecar of a saved CRNN.
CRNN_FORMAT: Final[int] = 1


def _tile_to(frames: np.ndarray, n_frames: int) -> np.ndarray:
    # Same as ser_engine.deep.train.tile_to, without importing that module's optional dependencies' users.
    if frames.shape[0] >= n_frames:
        return frames
    reps = -(-n_frames // max(frames.shape[0], 1))
    return np.tile(frames, (reps, 1))[:n_frames]


@dataclass
class CRNNModel:
    """A CRNN exported to ONNX, ready to score log-mel frames.

    Parameters
    ----------
    onnx_bytes : bytes
        Serialised ONNX model: input ``frames`` (batch, time, n_mels) float32, output ``logits`` (batch, n_labels).
    labels : tuple of str
        Class names, index = output column.
    frame_config : FrameConfig
        How its input frames are computed.
    crop_frames : int
        Training crop length; shorter clips are tiled to it.
    temperature : float, default 1.0
        Divides the logits before the softmax.
    metadata : dict
        Provenance (recipe, CRNN configuration, metrics, training corpora).

    Attributes
    ----------
    sha256 : str
        Hex SHA-256 of ``onnx_bytes``.
    name : str
        File stem once saved or loaded (``"unsaved"`` before).
    """

    onnx_bytes: bytes
    labels: tuple[str, ...]
    frame_config: FrameConfig
    crop_frames: int
    temperature: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "unsaved"

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.sha256 = hashlib.sha256(self.onnx_bytes).hexdigest()
        self._session: Any = None

    @property
    def model_version(self) -> str:
        """``"<name>@sha256:<first 12 hex>"``: the identity written into predictions."""
        return f"{self.name[:48]}@sha256:{self.sha256[:12]}"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])
        return self._session.run(None, {"frames": x})[0]

    def predict_proba(self, frames: Sequence[np.ndarray], *, calibrated: bool = True) -> np.ndarray:
        """Probabilities of clips given as log-mel frames, one clip per ONNX run.

        Parameters
        ----------
        frames : sequence of np.ndarray, each shape (n_frames_i, n_mels)
            From :func:`ser_engine.deep.frames.log_mel_frames` with :attr:`frame_config`.
        calibrated : bool, default True
            Apply :attr:`temperature`.

        Returns
        -------
        np.ndarray, shape (n_clips, len(labels)), float64
            Rows sum to 1.

        Raises
        ------
        ValueError
            If a clip's frames do not have ``frame_config.n_mels`` columns.
        """
        rows = []
        for x in frames:
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != self.frame_config.n_mels or x.shape[0] < 1:
                raise ValueError(f"CRNNModel.predict_proba: frames of shape {x.shape}, need (T, {self.frame_config.n_mels})")
            logits = self._run(np.ascontiguousarray(_tile_to(x, self.crop_frames))[None])[0].astype(np.float64)
            z = np.exp(logits - logits.max())
            rows.append(z / z.sum())
        P = np.stack(rows) if rows else np.zeros((0, len(self.labels)))
        return apply_temperature(P, self.temperature) if calibrated else P

    def __getstate__(self) -> dict[str, Any]:  # an onnxruntime session does not pickle; rebuilt on first use
        state = dict(self.__dict__)
        state["_session"] = None
        return state


def _versions() -> dict[str, str]:
    import platform
    import sys

    import onnxruntime

    out = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}
    if "torch" in sys.modules:  # the training framework that made it, when it was this process
        out["torch"] = str(sys.modules["torch"].__version__)
    return out


def is_crnn_path(path: str | os.PathLike[str]) -> bool:
    """Whether a model path names a saved CRNN (suffix ``.onnx``) rather than a joblib bundle."""
    return Path(path).suffix.lower() == ".onnx"


def save_crnn(model: CRNNModel, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (the ONNX bytes) and its sidecar ``path.with_suffix(".json")``, each atomically.

    Parameters
    ----------
    model : CRNNModel
    path : str or os.PathLike
        Must end in ``.onnx``.

    Returns
    -------
    Path
        The sidecar's path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.onnx``.
    """
    target = Path(path)
    if not is_crnn_path(target):
        raise ValueError(f"save_crnn: the model file must end in .onnx, got {target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "kind": "crnn",
        "format": CRNN_FORMAT,
        "labels": list(model.labels),
        "frame_config": model.frame_config.to_dict(),
        "crop_frames": int(model.crop_frames),
        "temperature": float(model.temperature),
        "unsure_below": float(model.metadata.get("unsure_below", 0.5)),
        "sha256": model.sha256,
        "versions": _versions(),
        "metadata": model.metadata,
    }
    atomic_write(target, model.onnx_bytes)
    side = target.with_suffix(".json")
    atomic_write(side, (json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
    model.name = target.stem
    return side


def load_crnn(path: str | os.PathLike[str]) -> CRNNModel:
    """Read a CRNN written by :func:`save_crnn`, its SHA-256 checked before onnxruntime sees it.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.

    Returns
    -------
    CRNNModel
        With ``name`` the file's stem.

    Raises
    ------
    ModelNotFoundError
        If the file does not exist.
    ModelIntegrityError
        If the sidecar is missing or unreadable, the hash differs, or
        onnxruntime cannot load the bytes.
    ModelCompatibilityError
        If the sidecar's format or frame version is not this engine's.
    """
    target = Path(path)
    name = target.name
    try:
        data = target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ModelNotFoundError(f"No emotion model found ({name}).") from None
    except OSError:
        raise ModelNotFoundError(f"The emotion model {name} could not be read.") from None
    try:
        side = json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))
        if not isinstance(side, dict) or side.get("kind") != "crnn":
            raise ValueError("not a CRNN sidecar")
    except (OSError, UnicodeDecodeError, ValueError):
        raise ModelIntegrityError(f"The model {name} has no readable description (.json beside it).") from None
    if side.get("format") != CRNN_FORMAT:
        raise ModelCompatibilityError(f"The model {name} has format {side.get('format')}, this engine reads {CRNN_FORMAT}.")
    try:
        frame_config = FrameConfig.from_dict(side["frame_config"])
    except (KeyError, TypeError, ValueError):
        raise ModelCompatibilityError(f"The model {name} was trained on frames this engine does not compute.") from None
    if hashlib.sha256(data).hexdigest() != str(side.get("sha256", "")).lower():
        raise ModelIntegrityError(f"The model {name} was altered or damaged: its SHA-256 does not match its description.")
    try:
        model = CRNNModel(
            onnx_bytes=data, labels=tuple(str(v) for v in side["labels"]), frame_config=frame_config,
            crop_frames=int(side["crop_frames"]), temperature=float(side.get("temperature", 1.0)),
            metadata={**dict(side.get("metadata") or {}), "unsure_below": float(side.get("unsure_below", 0.5))},
            name=target.stem,
        )  # fmt: skip
        probe = model._run(np.zeros((1, model.crop_frames, frame_config.n_mels), dtype=np.float32))
    except Exception:
        raise ModelIntegrityError(f"The model {name} could not be loaded as ONNX or does not match its description.") from None
    if probe.shape != (1, len(model.labels)):
        raise ModelIntegrityError(f"The model {name} has {probe.shape[-1]} outputs for {len(model.labels)} labels.")
    return model


class CRNNPredictor:
    """Classify clips with a saved CRNN (:class:`CRNNModel`), with onnxruntime only.

    Parameters
    ----------
    model : CRNNModel
    limits : AudioLimits, optional, keyword-only
        Decoding limits (default ``AudioLimits()``).
    unsure_below : float, optional, keyword-only
        Confidence below which a prediction is flagged unsure (default: the model's, else 0.5).
    detect_speech : bool, default True, keyword-only
        Refuse clips without speech (:class:`~ser_engine.errors.NoSpeechError`), as
        :class:`~ser_engine.predict.Predictor` does.

    Raises
    ------
    ValueError
        If the model's frames are not at 16 kHz or ``unsure_below`` is outside [0, 1].
    """

    def __init__(self, model: CRNNModel, *, limits: AudioLimits | None = None, unsure_below: float | None = None,
                 detect_speech: bool = True) -> None:  # fmt: skip
        if model.frame_config.sr != TARGET_SR:
            raise ValueError(f"CRNNPredictor: the model's frames are at {model.frame_config.sr} Hz, not {TARGET_SR}")
        if unsure_below is None:
            unsure_below = float(model.metadata.get("unsure_below", 0.5))
        if not 0.0 <= unsure_below <= 1.0:
            raise ValueError(f"CRNNPredictor: unsure_below must be in [0, 1], got {unsure_below}")
        self.model = model
        self.limits = limits or AudioLimits()
        self.unsure_below = float(unsure_below)
        self.detect_speech = bool(detect_speech)
        self.model_version = model.model_version

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> CRNNPredictor:
        """:func:`load_crnn` and wrap it (keyword arguments as :class:`CRNNPredictor`).

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            As :func:`load_crnn`.
        """
        return cls(load_crnn(path), **kwargs)

    @property
    def labels(self) -> tuple[str, ...]:
        """The emotions the model tells apart, in probability order."""
        return self.model.labels

    def predict(self, source: AudioSource, *, speaker_stats: Any = None) -> Prediction:
        """Classify an encoded clip (any format :func:`~ser_engine.audio.load_audio` decodes).

        Parameters
        ----------
        source : bytes or path-like
        speaker_stats : any, optional
            Ignored (no speaker normalisation); accepted for the :class:`~ser_engine.predict.Predictor` interface.

        Returns
        -------
        Prediction
            ``normalization`` is ``"none"`` and ``features`` None.

        Raises
        ------
        ser_engine.errors.AudioError
            As :func:`~ser_engine.audio.load_audio`.
        NoSpeechError
            If ``detect_speech`` and the detector finds no speech.
        """
        return self.predict_signal(load_audio(source, sr=TARGET_SR, limits=self.limits))

    def predict_signal(self, y: np.ndarray, sr: int = TARGET_SR, *, speaker_stats: Any = None) -> Prediction:
        """Classify a decoded mono signal (resampled to 16 kHz when ``sr`` differs).

        Parameters
        ----------
        y : np.ndarray, shape (n_samples,)
            Mono samples, full scale 1.0.
        sr : int, default 16000
            Sample rate of ``y`` in Hz.
        speaker_stats : any, optional
            Ignored.

        Returns
        -------
        Prediction

        Raises
        ------
        ValueError
            If ``y`` is not one-dimensional or ``sr`` is not positive.
        NoSpeechError
            If ``detect_speech`` and the detector finds no speech.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1 or sr <= 0:
            raise ValueError(f"predict_signal: need a 1-D signal and sr > 0, got shape {y.shape} and sr={sr}")
        if sr != TARGET_SR:
            import soxr

            y = soxr.resample(y, sr, TARGET_SR, quality="HQ").astype(np.float32, copy=False)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        if self.detect_speech:
            from ..errors import NoSpeechError
            from ..vad import default_detector

            detector = default_detector()
            if not detector.has_speech(y):
                raise NoSpeechError(detector.speech_seconds(y), detector.settings.min_speech_s)
        return self.classify_frames(log_mel_frames(y, self.model.frame_config), duration_s=y.size / TARGET_SR)

    def classify_frames(self, frames: np.ndarray, *, duration_s: float = 0.0) -> Prediction:
        """Classify one clip's log-mel frames.

        Parameters
        ----------
        frames : np.ndarray, shape (n_frames, n_mels)
        duration_s : float, default 0.0
            Reported as :attr:`Prediction.duration_s`.

        Returns
        -------
        Prediction
        """
        proba = self.model.predict_proba([frames])[0]
        probabilities = {label: float(p) for label, p in zip(self.labels, proba, strict=True)}
        ranked = sorted(self.labels, key=lambda k: (-probabilities[k], self.labels.index(k)))
        return Prediction(
            label=ranked[0], confidence=probabilities[ranked[0]], probabilities=probabilities,
            duration_s=float(duration_s), unsure=probabilities[ranked[0]] < self.unsure_below,
            top_two=tuple(ranked[:2]), normalization="none", features=None, model_version=self.model_version,
        )  # fmt: skip


def crnn_from_network(network: Any, labels: Sequence[str], frame_config: FrameConfig, crop_frames: int,
                      metadata: Mapping[str, Any] | None = None) -> CRNNModel:  # fmt: skip
    """Export a trained torch network (:func:`ser_engine.deep.train.fit_crnn`) to a :class:`CRNNModel`.

    Needs PyTorch and onnx (the ``[deep]`` extra).

    Parameters
    ----------
    network : torch.nn.Module
    labels : sequence of str
    frame_config : FrameConfig
    crop_frames : int
    metadata : mapping, optional

    Returns
    -------
    CRNNModel
    """
    from .train import export_onnx

    return CRNNModel(onnx_bytes=export_onnx(network, frame_config.n_mels), labels=tuple(labels),
                     frame_config=frame_config, crop_frames=int(crop_frames), metadata=dict(metadata or {}))  # fmt: skip
