"""RSLAD, Robust Soft Label Adversarial Distillation (Zi et al., ICCV 2021).

The teacher's clean soft labels replace hard labels everywhere: the attack maximises KL(T(x) || S(x')), and the
loss is 5/6 * KL(T(x) || S(x_adv)) + 1/6 * KL(T(x) || S(x)).
"""
from __future__ import annotations

import torch

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods.common import clean_teacher_probs, every_teacher_on_clean_images, require_teacher
from robustcompress.methods.losses import AdvCleanKL
from robustcompress.methods.registry import Method, StepContext, register_method
from robustcompress.methods.teacher_outputs import CleanTeacherPlan


@register_method("rslad")
class RSLAD(Method):
    summary = "RSLAD: teacher's clean soft labels drive both the attack and the loss."

    def __init__(self, adv_weight: float = 5 / 6) -> None:
        super().__init__()
        self.adv_weight = adv_weight

    def clean_teacher_plan(self, num_teachers: int) -> CleanTeacherPlan:
        """The teachers only ever see the clean image, so their outputs may be computed once before training."""
        return every_teacher_on_clean_images(num_teachers)

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        soft = clean_teacher_probs(ctx)
        ctx.cache["soft"] = soft
        return pgd(ctx.student, ctx.x, soft, ctx.eps, ctx.step_size, ctx.steps, loss=kl_div)

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The clean term is always computed (the student's clean forward also updates BatchNorm statistics).
        mix = AdvCleanKL(self.adv_weight)
        return mix(ctx.student, x_adv, ctx.x, ctx.cache["soft"], always_clean=True)
