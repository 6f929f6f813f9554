"""An exported .onnx classifier behind the nn.Module interface, so verification can judge the file itself."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from robustcompress.export.onnx import check_classifier_signature, onnx_logits
from robustcompress_runtime.runtime import make_session


class OnnxClassifier(nn.Module):
    """Forward only (no gradients): onnxruntime on CPU, the session from the one factory (make_session)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        self.name = Path(path).name
        self.session = make_session(self.path)
        self.batch_size = 256  # 1 for a graph fixed to batch 1 (see check_signature)

    def check_signature(self, input_size: int, channels: int = 3) -> None:
        """Raise a ValueError unless the graph takes [N, C, S, S] float32 images to logits; adopt its fixed batch."""
        self.batch_size = check_classifier_signature(self.session, self.path, input_size, channels) or self.batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = onnx_logits(self.path, x.detach().cpu().float().numpy(), self.session, self.batch_size)
        return torch.from_numpy(logits).to(x.device)
