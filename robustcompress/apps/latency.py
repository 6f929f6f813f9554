"""Latency of an exported model: the deploy runtime's benchmark plus the PyTorch eager row (which needs torch).

    python -m robustcompress.apps.latency student.onnx --int8 student.int8.onnx [--bundle BUNDLE] [--json out.json]

The onnxruntime measurements live in :mod:`robustcompress_runtime.benchmark` (torch-free); this module only adds
a runner for a bundle's PyTorch student, so the runtime never imports robustcompress.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import torch

from robustcompress_runtime.benchmark import Runner
from robustcompress_runtime.benchmark import main as runtime_main


def torch_runner(model: torch.nn.Module, threads: int | None = None) -> Runner:
    """A function running a PyTorch module eagerly on CPU under inference_mode; ``.versions`` names torch's."""
    if threads:
        torch.set_num_threads(threads)
    model = model.cpu().eval()

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    run.versions = {"torch": torch.__version__}  # type: ignore[attr-defined]
    return run


def load_torch_student(bundle: str | os.PathLike) -> torch.nn.Module:
    """The PyTorch student of a robustcompress bundle."""
    from robustcompress.compressor import RobustCompressor

    return RobustCompressor.load(bundle, device="cpu").student  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    return runtime_main(argv, eager_for=lambda bundle, threads: torch_runner(load_torch_student(bundle), threads),
                        prog="python -m robustcompress.apps.latency")


if __name__ == "__main__":
    sys.exit(main())
