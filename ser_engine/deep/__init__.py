"""A temporal model: a small CRNN over log-mel frames (issue 16, point 3).

Training needs PyTorch (the optional extra ``pip install .[deep]``, which
pins the CPU build ``torch==2.13.0``); inference does not: a trained model
is exported to ONNX and run with ``onnxruntime``, a runtime dependency.

Modules
-------
frames
    Log-mel frames of a clip (numpy/scipy only): the model's input.
onnx_model
    The saved model (ONNX file + JSON sidecar with its SHA-256),
    :class:`~ser_engine.deep.onnx_model.CRNNPredictor` (no torch).
train
    The network, its training loop and the ONNX export (imports torch
    lazily, on the first call).
evaluate
    The MLP's protocols for the CRNN: speaker-independent folds and
    leave-one-corpus-out, as the same report objects.

Importing this package never imports torch.
"""

from __future__ import annotations

__all__: list[str] = []
