"""TRADES (Zhang et al., ICML 2019): CE on clean inputs plus beta * KL(student(x) || student(x_adv))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.attacks import eval_mode, kl_div, pgd
from robustcompress.methods.registry import Method, StepContext, register_method


@register_method("trades")
class TRADES(Method):
    summary = "TRADES: clean CE + beta * KL between clean and adversarial predictions, no teacher."
    uses_teachers = False

    def __init__(self, beta: float = 6.0) -> None:
        super().__init__()
        self.beta = beta

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        with torch.no_grad(), eval_mode(ctx.student):
            clean_probs = F.softmax(ctx.student(ctx.x), dim=1)
        # TRADES starts from a tiny Gaussian, not the uniform eps-ball start.
        start = (ctx.x + 0.001 * torch.randn_like(ctx.x)).clamp(0, 1)
        return pgd(ctx.student, ctx.x, clean_probs, ctx.eps, ctx.step_size, ctx.steps, loss=kl_div, x_init=start)

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_clean = ctx.student(ctx.x)
        logits_adv = ctx.student(x_adv)
        robust = kl_div(logits_adv, F.softmax(logits_clean, dim=1)).mean()
        return F.cross_entropy(logits_clean, ctx.y) + self.beta * robust, logits_adv
