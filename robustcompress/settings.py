"""RobustCompressor's arguments checked before any work, each error naming the argument and a valid value."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from robustcompress.methods import Method
from robustcompress.arguments import parse_eps, require_int, require_number


def check_arguments(*, eps: Any, step_size: Any, teacher_epochs: Any, teacher_finetune_epochs: Any,
                    verify_examples: Any, num_classes: Any, input_size: Any, teacher_weights: Any) -> None:
    """Raise a ValueError for the first argument outside its range (TrainConfig checks the training ones).

    eps and step_size follow the CLI's rule (parse_eps): eps=8 or eps=1 is refused as ambiguous, not taken as the
    whole pixel range.
    """
    parse_eps(eps, "eps")
    if step_size is not None:
        parse_eps(step_size, "step_size")
    require_int("teacher_epochs", teacher_epochs, least=1)
    require_int("verify_examples", verify_examples, least=1)
    if num_classes is not None:
        require_int("num_classes", num_classes, least=2)
    if input_size is not None:
        require_int("input_size", input_size, least=1)
    if teacher_weights is not None:
        if isinstance(teacher_weights, (str, bytes)) or not hasattr(teacher_weights, "__len__"):
            raise ValueError(f"teacher_weights must be a list of numbers, one per teacher; got {teacher_weights!r}")
        for i, weight in enumerate(teacher_weights):
            require_number(f"teacher_weights[{i}]", weight, least=0,
                           hint="a weight is a teacher's share of the distillation target (they are normalised "
                                "to sum to 1); negative shares are meaningless, 0 leaves a teacher out")
        if sum(teacher_weights) <= 0:
            raise ValueError(f"teacher_weights {list(teacher_weights)} sum to 0; give at least one teacher a "
                             "positive weight")
    if teacher_finetune_epochs < 0:
        raise ValueError(f"teacher_finetune_epochs={teacher_finetune_epochs} must be 0 (no fine-tuning) or more")


def teacher_list(teachers: Any) -> list[Any]:
    """One teacher given alone (a name or a module) becomes a list of one."""
    return [teachers] if isinstance(teachers, (str, nn.Module)) else list(teachers)


def check_teachers(method: Method, method_name: str, teachers: Sequence[Any],
                   teacher_weights: Sequence[float] | None) -> torch.Tensor | None:
    """Refuse a distillation method without teachers or weights for another number of teachers; return the
    weights normalised to sum to 1 (None: equal shares)."""
    if method.needs_teacher and not teachers:
        raise ValueError(f"method '{method_name}' distils from teachers; pass teachers=[...] or use method='pgd-at' "
                         "(CLI: --teachers NAME ... or --method pgd-at)")
    if teacher_weights is None:
        return None
    if len(teacher_weights) != len(teachers):
        raise ValueError(f"teacher_weights has {len(teacher_weights)} entries for {len(teachers)} teachers")
    weights = torch.tensor(teacher_weights, dtype=torch.float32)
    return weights / weights.sum()
