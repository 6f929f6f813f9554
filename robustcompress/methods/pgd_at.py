"""PGD adversarial training (Madry et al., ICLR 2018): no teacher, cross-entropy on PGD examples."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.attacks import pgd
from robustcompress.methods.registry import Method, StepContext, register_method


@register_method("pgd-at")
class PGDAT(Method):
    summary = "Madry PGD adversarial training: CE on PGD-CE examples, no teacher."
    uses_teachers = False

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        return pgd(ctx.student, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps)

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = ctx.student(x_adv)
        return F.cross_entropy(logits, ctx.y), logits
