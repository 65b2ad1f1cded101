"""Training the CRNN with PyTorch, and its export to ONNX.

Needs the optional extra ``pip install .[deep]`` (``torch==2.13.0``, CPU
build, and ``onnx`` for the exporter); torch is imported on the first call,
never when this module is imported.  The bot and
:class:`~ser_engine.deep.onnx_model.CRNNPredictor` need neither.

The network (:func:`build_network`) is the convolutional-recurrent design of
Trigeorgis et al. (2016), "Adieu features? End-to-end speech emotion
recognition using a deep convolutional recurrent network", ICASSP, on
log-mel input as in Zhao, Mao & Chen (2019), "Speech emotion recognition
using deep 1D & 2D CNN LSTM networks", Biomed. Signal Process. Control 47,
made small for two CPU cores: a batch-norm on the input, two blocks of
1-D convolution over time (the mel bands as channels, 5 frames wide),
batch-norm, ReLU and max-pooling by 2 (time /4), a bidirectional GRU over
the pooled frames (40 ms apart), attention
pooling over time (Mirsamadi, Barsoum & Zhang 2017, "Automatic speech
emotion recognition using recurrent neural networks with local attention",
ICASSP), dropout and a linear layer.  Training: AdamW, a one-cycle learning
rate (Smith & Topin 2019), class-weighted cross-entropy (each emotion weighs
the same, for UAR), random crops of :attr:`CRNNConfig.crop_frames` frames and
SpecAugment time and frequency masks (Park et al. 2019, Interspeech).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["CRNNConfig", "build_network", "export_onnx", "fit_crnn", "torch_available", "torch_proba"]


def torch_available() -> bool:
    """Whether PyTorch can be imported (the ``[deep]`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        from ..errors import SERError

        raise SERError(
            "Training the CRNN needs PyTorch: pip install '.[deep]' (it pins the CPU build torch==2.13.0)."
        ) from None
    return torch


@dataclass(frozen=True)
class CRNNConfig:
    """Hyper-parameters of the CRNN and its training.

    Parameters
    ----------
    channels : tuple of int, default (64, 64)
        Output channels of the convolution blocks (kernel 5 frames; each halves time).
    hidden : int, default 64
        GRU units per direction.
    dropout : float, default 0.3
        Before the output layer.
    epochs : int, default 30
        Passes over the training clips.
    batch_size : int, default 32
    lr : float, default 3e-3
        Peak learning rate of the one-cycle schedule.
    weight_decay : float, default 1e-2
        AdamW's decoupled weight decay.
    crop_frames : int, default 250
        Training crops (2.5 s at a 10 ms hop); shorter clips are tiled to this
        length, at training and at inference alike.
    spec_augment : bool, default True
        Two frequency masks (<= 8 bands) and two time masks (<= 30 frames) per training crop.
    class_weights : bool, default True
        Weigh each class' loss by the inverse of its frequency.
    seed : int, default 0
        Seeds torch and the crops.
    threads : int, default 1
        ``torch.set_num_threads`` while training.

    Raises
    ------
    ValueError
        If a size is not positive, or dropout is outside [0, 1).
    """

    channels: tuple[int, ...] = (64, 64)
    hidden: int = 64
    dropout: float = 0.3
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    crop_frames: int = 250
    spec_augment: bool = True
    class_weights: bool = True
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 1 or min(self.channels) < 1:
            raise ValueError(f"CRNNConfig: channels must be positive, got {self.channels}")
        if min(self.hidden, self.epochs, self.batch_size, self.threads) < 1 or self.crop_frames < 16:
            raise ValueError(f"CRNNConfig: sizes must be positive (crop_frames >= 16), got {self}")
        if not 0.0 <= self.dropout < 1.0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"CRNNConfig: dropout in [0, 1), lr > 0, weight_decay >= 0; got {self}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON form)."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CRNNConfig:
        """Inverse of :meth:`to_dict` (unknown keys refused with ``TypeError``)."""
        return cls(**dict(data))


def build_network(n_mels: int, n_classes: int, config: CRNNConfig | None = None) -> Any:
    """The CRNN as a ``torch.nn.Module`` (see the module docstring).

    Parameters
    ----------
    n_mels : int
        Mel bands of the input (its channels).
    n_classes : int
    config : CRNNConfig, optional

    Returns
    -------
    torch.nn.Module
        ``forward(frames)``: frames shape (batch, n_frames, n_mels), float32,
        n_frames >= 2 ** len(channels); returns logits, shape (batch, n_classes).
    """
    torch = _torch()
    nn = torch.nn
    config = config or CRNNConfig()

    class CRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(n_mels)
            blocks: list[Any] = []
            c_in = n_mels
            for c in config.channels:
                blocks += [nn.Conv1d(c_in, c, 5, padding=2, bias=False), nn.BatchNorm1d(c), nn.ReLU(),
                           nn.MaxPool1d(2)]  # fmt: skip
                c_in = c
            self.conv = nn.Sequential(*blocks)
            self.gru = nn.GRU(c_in, config.hidden, batch_first=True, bidirectional=True)
            self.attention = nn.Linear(2 * config.hidden, 1)
            self.dropout = nn.Dropout(config.dropout)
            self.out = nn.Linear(2 * config.hidden, n_classes)

        def forward(self, frames: Any) -> Any:
            h = self.conv(self.norm(frames.transpose(1, 2)))  # (B, C, T')
            h, _ = self.gru(h.transpose(1, 2))  # (B, T', 2 * hidden)
            w = torch.softmax(self.attention(h), dim=1)  # (B, T', 1)
            return self.out(self.dropout((w * h).sum(dim=1)))

    return CRNN()


def tile_to(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Repeat a clip's frames end to end until it has at least ``n_frames`` (longer clips unchanged).

    Parameters
    ----------
    frames : np.ndarray, shape (T, n_mels)
    n_frames : int

    Returns
    -------
    np.ndarray, shape (max(T, n_frames), n_mels), float32
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[0] >= n_frames:
        return frames
    reps = -(-n_frames // max(frames.shape[0], 1))
    return np.tile(frames, (reps, 1))[:n_frames]


def _batch(versions: Sequence[Sequence[np.ndarray]], idx: np.ndarray, config: CRNNConfig,
           rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    L = config.crop_frames
    out = np.empty((idx.size, L, versions[0][0].shape[1]), dtype=np.float32)
    for k, i in enumerate(idx):
        x = tile_to(versions[rng.integers(len(versions))][i], L)
        start = int(rng.integers(x.shape[0] - L + 1))
        crop = x[start : start + L].copy()
        if config.spec_augment:
            for _ in range(2):
                w = int(rng.integers(0, 9))
                f0 = int(rng.integers(0, crop.shape[1] - w + 1))
                crop[:, f0 : f0 + w] = 0.0
                w = int(rng.integers(0, 31))
                t0 = int(rng.integers(0, L - w + 1))
                crop[t0 : t0 + w, :] = 0.0
        out[k] = crop
    return out


def fit_crnn(
    frames: Sequence[np.ndarray],
    y: np.ndarray,
    n_classes: int,
    config: CRNNConfig | None = None,
    *,
    augment: Mapping[str, Sequence[np.ndarray]] | None = None,
    progress: bool = False,
) -> tuple[Any, list[float]]:
    """Train a CRNN on log-mel frames.

    Parameters
    ----------
    frames : sequence of np.ndarray, each shape (n_frames_i, n_mels), float32
        One per training clip (:func:`ser_engine.deep.frames.log_mel_frames`).
    y : np.ndarray, shape (n_clips,), int
        Class indices in ``[0, n_classes)``.
    n_classes : int
    config : CRNNConfig, optional
    augment : mapping of str to sequence of np.ndarray, optional
        Degraded versions of the same clips (same order); each epoch, every
        clip is drawn from one of the clean and degraded versions at random.
    progress : bool, default False
        Print the mean loss of each epoch to stderr.

    Returns
    -------
    network : torch.nn.Module
        In eval mode.
    losses : list of float
        Mean training loss of each epoch.

    Raises
    ------
    ValueError
        If lengths disagree, ``y`` is out of range or there are no clips.
    ser_engine.errors.SERError
        If PyTorch is not installed.
    """
    torch = _torch()
    config = config or CRNNConfig()
    y = np.asarray(y, dtype=np.int64)
    versions = [list(frames), *(list(v) for v in (augment or {}).values())]
    if not versions[0] or any(len(v) != y.size for v in versions):
        raise ValueError(f"fit_crnn: {len(versions[0])} clips, {y.size} labels; every version needs one per clip")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"fit_crnn: labels must be in [0, {n_classes})")
    n_mels = versions[0][0].shape[1]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        net = build_network(n_mels, n_classes, config)
        weight = None
        if config.class_weights:
            counts = np.bincount(y, minlength=n_classes).astype(np.float64)
            w = np.where(counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
            weight = torch.tensor(w, dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = -(-y.size // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps)
        losses: list[float] = []
        for epoch in range(config.epochs):
            net.train()
            order = rng.permutation(y.size)
            total = 0.0
            for s in range(steps):
                idx = order[s * config.batch_size : (s + 1) * config.batch_size]
                if idx.size < 2:  # batch-norm needs two examples
                    continue
                xb = torch.from_numpy(_batch(versions, idx, config, rng))
                loss = loss_fn(net(xb), torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.item()) * idx.size
            losses.append(total / y.size)
            if progress:
                import sys

                print(f"CRNN epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.3f}", file=sys.stderr)
        net.eval()
        return net, losses
    finally:
        torch.set_num_threads(previous_threads)


def torch_proba(network: Any, frames: Sequence[np.ndarray], crop_frames: int) -> np.ndarray:
    """Softmax probabilities of the torch network, clip by clip (tiled to ``crop_frames`` as at inference).

    Parameters
    ----------
    network : torch.nn.Module
        From :func:`fit_crnn`.
    frames : sequence of np.ndarray, each shape (n_frames_i, n_mels)
    crop_frames : int
        :attr:`CRNNConfig.crop_frames` of the training.

    Returns
    -------
    np.ndarray, shape (n_clips, n_classes), float64
    """
    torch = _torch()
    network.eval()
    rows = []
    with torch.no_grad():
        for x in frames:
            logits = network(torch.from_numpy(tile_to(x, crop_frames))[None])
            rows.append(torch.softmax(logits.double(), dim=1)[0].numpy())
    return np.stack(rows)


def export_onnx(network: Any, n_mels: int) -> bytes:
    """The network as an ONNX model (opset 17; batch and time axes dynamic).

    Uses torch's TorchScript-based exporter (``dynamo=False``; it needs the
    ``onnx`` package): 1 s against 15 s for the torch.export-based one on
    this network, with the same outputs (max difference 6e-8 in a check on
    a CRNN of this shape).

    Parameters
    ----------
    network : torch.nn.Module
        From :func:`fit_crnn`.
    n_mels : int
        Mel bands of the input.

    Returns
    -------
    bytes
        A serialised ``ModelProto``: input ``frames`` (batch, time, n_mels)
        float32, output ``logits`` (batch, n_classes).
    """
    torch = _torch()
    network.eval()
    buffer = io.BytesIO()
    example = torch.zeros(1, 64, n_mels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network, (example,), buffer, dynamo=False, opset_version=17, input_names=["frames"],
            output_names=["logits"], dynamic_axes={"frames": {0: "batch", 1: "time"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return buffer.getvalue()
