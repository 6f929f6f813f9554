"""The training loop: SGD, schedule, progress, seeded epochs, atomic checkpoints, resume, NaN guard."""
from __future__ import annotations

import importlib
from typing import Any

from robustcompress.trainer.config import TrainConfig

#: Public names and the module that defines them, imported on first use: TrainConfig (and so a bundle's record)
#: needs no torch.
_LAZY = {"atomic_save": "checkpoint", "load_checkpoint": "checkpoint", "train": "loop"}

__all__ = ["TrainConfig", "atomic_save", "load_checkpoint", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"robustcompress.trainer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'robustcompress.trainer' has no attribute '{name}'")
