"""Multi-process training under torchrun: sharded batches, DDP, sharded evaluation (the process group and the ranks
are robustcompress.runtime_env's).

``batch_size`` stays the global batch: every rank draws the same seeded permutation, takes the same global batch
and keeps every world_size-th sample of it, and losses are weighted so that DDP's gradient average equals the
gradient of the global batch's mean loss. One run on N processes therefore follows the single-process run on the
same data (exactly, up to float rounding, when nothing random happens per sample: no augmentation, eps=0, and
no BatchNorm in training mode, whose statistics are per process as in standard DDP).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from robustcompress.runtime_env import is_distributed, rank, world_size


#: The fewest samples each process's share of a global batch may hold: BatchNorm cannot normalise one image in
#: training mode ("Expected more than 1 value per channel").
MIN_LOCAL_BATCH = 2


def global_batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of every global batch of an epoch over n samples, the same on every rank.

    A trailing batch too small to give every process MIN_LOCAL_BATCH samples (one image, in a single process) is
    merged into the batch before it, so no sample is dropped and no process trains on a batch of one.
    """
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_LOCAL_BATCH * world_size():
        _, end = bounds.pop()
        bounds[-1] = (bounds[-1][0], end)
    return bounds


def local_batches(n: int, batch_size: int, shuffle: bool, seed: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Per global batch (global_batch_bounds): (this rank's indices, global batch size).

    The permutation comes from a generator seeded identically on every rank, so the ranks split the same global
    batches.
    """
    world, me = world_size(), rank()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start, end in global_batch_bounds(n, batch_size):
        batch = order[start:end]
        yield batch[me::world], len(batch)


def check_training_set_size(n: int, what: str = "train_data") -> None:
    """Refuse a training set too small to give every process a batch of MIN_LOCAL_BATCH images."""
    least = MIN_LOCAL_BATCH * world_size()
    if n < least:
        processes = f" on each of {world_size()} processes" if world_size() > 1 else ""
        raise ValueError(f"{what} has {n} image{'s' if n != 1 else ''}; training needs at least {least} "
                         f"({MIN_LOCAL_BATCH} per batch{processes}: BatchNorm cannot normalise a single image). Add "
                         "images")


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place sum or max over ranks (a no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients_(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of params over ranks by hand, in one flat buffer (what DDP does, without overlap)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers_(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so every rank ends an epoch equal."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)


class _Replica(nn.Module):
    """Student and method in one module, so DDP synchronises the method's trainable parts (adapters) too."""

    def __init__(self, student: nn.Module, method: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


class DistributedStudent(nn.Module):
    """The student that methods see under DDP.

    Forwards in training mode with gradients go through DDP (gradients averaged over ranks). Forwards in eval
    mode (the attack: pgd puts the model in eval mode and only wants input gradients) or without gradients call
    the student directly, so the inner maximisation costs no collective and leaves DDP's reducer alone. Other
    attributes (``num_classes``, ``net`` ...) come from the student. A step whose loss reaches the student only
    through such attributes makes no DDP forward; the trainer then averages the gradients itself. As with DDP in
    general, whether a step goes through DDP must not depend on the data (every rank must make the same choice).
    """

    def __init__(self, ddp: DistributedDataParallel, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        object.__setattr__(self, "_ddp", ddp)  # not a submodule: eval()/train() must not reach the method
        self.ddp_calls = 0  # forwards through DDP since the trainer last reset it (once per step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.ddp_calls += 1
            return self._ddp(x)
        return self.student(x)

    def train(self, mode: bool = True) -> "DistributedStudent":
        self.training = mode
        self.student.train(mode)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["student"], name)


def wrap_for_training(student: nn.Module, method: nn.Module, device: torch.device) -> nn.Module:
    """The module methods call as ``ctx.student``: the student itself in one process, a DistributedStudent under DDP.

    ``static_graph=True`` lets a method own parameters that some steps do not use, and lets its adapters be used
    outside the student's forward; the set of parameters that receive gradients must stay the same every step.
    """
    if not is_distributed():
        return student
    kwargs: dict[str, Any] = {"static_graph": True}
    # Buffers are synchronised at construction and at the end of every epoch, not in each forward: a forward-time
    # broadcast would rewrite BatchNorm buffers between the several forwards a method makes before backward.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    ddp = DistributedDataParallel(_Replica(student, method), **kwargs)
    return DistributedStudent(ddp, student)


#: One rank's raw evaluation, each by attack name: per-sample flags, seconds, warnings and, for attacks made of
#: stages (AutoAttack), how many of the rank's images each stage left robust.
RawFlags = Tuple[Dict[str, List[bool]], Dict[str, float], Dict[str, List[str]], Dict[str, Dict[str, int]]]


def shard_evaluation(run: Callable[[int, int], RawFlags], n: int) -> RawFlags:
    """Call ``run(rank, world)`` (evaluate images rank, rank + world, ... of n) on every rank and gather the raw
    results on every rank (merge_raw_flags). Building the report from them is verify's job.

    In one process, or with fewer images than ranks (then every rank evaluates all of them), this is run(0, 1).
    """
    world, me = world_size(), rank()
    if not is_distributed() or n < world:
        return run(0, 1)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, run(me, world))
    return merge_raw_flags(gathered, n)


def merge_raw_flags(gathered: Sequence[RawFlags], n: int) -> RawFlags:
    """The ranks' raw results (rank r evaluated images r, r + world, ...) as one: each attack's per-sample flags in
    the original order, its seconds as the slowest rank's (ranks attack in parallel), every warning once, and the
    stage counts summed over ranks."""
    world = len(gathered)
    merged: dict[str, list[bool]] = {}
    for name in gathered[0][0]:
        merged[name] = [False] * n
        for r, raw in enumerate(gathered):
            merged[name][r::world] = raw[0][name]
    slowest = {k: max(raw[1][k] for raw in gathered) for k in gathered[0][1]}
    names = {k for raw in gathered for k in raw[2]}
    warnings = {k: sorted({m for raw in gathered for m in raw[2].get(k, [])}) for k in names}
    stages: dict[str, dict[str, int]] = {}
    for raw in gathered:
        for attack, counts in raw[3].items():
            total = stages.setdefault(attack, {})
            for stage, count in counts.items():
                total[stage] = total.get(stage, 0) + int(count)
    return merged, slowest, warnings, stages


def global_batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch, the same on every rank (a trailing batch too small to share is merged)."""
    return len(global_batch_bounds(n, batch_size))
