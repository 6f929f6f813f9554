"""AKD, adversarial knowledge distillation with label mixing (Maroto, Ortiz-Jimenez & Frossard, 2022).

Inner: PGD on the student's cross-entropy with hard labels. Outer: soft cross-entropy of S(x_adv) against
alpha * p_T(x_adv) + (1 - alpha) * onehot(y), the teacher seeing the same adversarial input, temperature 1.
A teacher ensemble is the weighted average of the teachers' probabilities (not logits). With alpha=0 this is PGD-AT.
Checked against the first author's later public code (github.com/javier-maroto/kdmc, a modulation-classification
project: kdmc/train/akd.py and KTTrainer.pred_kt), which builds exactly this target and averages the ensemble's
softmax outputs ("it probably is better to average predictions than logits").

The default alpha=0.5 is NOT the paper's: the paper's body could not be read, and the authors' code has no
default (``--kt_alpha``, "1.0 = only use kt preds"; its one example script uses 1.0). Tune alpha for your teacher.
Early-stopped and weakly adversarially trained teachers, which the paper recommends, are made with
robustcompress.teachers.train_teacher(select=...) and weak_adversarial_finetune(...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.attacks import pgd, soft_cross_entropy
from robustcompress.methods.common import require_teacher, teacher_probs
from robustcompress.methods.registry import Method, StepContext, register_method


def mixed_target(teacher_p: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * teacher probabilities + (1 - alpha) * one-hot labels."""
    return alpha * teacher_p + (1 - alpha) * F.one_hot(y, teacher_p.shape[1]).to(teacher_p)


@register_method("akd")
class AKD(Method):
    summary = "AKD: PGD-CE examples; soft CE to alpha*teacher(x_adv) + (1-alpha)*labels."

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = alpha

    @property
    def needs_teacher(self) -> bool:
        """alpha=0 is PGD-AT: no teacher needed."""
        return self.alpha != 0

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        if self.alpha > 0:
            require_teacher(self.name, ctx.teachers)
        return pgd(ctx.student, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps)

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.alpha > 0:
            target = mixed_target(teacher_probs(ctx.teachers, x_adv, ctx.teacher_weights), ctx.y, self.alpha)
        else:
            target = F.one_hot(ctx.y, ctx.num_classes).float()
        logits_adv = ctx.student(x_adv)
        return soft_cross_entropy(logits_adv, target).mean(), logits_adv
