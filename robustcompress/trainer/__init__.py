"""The training loop: SGD, schedule, progress, seeded epochs, atomic checkpoints, resume, NaN guard."""
from __future__ import annotations

from robustcompress.lazy import lazy_names
from robustcompress.trainer.config import TrainConfig

#: Public names and the module that defines them, imported on first use: TrainConfig (and so a bundle's record)
#: needs no torch.
_LAZY = {"atomic_save": "robustcompress.io", "load_checkpoint": "robustcompress.io",
         "train": "robustcompress.trainer.loop"}

__all__ = ["TrainConfig", "atomic_save", "load_checkpoint", "train"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
