"""ARD, Adversarially Robust Distillation (Goldblum et al., AAAI 2020).

Student attacked with PGD on CE; loss alpha*T^2*KL(T(x)/T || S(x_adv)/T) + (1-alpha)*CE(S(x), y).
Defaults follow the authors' CIFAR-10 setting (alpha=1, T=30).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods.common import clean_teacher_probs, every_teacher_on_clean_images, require_teacher
from robustcompress.methods.registry import Method, StepContext, register_method
from robustcompress.methods.teacher_outputs import CleanTeacherPlan


@register_method("ard")
class ARD(Method):
    summary = "ARD: student's adversarial output matches the teacher's clean output (KL at temperature T)."

    def __init__(self, alpha: float = 1.0, temperature: float = 30.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature

    def clean_teacher_plan(self, num_teachers: int) -> CleanTeacherPlan:
        """The teachers only ever see the clean image, so their outputs may be computed once before training."""
        return every_teacher_on_clean_images(num_teachers)

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        return pgd(ctx.student, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps)

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.temperature
        target = clean_teacher_probs(ctx, temperature=t)
        logits_adv = ctx.student(x_adv)
        distil = kl_div(logits_adv, target, temperature=t).mean() * t * t
        loss = self.alpha * distil
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(ctx.student(ctx.x), ctx.y)
        return loss, logits_adv
