"""The fast path (bf16 autocast, channels_last, torch.compile, GPU-resident data) and the plain fp32 reference path."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset

from robustcompress.trainer.bf16_rounding import bf16_rounded_teachers
from robustcompress.trainer.config import PRECISIONS, SPEEDS, TrainConfig
from robustcompress.trainer.cpu import CpuInfo, cpu_info

log = logging.getLogger("robustcompress")

#: Move an in-memory dataset onto the GPU only while it takes at most this share of the free GPU memory.
DATA_ON_GPU_MAX_SHARE = 0.25
#: In fast mode the host reads losses back (NaN guard, progress bar) once every this many steps.
FAST_SYNC_EVERY = 10
#: precision="auto" trains in bf16 on a CPU with native bf16 only for inputs at least this many pixels wide: at 8 px
#: oneDNN's bf16 kernels gave runs of one seed that were not bit-identical, at 16 and 32 px every run reproduced
#: (docs/results/bf16_reproducibility.md), and the SDK promises that the same seed gives the same bundle.
AUTO_BF16_MIN_PX = 16


@dataclass(frozen=True)
class SpeedPlan:
    """What one training run does for speed; resolved once from (speed, device) by ``plan_speed``."""

    speed: str
    amp_dtype: torch.dtype | None  # autocast dtype for every forward of student and teachers, None = fp32
    channels_last: bool
    compile: bool
    data_on_device: bool
    sync_every: int  # steps between host reads of the loss; 1 = every step, as reference code does
    cpu: CpuInfo | None = None  # the CPU that trains, recorded with the run (None on CUDA)
    why: str = ""  # why precision="auto" chose what it chose, when that is not evident from the CPU ("" otherwise)
    #: bf16 on a CPU without bf16 units: frozen teachers' forwards (and AdaAD's backward through them to the image) run
    #: as fp32 kernels on bf16-rounded values (robustcompress.trainer.bf16_rounding), the same arithmetic as oneDNN's
    #: emulation at about fp32's speed
    teacher_bf16_rounding: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast for the forwards (attack included); a no-op context in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.amp_dtype)

    @property
    def precision(self) -> str:
        """'fp32' or the autocast dtype's name ('bfloat16')."""
        return "fp32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for logs, benchmarks and reports."""
        return {
            "speed": self.speed,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "data_on_device": self.data_on_device,
            "sync_every": self.sync_every,
            **({"cpu": self.cpu.describe()} if self.cpu is not None else {}),
            **({"why": self.why} if self.why else {}),
            **({"teacher_inference": "fp32 kernels on bf16-rounded values"} if self.teacher_bf16_rounding else {}),
        }

    def summary(self) -> str:
        """One line for the start of a run, e.g. 'bf16 autocast, channels_last (CPU: AMD EPYC, avx512_bf16)'."""
        parts = ["bf16 autocast" if self.amp_dtype is not None else "fp32"]
        parts += [name for name, on in (("channels_last", self.channels_last), ("torch.compile", self.compile)) if on]
        if self.teacher_bf16_rounding:
            parts.append("teachers' inference as fp32 kernels on bf16-rounded values")
        where = ""
        if self.cpu is not None:
            where = f" (CPU: {self.cpu.model}, {self.cpu.native_bf16 or 'no native bf16'})"
        why = f"; {self.why}" if self.why else ""
        return f"training precision: {', '.join(parts)}{where}{why}"


def plan_speed(
    speed: str, device: torch.device, precision: str = "auto", channels_last: bool | None = None,
    cpu: CpuInfo | None = None, input_px: int | None = None,
) -> SpeedPlan:
    """Resolve a speed setting for a device (``cpu``: the CPU to plan for, default this machine's; ``input_px``:
    the width of the training images, which decides auto's precision on a CPU; None when unknown).

    "fast" means channels_last everywhere, GPU-resident data on CUDA, and with ``precision="auto"`` bf16 autocast
    for the training forwards and the training attack on CUDA GPUs that support it and on CPUs with native bf16
    (AMX-BF16 or AVX512-BF16; robustcompress.trainer.cpu) for inputs of at least AUTO_BF16_MIN_PX pixels; fp32
    elsewhere (bf16 without native units is slower than fp32). oneDNN's NHWC convolutions made an adversarial
    training step 1.1-1.5x faster on 2-core AVX2 and AVX-512 machines.
    ``precision="bf16"``/``"fp32"`` or ``channels_last=False`` override. Evaluation never autocasts, whatever
    training used (an attack in bf16 can under-report).
    """
    if speed not in SPEEDS:
        raise ValueError(f"unknown speed '{speed}'; use one of {list(SPEEDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use one of {list(PRECISIONS)}")
    cuda = device.type == "cuda"
    cpu = None if cuda else cpu or cpu_info()
    if speed == "reference":
        if precision == "bf16" or channels_last:
            raise ValueError(
                "speed='reference' is fp32 and NCHW by definition; drop precision/channels_last or use speed='fast'"
            )
        return SpeedPlan("reference", None, False, False, False, 1, cpu)
    why = ""
    if precision == "auto":
        # bf16 needs no loss scaling, so it is on by default on GPUs that have it (pre-Ampere ones stay fp32) and on
        # CPUs with bf16 matrix units, where it trained as robust a student as fp32 in the CPU-scale table
        # (docs/results/cifar10_cpu.md, "Training precision"). Small inputs stay fp32 (AUTO_BF16_MIN_PX).
        if cuda:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        elif cpu is None or cpu.native_bf16 is None:
            amp_dtype = None
        elif input_px is not None and input_px >= AUTO_BF16_MIN_PX:
            amp_dtype = torch.bfloat16
        else:
            amp_dtype = None
            reason = ("when the input size is unknown" if input_px is None else
                      f"for inputs under {AUTO_BF16_MIN_PX} px (bf16 runs of one seed differed there)")
            why = f"auto keeps fp32 {reason}; precision='bf16' forces bf16"
    else:
        amp_dtype = torch.bfloat16 if precision == "bf16" else None
        if amp_dtype is not None and cpu is not None and cpu.native_bf16 is None:
            # Allowed (a protocol may fix its precision across machines), but said: the step is slower than fp32
            # (0.87x the fp32 reference's PGD-5 step on an AVX-512 Xeon without BF16, docs/results/throughput_cpu.md).
            why = "bf16 forced on a CPU without native bf16 units: oneDNN emulates it, slower than fp32 (auto: fp32)"
    # Frozen teachers need no bf16 weight gradients, so on such a CPU they skip oneDNN's slow emulation (not under
    # torch.compile, which traces the forward it is given).
    teacher_rounding = (amp_dtype is not None and cpu is not None and cpu.native_bf16 is None
                        and speed != "compile")
    return SpeedPlan(
        speed=speed,
        amp_dtype=amp_dtype,
        channels_last=True if channels_last is None else channels_last,
        compile=speed == "compile",
        data_on_device=cuda,
        sync_every=FAST_SYNC_EVERY,
        cpu=cpu,
        why=why,
        teacher_bf16_rounding=teacher_rounding,
    )


