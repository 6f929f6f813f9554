"""Standard training: clean cross-entropy, no adversary. Used to train the undefended teachers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.methods.registry import Method, StepContext, register_method


@register_method("standard")
class Standard(Method):
    summary = "Plain cross-entropy on clean images (no robustness); for training standard teachers."
    uses_teachers = False
    adversarial = False

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        return ctx.x

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = ctx.student(x_adv)
        return F.cross_entropy(logits, ctx.y), logits
