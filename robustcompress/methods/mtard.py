"""MTARD, Multi-Teacher Adversarial Robustness Distillation (Zhao et al., ECCV 2022), after the authors' code
(github.com/zhaoshiji123/MTARD, mtard/mtard_resnet18_cifar10.py and mtard_loss.py).

Two teachers: ``teachers[0]`` is the adversarially robust teacher, ``teachers[1]`` the clean (standard) one; with a
single teacher it plays both roles. Inner: PGD on the student's cross-entropy from x + 0.001 * N(0, I). Outer:
    w_adv KL(T_adv(x_adv) || S(x_adv)) + w_nat KL(T_nat(x) || S(x)),  w_adv = 1 - w_nat,
with the adaptive balance of the code: after recording both losses at the first step (L0), every step sets
r = (L / L0) ** balance_power for each term and moves w_nat <- w_nat - weight_lr * (w_nat - r_nat / (r_adv + r_nat)),
so the term that has fallen least (relative to its start) gets more weight. weight_lr is divided by 10 where the
code divides the learning rate (epochs 215, 260, 285 of 300). The weights live in buffers, so they survive
checkpoints. The code averages KL over batch *and* classes; here it is averaged over the batch (a constant 1/C
factor, absorbed by the learning rate).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from robustcompress.attacks import pgd
from robustcompress.methods.common import ensemble_probs, require_teacher, teacher_probs, teacher_probs_batched
from robustcompress.methods.losses import AdvCleanKL
from robustcompress.methods.registry import Method, StepContext, register_method
from robustcompress.methods.teacher_outputs import CleanTeacherPlan

#: Fractions of training at which the authors' code divides the learning rate (and weight_lr) by 10.
WEIGHT_LR_MILESTONES = (215 / 300, 260 / 300, 285 / 300)


def teacher_roles(teachers: Sequence[nn.Module]) -> tuple[nn.Module, nn.Module]:
    """(adversarial teacher, clean teacher) from a list of one or two teachers."""
    if len(teachers) not in (1, 2):
        raise ValueError(
            f"mtard takes one teacher or two (robust teacher first, clean teacher second); got {len(teachers)}"
        )
    return teachers[0], teachers[-1]


@register_method("mtard")
class MTARD(Method):
    summary = "MTARD: robust teacher on adversarial inputs, clean teacher on clean inputs, adaptive loss balance."

    def __init__(self, weight_lr: float = 0.025, balance_power: float = 1.0) -> None:
        super().__init__()
        self.weight_lr = weight_lr
        self.balance_power = balance_power
        self.register_buffer("nat_weight", torch.tensor(0.5))
        self.register_buffer("initial_losses", torch.full((2,), float("nan")))  # (adv, nat) at the first step

    def clean_teacher_plan(self, num_teachers: int) -> CleanTeacherPlan | None:
        """The clean teacher (the second) sees clean images only; a single teacher also sees x_adv."""
        return CleanTeacherPlan((1,)) if num_teachers == 2 else None

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        teacher_roles(ctx.teachers)  # fail before the attack, not after it
        start = ctx.x + 0.001 * torch.randn_like(ctx.x)
        return pgd(ctx.student, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps, x_init=start)

    def current_weight_lr(self, ctx: StepContext) -> float:
        drops = sum(ctx.epoch >= f * ctx.epochs for f in WEIGHT_LR_MILESTONES)
        return self.weight_lr * 0.1**drops

    @torch.no_grad()
    def _rebalance(self, adv_loss: torch.Tensor, nat_loss: torch.Tensor, weight_lr: float) -> None:
        current = torch.stack([adv_loss, nat_loss]).detach().float()
        self.initial_losses.copy_(torch.where(torch.isnan(self.initial_losses), current, self.initial_losses))
        rates = (current / self.initial_losses.clamp_min(1e-12)).pow(self.balance_power)
        nat_share = rates[1] / rates.sum().clamp_min(1e-12)
        self.nat_weight.sub_(weight_lr * (self.nat_weight - nat_share))

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adv_teacher, clean_teacher = teacher_roles(ctx.teachers)
        if adv_teacher is clean_teacher:  # one teacher in both roles: one batched forward
            adv_soft, clean_soft = teacher_probs_batched([adv_teacher], [x_adv, ctx.x])
        elif ctx.teacher_outputs is not None:  # the clean teacher's outputs were computed once before training
            adv_soft = teacher_probs([adv_teacher], x_adv)
            clean_soft = ensemble_probs([ctx.teacher_outputs.logits[len(ctx.teachers) - 1]])
        else:
            adv_soft, clean_soft = teacher_probs([adv_teacher], x_adv), teacher_probs([clean_teacher], ctx.x)
        # Both parts of the adversarial/clean mix, weighted here by the adaptive balance instead of a fixed weight.
        adv_loss, nat_loss, logits_adv = AdvCleanKL().parts(ctx.student, x_adv, ctx.x, adv_soft, clean_soft,
                                                            always_clean=True)
        assert nat_loss is not None
        if self.training:
            self._rebalance(adv_loss, nat_loss, self.current_weight_lr(ctx))
        nat_w = self.nat_weight.detach()
        return (1 - nat_w) * adv_loss + nat_w * nat_loss, logits_adv
