"""One training loop for every method: the method supplies the adversarial input and the loss, the loop the rest."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustcompress.data import random_crop_flip
from robustcompress.data.core import check_dataset_images, check_images, check_labels
from robustcompress.data.tensors import as_float_images
from robustcompress.io import atomic_save, load_checkpoint
from robustcompress.methods.common import check_teachers_given
from robustcompress.methods.registry import Method, StepContext
from robustcompress.methods.teacher_outputs import CleanTeacherOutputs
from robustcompress.runtime_env import is_main_process, progress_bar, progress_note, rank, seed_everything, world_size
from robustcompress.trainer.config import SCHEDULES, TrainConfig
from robustcompress.trainer.epoch_log import EpochLog
from robustcompress.trainer.distributed import (
    DistributedStudent,
    all_reduce_,
    all_reduce_gradients_,
    average_buffers_,
    check_training_set_size,
    global_batches_per_epoch,
    local_batches,
    wrap_for_training,
)
from robustcompress.trainer.fast import (
    SpeedPlan,
    place_dataset,
    speed_context,
    to_memory_format,
    training_plan,
)

log = logging.getLogger("robustcompress")
CHECKPOINT_NAME = "last.pt"
PROGRESS_EVERY = 10  # steps between progress-bar refreshes (each one reads the loss back to the host)


def check_attack_budget(method: Method, config: TrainConfig) -> None:
    """An adversarial method with eps > 0 needs at least one attack step of positive size."""
    if not getattr(method, "adversarial", True) or config.eps == 0:
        return
    if config.steps < 1:
        raise ValueError(f"method '{method.name}' attacks every batch, so steps must be at least 1 (got "
                         f"{config.steps}); use method='standard' for clean training")
    if config.step_size <= 0:
        raise ValueError(f"method '{method.name}' needs step_size > 0 (got {config.step_size}); e.g. eps / 4")


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if schedule == "step":
        milestones = [int(total_steps * 0.5), int(total_steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    raise ValueError(f"unknown schedule '{schedule}'; use one of {list(SCHEDULES)}")


def iterate_shards(
    ds: Dataset, batch_size: int, shuffle: bool, seed: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]]:
    """This process's part of every global batch, on device, with its loss weight (1.0 in a single process) and
    the batch's sample indices (CPU; they key precomputed teacher outputs).

    The weight is local size * processes / global size: DDP averages gradients over processes, so weighting
    each process's mean loss this way makes the update equal to the gradient of the global batch's mean loss.
    In-memory TensorDatasets are indexed directly (no DataLoader worker overhead); when they live on the GPU the
    epoch's indices are copied there once, so no step waits on a host-to-device copy.
    """
    world = world_size()
    batches = list(local_batches(len(ds), batch_size, shuffle, seed))  # type: ignore[arg-type]
    weights = [len(idx) * world / total for idx, total in batches]
    if isinstance(ds, TensorDataset):
        x_all, y_all = ds.tensors[0], ds.tensors[1]
        indices = [idx for idx, _ in batches]
        if x_all.device.type != "cpu" and indices:
            indices = list(torch.cat(indices).to(x_all.device).split([len(i) for i in indices]))
        for idx, weight, (cpu_idx, _) in zip(indices, weights, batches):
            x = as_float_images(x_all[idx].to(device, non_blocking=True))
            yield x, y_all[idx.to(y_all.device)].to(device, non_blocking=True).long(), weight, cpu_idx
        return
    loader = DataLoader(ds, batch_sampler=[idx.tolist() for idx, _ in batches], num_workers=0)
    for (x, y), weight, (cpu_idx, _) in zip(loader, weights, batches):
        # A user's Dataset computes each item on the fly, so every batch is checked as it arrives (one min/max
        # pass: cheap next to a training step); in-memory tensors were checked whole when train() began.
        check_images(x, "train_data images in this batch")
        yield (x.to(device, non_blocking=True).float(), check_labels(y, "train_data labels").to(device), weight,
               cpu_idx)


@dataclass
class TrainStep:
    """One optimisation step, split so the loop can check the loss between forward and update.

    ``student`` is what methods call as ``ctx.student``: the student itself (compiled in place with
    speed="compile") or a DistributedStudent under DDP. The benchmark drives this same object, so what it times is
    what training runs.
    """

    student: nn.Module
    teachers: Sequence[nn.Module]
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    config: TrainConfig
    plan: SpeedPlan
    device: torch.device
    num_classes: int
    teacher_weights: torch.Tensor | None = None
    #: precomputed clean-teacher outputs (config.teacher_outputs="cached"), looked up by sample index and flip
    teacher_outputs: CleanTeacherOutputs | None = None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment, attack (inner maximisation) and compute the method's loss; returns (loss, logits).

        ``index`` (the batch's sample indices) is needed only with precomputed teacher outputs.
        """
        config = self.config
        flipped = None
        if config.augment:
            x, flipped = random_crop_flip(x, config.crop_padding, config.flip, return_flips=True)
        batch_outputs = None
        if self.teacher_outputs is not None:
            if index is None:
                raise ValueError("precomputed teacher outputs need the batch's sample indices (index=...)")
            batch_outputs = self.teacher_outputs.lookup(index, flipped, x.device)
        x = to_memory_format(x, self.plan)
        if isinstance(self.student, DistributedStudent):
            self.student.ddp_calls = 0
        ctx = StepContext(
            x=x, y=y, student=self.student, teachers=self.teachers, teacher_weights=self.teacher_weights,
            num_classes=self.num_classes, eps=config.eps, step_size=config.step_size, steps=config.steps,
            epoch=epoch, epochs=config.epochs, teacher_outputs=batch_outputs,
        )
        # bf16 autocast covers the attack too: autograd returns the input gradient in x_adv's dtype (fp32), so
        # the perturbation is accumulated and projected in fp32 while the convolutions run in bf16.
        with self.plan.autocast(self.device):
            x_adv = self.method.perturb(ctx)
            loss, logits = self.method.loss(ctx, x_adv)
        return loss.float(), logits

    def update(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Backward (outside autocast), gradient sync across processes, SGD step and schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        if isinstance(self.student, DistributedStudent) and self.student.ddp_calls == 0:
            # The method reached the student without a training-mode forward through DDP (e.g. only through
            # its submodules), so DDP reduced nothing: average the gradients by hand instead.
            all_reduce_gradients_(p for group in self.optimizer.param_groups for p in group["params"])
        self.optimizer.step()
        self.scheduler.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """The whole step; returns the detached loss (no host sync)."""
        loss, _ = self.forward(x, y, epoch)
        self.update(loss)
        return loss.detach()


def _nonfinite_error(method: Method, config: TrainConfig, history: list[dict[str, Any]], kept: bool, epoch: int,
                     step: int, value: float) -> FloatingPointError:
    saved = history and kept
    where = f"the checkpoint after epoch {history[-1]['epoch'] + 1} is kept" if saved else "nothing was saved"
    return FloatingPointError(
        f"{method.name}: loss became {value} at epoch {epoch + 1}, step {step + 1}; training "
        f"stopped ({where}). Lower lr (now {config.lr}) or check the data for NaNs."
    )


def train(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    method: Method,
    train_set: Dataset,
    num_classes: int,
    config: TrainConfig,
    device: torch.device,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    teacher_weights: torch.Tensor | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    *,
    run_info: dict[str, Any] | None = None,
    force_resume: bool = False,
    log_dir: str | Path | None = None,
    plan: SpeedPlan | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` with ``method``; returns the per-epoch history.

    A checkpoint is written atomically after every epoch to ``checkpoint_dir/last.pt``; ``resume=True``
    continues after the last saved epoch. A non-finite loss stops training with FloatingPointError and leaves the
    last good checkpoint in place (in fast mode the loss is read back every few steps, not every step).

    Under torchrun every process calls this with the same arguments: batches are sharded, gradients averaged
    with DDP, the history is global, and only rank 0 shows progress, logs and writes the checkpoint;
    ``on_epoch_end`` runs on every rank (so a callback that stops training stops all of them).

    ``run_info`` (JSON-like: method, student, ...) is stored in the checkpoint with the config; resuming with a
    different config or run_info raises ValueError naming the differences, unless ``force_resume=True``, which
    continues and records the changes in the first resumed epoch's history entry ('resumed_with_changes').

    ``log_dir`` (the run folder) receives every finished epoch as a line of metrics.jsonl and, when tensorboard is
    installed, as TensorBoard scalars (robustcompress.trainer.epoch_log); the validation metrics an
    ``on_epoch_end`` callback adds to the epoch's record are logged with it.

    ``plan``: the speed plan to train with, when the caller has resolved it already (to record it, as fit does);
    by default it is resolved here from the config, the device and the image size.
    """
    check_teachers_given(method, teachers)
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise ValueError("the training set is empty; pass a dataset with at least one image")
    check_training_set_size(len(train_set))  # type: ignore[arg-type]
    check_attack_budget(method, config)
    check_dataset_images(train_set, "train_data")  # iterate_shards indexes in-memory tensors without a check
    input_size = int(train_set[0][0].shape[-1])
    if plan is None:
        plan = training_plan(config, device, input_size)
    main_process = is_main_process()
    log.info(plan.summary())
    progress_note(plan.summary(), config.progress)  # once per run, so a user sees what precision trains
    student.to(device)
    for t in teachers:
        t.to(device).eval().requires_grad_(False)
    seed_everything(config.seed)  # methods that build layers (feature adapters) draw them from the seed
    method.setup(student, teachers, num_classes, input_size)
    method.to(device)
    params = list(student.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps_per_epoch = global_batches_per_epoch(len(train_set), config.batch_size)  # type: ignore[arg-type]
    scheduler = make_scheduler(optimizer, config.schedule, config.epochs * steps_per_epoch)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    resumed_with_changes: dict[str, Any] | None = None
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs a checkpoint directory (out_dir=...) to resume from")
        if ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            changes = resume_differences(state, config, run_info)
            if changes and not force_resume:
                listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in changes.items())
                raise ValueError(
                    f"cannot resume from {ckpt_path}: it was trained with different settings ({listed}). Rerun with "
                    "the checkpoint's settings, use a new output folder, or force it (force=True; CLI: --resume "
                    "--force), which records the change in the bundle"
                )
            if changes:
                resumed_with_changes = {k: {"checkpoint": old, "now": new} for k, (old, new) in changes.items()}
                log.warning("resuming %s with changed settings: %s", ckpt_path, resumed_with_changes)
            try:
                student.load_state_dict(state["student"])
            except RuntimeError as exc:
                raise ValueError(f"the checkpoint {ckpt_path} holds weights of another student architecture, which "
                                 "cannot be resumed even with force; use a new output folder") from exc
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            start_epoch = int(state["epoch"]) + 1
            if main_process:
                log.info("resuming from %s after epoch %d", ckpt_path, start_epoch)
        else:
            log.warning("resume=True but no checkpoint at %s; starting from scratch", ckpt_path)
    teacher_outputs = _precomputed_teacher_outputs(method, teachers, train_set, config, device)
    train_set = place_dataset(train_set, device, plan)
    epoch_log = EpochLog(log_dir, start_epoch) if log_dir is not None and main_process else None
    with speed_context(plan, student, teachers) as (student_forward, teacher_forwards), \
            epoch_log or contextlib.nullcontext():
        runner = TrainStep(
            wrap_for_training(student_forward, method, device), teacher_forwards, method, optimizer, scheduler,
            config, plan, device, num_classes, teacher_weights, teacher_outputs,
        )
        for epoch in range(start_epoch, config.epochs):
            record = _train_epoch(runner, train_set, epoch, steps_per_epoch, history, ckpt_path is not None)
            if resumed_with_changes:
                record["resumed_with_changes"], resumed_with_changes = resumed_with_changes, None
            history.append(record)
            if ckpt_path is not None and main_process:
                atomic_save(
                    {
                        "student": student.state_dict(),
                        "method": method.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "history": history,
                        "config": asdict(config),
                        "run": dict(run_info or {}),
                    },
                    ckpt_path,
                )
            if main_process:
                log.info("%s epoch %d: loss %.4f train acc %.3f", method.name, epoch + 1, record["loss"],
                         record["train_acc"])
            try:
                if on_epoch_end is not None:  # after the checkpoint, so a callback that stops training loses nothing
                    on_epoch_end(epoch, record)
            finally:  # a callback that stops training still leaves the epoch (and what it measured) in the log
                if epoch_log is not None:
                    epoch_log.add(record)
    return history


def _precomputed_teacher_outputs(
    method: Method, teachers: Sequence[nn.Module], train_set: Dataset, config: TrainConfig, device: torch.device
) -> CleanTeacherOutputs | None:
    """With teacher_outputs="cached": the method's clean-image teachers run once over the training set."""
    if config.teacher_outputs == "live" or not teachers:
        return None
    plan = method.clean_teacher_plan(len(teachers))
    if plan is None:
        raise ValueError(f"method '{method.name}' queries its teachers on adversarial images, so their outputs "
                         "cannot be computed in advance; use teacher_outputs='live'")
    if isinstance(train_set, TensorDataset):
        images = train_set.tensors[0]
    else:
        images = torch.stack([train_set[i][0] for i in range(len(train_set))])  # type: ignore[arg-type]
    return CleanTeacherOutputs.build(teachers, plan, images, config.augment and config.flip, device,
                                     progress=config.progress)


#: Settings that may change between an interrupted run and its resumption without changing what is trained.
RESUME_FREE_FIELDS = frozenset({"progress"})


def resume_differences(state: dict[str, Any], config: TrainConfig, run_info: dict[str, Any] | None
                       ) -> dict[str, tuple[Any, Any]]:
    """{field: (checkpoint's value, current value)} for every saved setting the current run changes."""
    saved = {**state.get("config", {}), **state.get("run", {})}
    now = {**asdict(config), **(run_info or {})}
    return {k: (v, now.get(k)) for k, v in saved.items() if k not in RESUME_FREE_FIELDS and now.get(k) != v}


def _train_epoch(
    runner: TrainStep, train_set: Dataset, epoch: int, steps_per_epoch: int, history: list[dict[str, Any]],
    checkpointing: bool,
) -> dict[str, Any]:
    """One pass over the data; the host reads values back only at sync points (every plan.sync_every steps)."""
    config, plan, method, device = runner.config, runner.plan, runner.method, runner.device
    # Seeding per epoch makes a resumed run see exactly the batches and noise an uninterrupted one would; the
    # batch order uses its own generator shared by all processes, the augmentation and attack noise differ per rank.
    seed_everything(config.seed * 1000 + epoch + 7919 * rank())
    runner.student.train()
    method.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    bad_value = torch.zeros((), device=device)
    seen = 0
    bar = progress_bar(iterate_shards(train_set, config.batch_size, True, config.seed * 1000 + epoch, device),
                       f"{method.name} epoch {epoch + 1}/{config.epochs}", config.progress, total=steps_per_epoch)

    def check_finite() -> None:
        worst = all_reduce_(bad_step.clone(), "max")  # every rank raises together, none waits forever
        if worst.item() >= 0:
            local = bad_step.item() >= 0
            raise _nonfinite_error(method, config, history, checkpointing, epoch,
                                   int(bad_step.item() if local else worst.item()),
                                   bad_value.item() if local else float("nan"))

    for step, (x, y, weight, index) in enumerate(bar):
        loss, logits = runner.forward(x, y, epoch, index)
        value = loss.detach()
        first_bad = (bad_step < 0) & ~torch.isfinite(value)
        bad_step = torch.where(first_bad, step, bad_step)
        bad_value = torch.where(first_bad, value, bad_value)
        if step % plan.sync_every == 0:
            check_finite()  # before the update, so at a sync point a bad loss never reaches the weights
        runner.update(loss, weight)
        loss_sum += value * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if step % PROGRESS_EVERY == 0 and not bar.disable:
            bar.set_postfix(loss=f"{(loss_sum / seen).item():.3f}", acc=f"{(correct / seen).item():.3f}")
    check_finite()
    method.end_epoch(epoch)
    totals = all_reduce_(torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)]))
    average_buffers_(runner.student)
    average_buffers_(method)
    loss_total, correct_total, seen_total = totals.tolist()
    return {
        "epoch": epoch,
        "loss": loss_total / seen_total,
        "train_acc": correct_total / seen_total,
        "lr": runner.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
    }