def training_plan(config: TrainConfig, device: torch.device, input_px: int | None) -> SpeedPlan:
    """The plan a training run with ``config`` uses on ``device`` for images ``input_px`` wide: resolved once by
    whoever records it (fit, a teacher's cache key) and handed to robustcompress.trainer.train, so what is recorded
    is what trained."""
    return plan_speed(config.speed, device, config.precision, config.channels_last, input_px=input_px)


def to_memory_format(x: torch.Tensor, plan: SpeedPlan) -> torch.Tensor:
    """A batch in the layout the models were converted to (channels_last on the fast path)."""
    if plan.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compile_in_place(module: nn.Module) -> None:
    """torch.compile the module's forward in place (static shapes; the last, smaller batch compiles once more).

    In place rather than torch.compile(module): the module keeps its class, attributes and state-dict keys, so
    methods that inspect the student (isinstance, .net, feature hooks) see the same object.
    """
    module.compile(dynamic=False)


def uncompile(module: nn.Module) -> None:
    """Undo compile_in_place, so evaluation and export after training run the eager forward."""
    if getattr(module, "_compiled_call_impl", None) is not None:
        module._compiled_call_impl = None


@contextlib.contextmanager
def speed_context(
    plan: SpeedPlan, student: nn.Module, teachers: Sequence[nn.Module]
) -> Iterator[tuple[nn.Module, list[nn.Module]]]:
    """Convert the models for ``plan`` and yield (student, teachers) to call; undo the layout change afterwards.

    The yielded modules are the originals (compiled in place at most; with ``plan.teacher_bf16_rounding`` the
    teachers' ``forward`` is overridden for the block), so optimisers and checkpoints keep working on them. cuDNN
    autotuning is switched on for the fast path and restored.
    """
    models = list({id(m): m for m in [student, *teachers]}.values())  # a module passed twice is converted once
    benchmark_before = torch.backends.cudnn.benchmark
    compiled_here = [m for m in models if getattr(m, "_compiled_call_impl", None) is None] if plan.compile else []
    rounding = bf16_rounded_teachers([t for t in teachers if t is not student]) if plan.teacher_bf16_rounding \
        else contextlib.nullcontext()
    try:
        if plan.channels_last:
            for m in models:
                m.to(memory_format=torch.channels_last)
        if plan.speed != "reference":
            torch.backends.cudnn.benchmark = True
        for m in compiled_here:  # modules the caller compiled already stay as they are
            compile_in_place(m)
        with rounding:
            yield student, list(teachers)
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
        for m in compiled_here:
            uncompile(m)
        if plan.channels_last:
            # Hand the models back in the default layout: exporters and user code expect NCHW weights.
            for m in models:
                m.to(memory_format=torch.contiguous_format)


def place_dataset(ds: Dataset, device: torch.device, plan: SpeedPlan) -> Dataset:
    """An in-memory TensorDataset moved onto the GPU when the plan allows it and it fits; otherwise ds unchanged."""
    if not plan.data_on_device or device.type != "cuda" or not isinstance(ds, TensorDataset):
        return ds
    if all(t.device == device for t in ds.tensors):
        return ds
    size = sum(t.numel() * t.element_size() for t in ds.tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size > DATA_ON_GPU_MAX_SHARE * free:
        log.info("training data (%.1f GiB) stays in host memory: more than %d%% of free GPU memory",
                 size / 2**30, int(DATA_ON_GPU_MAX_SHARE * 100))
        return ds
    return type(ds)(*(t.to(device) for t in ds.tensors))  # a PixelDataset stays uint8 on the GPU
