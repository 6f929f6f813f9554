"""AdaAD, Adaptive Adversarial Distillation (Huang et al., "Boosting Accuracy and Robustness of Student Models via
Adaptive Adversarial Distillation", CVPR 2023), after the public ``adaad_inner_loss`` code.

Inner: the attack looks for the point where student and teacher disagree most. From x + 0.001 * N(0, I), PGD
ascends sum KL(T(x') || S(x')) with gradients through both models (the code's nn.KLDivLoss(log S, T), i.e. the
teacher's distribution is the reference), student BatchNorm in eval mode, teacher frozen in eval mode. Outer:
    adv_weight KL(T(x_adv) || S(x_adv)) + (1 - adv_weight) KL(T(x) || S(x)),
adv_weight = 1 as in the public training scripts (the clean term then vanishes). A teacher ensemble is the
weighted average of the teachers' probabilities, inside the attack as well.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods.common import ensemble_probs, require_teacher, teacher_probs_batched
from robustcompress.methods.losses import AdvCleanKL
from robustcompress.methods.registry import Method, StepContext, register_method


class StudentAndTeachers(nn.Module):
    """Student logits and the teacher ensemble's probabilities on the same input, both differentiable in x.

    The models are held in a tuple, not registered as children, so train()/eval() on this wrapper leaves their
    modes alone; pgd(models_in_eval=...) sets and restores each one's mode instead.
    """

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module], weights: torch.Tensor | None) -> None:
        super().__init__()
        self.models = (student, tuple(teachers))
        self.weights = weights

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        student, teachers = self.models
        return student(x), ensemble_probs([t(x).float() for t in teachers], self.weights)


def disagreement(outputs: tuple[torch.Tensor, torch.Tensor], _unused: object) -> torch.Tensor:
    """Per-sample KL(teacher || student), the quantity the AdaAD attack ascends."""
    student_logits, teacher_p = outputs
    return kl_div(student_logits, teacher_p)


@register_method("adaad")
class AdaAD(Method):
    summary = "AdaAD: attack where student and teacher disagree most, then match the teacher there."

    def __init__(self, adv_weight: float = 1.0) -> None:
        super().__init__()
        if not 0 <= adv_weight <= 1:
            raise ValueError(f"adv_weight={adv_weight} must lie in [0, 1]")
        self.adv_weight = adv_weight

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        pair = StudentAndTeachers(ctx.student, ctx.teachers, ctx.teacher_weights)
        start = ctx.x + 0.001 * torch.randn_like(ctx.x)
        return pgd(pair, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps, loss=disagreement, x_init=start,
                   models_in_eval=(ctx.student, *ctx.teachers))

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = [x_adv] if self.adv_weight == 1 else [x_adv, ctx.x]
        probs = teacher_probs_batched(ctx.teachers, inputs, ctx.teacher_weights)  # one forward per teacher
        return AdvCleanKL(self.adv_weight)(ctx.student, x_adv, ctx.x, probs[0], probs[-1])
