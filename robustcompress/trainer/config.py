"""The training settings (TrainConfig) and their checks: no torch, so a bundle's record is read without it."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

#: Speed modes (robustcompress.trainer.fast implements them): "fast": channels_last, bf16 autocast where the
#: hardware has native bf16 (precision="auto") and GPU-resident data on CUDA; "compile": fast plus torch.compile; "reference": fp32, NCHW, eager, data copied per
#: batch (how the field's reference implementations run).
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
    step_size: float = 2 / 255
    steps: int = 10
    seed: int = 0
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    progress: bool = True
    #: "fast" (channels_last; native bf16 autocast; GPU-resident data on CUDA), "compile" (fast + torch.compile) or
    #: "reference" (fp32, NCHW, eager); see robustcompress.trainer.fast.
    speed: str = "fast"
    #: "auto": in fast mode, bf16 autocast where the hardware has native bf16 (CUDA; CPUs with AMX-BF16 or
    #: AVX512-BF16), else fp32; "bf16" or "fp32" force it. Evaluation is always fp32.
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
        require_number("eps", self.eps, least=0, most=1, hint="eps is in pixel units, e.g. 8/255 = 0.0314")
        require_number("step_size", self.step_size, least=0, most=1, hint="the attack step, e.g. eps / 4")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; use one of {list(SCHEDULES)}")
        if self.speed not in SPEEDS:
            raise ValueError(f"unknown speed '{self.speed}'; use one of {list(SPEEDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}'; use one of {list(PRECISIONS)}")
        if self.teacher_outputs not in TEACHER_OUTPUTS:
            raise ValueError(f"unknown teacher_outputs '{self.teacher_outputs}'; use one of {list(TEACHER_OUTPUTS)}")


def parse_eps(value: str | float | int, what: str = "eps") -> float:
    """An L-inf budget in pixel units, by one rule everywhere (flags, config files, the benchmark).

    Accepted: a fraction such as '8/255', or a decimal number in [0, 1] such as '0.0314' or 1.0. Rejected with a
    hint: a bare integer other than 0 ('8' could mean 8 or 8/255) and anything above 1 (images lie in [0, 1]).
    Raises ValueError naming ``what``.
    """
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Fraction)):
        raise ValueError(f"{what} must be a number such as 8/255 or 0.0314; got {value!r}")
    text = str(value).strip()
    try:
        exact = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{what} '{text}' is not a number; write e.g. 8/255 or 0.0314") from exc
    is_bare_integer = isinstance(value, int) or text.lstrip("+-").isdigit()
    hint = f"did you mean {text}/255 = {float(exact) / 255:.4f}?" if exact > 0 else f"{what} cannot be negative"
    if exact < 0 or exact > 1:
        raise ValueError(f"{what} {text} is outside [0, 1]: eps is in pixel units (images lie in [0, 1]); {hint}")
    if is_bare_integer and exact != 0:
        raise ValueError(f"{what} {text} is ambiguous (the whole pixel range or {text}/255?); write {text}/255 for "
                         f"{float(exact) / 255:.4f} or {text}.0 for the whole range")
    return float(exact)


def require_int(name: str, value: Any, least: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless value is a whole number (not a bool) and at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number; got {value!r} ({type(value).__name__})")
    if least is not None and value < least:
        raise ValueError(f"{name}={value} is too small: it must be at least {least}")


def require_number(name: str, value: Any, *, least: float | None = None, above: float | None = None,
                   most: float | None = None, below: float | None = None, hint: str = "") -> None:
    """Raise a ValueError naming ``name`` unless value is a finite real number inside the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    bounds = [(least, lambda v, b: v >= b, "at least"), (above, lambda v, b: v > b, "above"),
              (most, lambda v, b: v <= b, "at most"), (below, lambda v, b: v < b, "below")]
    for bound, holds, words in bounds:
        if bound is not None and not holds(value, bound):
            raise ValueError(f"{name}={value} must be {words} {bound:g}" + (f"; {hint}" if hint else ""))
