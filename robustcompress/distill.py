"""The student's training run: its seeded initial weights, the method's loop and best-epoch selection."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from robustcompress.data import split_validation
from robustcompress.methods import Method
from robustcompress.models import ImageClassifier, resolve_model
from robustcompress.runtime_env import seed_everything
from robustcompress.trainer import TrainConfig, train
from robustcompress.trainer.fast import SpeedPlan
from robustcompress.trainer.select import EpochCallback, train_and_select
from robustcompress.verify.evaluate import validation_score

VALIDATION_SPLIT_SEED = 0  # every run of a comparison selects on the same validation images, whatever its seed


def initial_student(spec: Any, num_classes: int, input_size: int, channels: int, seed: int) -> ImageClassifier:
    """The student before training: the same seed draws the same initial weights."""
    seed_everything(seed)
    return resolve_model(spec, num_classes=num_classes, input_size=input_size, channels=channels, role="student")


@dataclass
class StudentRun:
    """What training left: the per-epoch history, the final weights when selection kept another epoch, and why."""

    history: list[dict[str, Any]]
    last_state: dict[str, torch.Tensor] | None = None
    selection: dict[str, Any] = field(default_factory=dict)


def train_student(
    student: nn.Module, teachers: Sequence[nn.Module], method: Method, train_set: Dataset, num_classes: int,
    config: TrainConfig, device: torch.device, *, select: str = "last", val_size: int | float = 1000,
    checkpoint_dir: Path | None = None, resume: bool = False, force_resume: bool = False,
    teacher_weights: torch.Tensor | None = None, run_info: dict[str, Any] | None = None, log_dir: Path | None = None,
    plan: SpeedPlan | None = None,
) -> StudentRun:
    """Train ``student`` with ``method`` and leave the selected weights in it.

    ``select='best_robust'`` trains on all but ``val_size`` training images (the same ones for every seed), scores
    PGD-10 accuracy on them after each epoch (validation_score) and keeps the best epoch; with a ``checkpoint_dir``
    the best snapshot survives an interruption. ``'last'`` keeps the final weights. ``log_dir`` (the run folder)
    receives the per-epoch metrics (metrics.jsonl, TensorBoard), validation scores included. ``plan``: the speed
    plan to train with when the caller resolved it to record it (robustcompress.trainer.train resolves it otherwise).
    """
    score, val_set = None, None
    if select == "best_robust":
        train_set, val_set = split_validation(train_set, val_size, VALIDATION_SPLIT_SEED)
        score = validation_score(val_set, config.eps, device, config.seed)

    def run_epochs(on_epoch_end: EpochCallback) -> list[dict[str, Any]]:
        return train(student, teachers, method, train_set, num_classes, config, device, checkpoint_dir=checkpoint_dir,
                     resume=resume, teacher_weights=teacher_weights, on_epoch_end=on_epoch_end, run_info=run_info,
                     force_resume=force_resume, log_dir=log_dir, plan=plan)

    kept = train_and_select(student, run_epochs, select, config.epochs, score=score, checkpoint_dir=checkpoint_dir)
    run = StudentRun(kept.history)
    if kept.last_state is not None:
        run.last_state = kept.last_state
        run.selection = {"select": "best_robust", "val_images": len(val_set), **kept.summary()}  # type: ignore
    return run
