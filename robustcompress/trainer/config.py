"""The training settings (TrainConfig) and their checks: no torch, so a bundle's record is read without it."""
from __future__ import annotations

from dataclasses import dataclass

from robustcompress.arguments import parse_eps, require_int, require_number

#: Speed modes (robustcompress.trainer.fast implements them): "fast": channels_last, plus bf16 autocast where the
#: hardware has bf16 units (precision="auto") and GPU-resident data on CUDA; "compile": fast plus torch.compile;
#: "reference": fp32, NCHW, eager, data copied per batch (how the field's reference implementations run).
SPEEDS = ("fast", "compile", "reference")
PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("cosine", "step")
TEACHER_OUTPUTS = ("live", "cached")


@dataclass
class TrainConfig:
    """Optimisation and attack budget shared by all methods, so comparisons are fair."""

    epochs: int = 10
    batch_size: int = 128  # the global batch: split across processes under torchrun
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # or "step": x0.1 at 50% and 75% of training
    eps: float = 8 / 255
    step_size: float | None = 2 / 255  # None: eps / 4
    steps: int = 10
    seed: int = 0
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    progress: bool = True
    #: "fast" (channels_last; bf16 autocast per ``precision``; GPU-resident data on CUDA), "compile" (fast +
    #: torch.compile) or "reference" (fp32, NCHW, eager); see robustcompress.trainer.fast.
    speed: str = "fast"
    #: "auto": in fast mode, bf16 autocast on CUDA GPUs with bf16 and on CPUs with AMX-BF16 or AVX512-BF16 for
    #: images of 16 px and more (smaller ones were not bit-reproducible in bf16), fp32 elsewhere; "bf16" or "fp32"
    #: force it. Evaluation is always fp32.
    precision: str = "auto"
    channels_last: bool | None = None  # None: on in fast mode (CPU and CUDA)
    #: "live" (teachers run on every batch) or "cached": the outputs of teachers that a method queries on clean
    #: images only are computed once on the un-cropped training images and their mirror images, then looked up
    #: (robustcompress.methods.teacher_outputs; the teacher sees the image before the random crop).
    teacher_outputs: str = "live"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            require_int(name, getattr(self, name), least=1)
        for name in ("steps", "crop_padding"):
            require_int(name, getattr(self, name), least=0)
        require_int("seed", self.seed)
        require_number("lr", self.lr, above=0)
        require_number("momentum", self.momentum, least=0, below=1)
        require_number("weight_decay", self.weight_decay, least=0)
        self.eps = parse_eps(self.eps, "eps")  # the one eps rule: '8/255' or 0.0314, never a bare 8
        self.step_size = self.eps / 4 if self.step_size is None else parse_eps(self.step_size, "step_size")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; use one of {list(SCHEDULES)}")
        if self.speed not in SPEEDS:
            raise ValueError(f"unknown speed '{self.speed}'; use one of {list(SPEEDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}'; use one of {list(PRECISIONS)}")
        if self.teacher_outputs not in TEACHER_OUTPUTS:
            raise ValueError(f"unknown teacher_outputs '{self.teacher_outputs}'; use one of {list(TEACHER_OUTPUTS)}")
