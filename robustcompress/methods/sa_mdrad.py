"""SA-MDRAD, Sample-Adaptive Multi-teacher Dynamic Rectification Adversarial Distillation (Li et al., 2024).

Source: Li et al., Multimedia Systems 30, 225 (2024), doi:10.1007/s00530-024-01416-7. Only the abstract could be
read; everything below that goes beyond it is a RECONSTRUCTION, documented in docs/methods.md:

* teachers are heterogeneous *standard* (non-robust) models; logits and features are distilled (abstract);
* each teacher's clean logits are rectified with the label as in Dynamic Rectification KD (Amik et al. 2022): where
  the arg-max is not the true class, the arg-max and true-class logits swap places (abstract: "dynamic
  rectification"; the swap rule is DR-KD's);
* per-sample fusion weights are a softmax over teachers of log p_t(y|x) / fusion_temperature, i.e. proportional to
  each teacher's true-class confidence on the clean image (abstract: "adaptive fusion based on teachers'
  predictions"; the formula is ours);
* the attack ascends KL(fused clean target || student(x')) because non-robust teachers are unreliable on x';
* loss = tau^2 [adv_weight KL(q || S(x_adv)) + (1 - adv_weight) KL(q || S(x))] + feature_weight * feature term,
  the feature term matching 1x1-conv-adapted student features on x_adv to each teacher's clean features
  (L2-normalised, resized to the teacher's map), weighted per sample by the same fusion weights.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcompress.attacks import eval_mode, kl_div, pgd
from robustcompress.methods.common import ensemble_probs, require_teacher
from robustcompress.methods.losses import AdvCleanKL
from robustcompress.methods.registry import Method, StepContext, register_method
from robustcompress.methods.teacher_outputs import CleanTeacherPlan
from robustcompress.models.features import logits_and_features, probe_feature_shape


def rectify_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Swap each row's arg-max logit with its true-class logit (DR-KD); rows already right are unchanged."""
    top = logits.argmax(dim=1, keepdim=True)
    true = y.view(-1, 1)
    top_value = logits.gather(1, top)
    true_value = logits.gather(1, true)
    return logits.scatter(1, top, true_value).scatter(1, true, top_value)


def fusion_weights(
    logits: Sequence[torch.Tensor], y: torch.Tensor, temperature: float = 1.0, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, T) per-sample teacher weights summing to 1: softmax over teachers of log p_t(y | x) / temperature.

    A teacher that is confident in the true class gets more weight; ``prior`` (T,) multiplies in fixed
    user-given teacher weights before renormalising.
    """
    log_true = torch.stack([F.log_softmax(z.float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1) for z in logits], 1)
    scores = log_true / temperature
    if prior is not None:
        scores = scores + torch.log(prior.to(scores).clamp_min(1e-12))
    return F.softmax(scores, dim=1)


def fused_target(logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum_t w_t * softmax(z_t / temperature) with per-sample weights (N, T): methods.common.ensemble_probs."""
    return ensemble_probs([z.float() for z in logits], weights, temperature)


def match_features(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Per-sample squared distance of L2-normalised maps after resizing the student's to the teacher's H x W.

    Normalising makes heterogeneous teachers (different activation scales) comparable; the value lies in [0, 4].
    """
    size = teacher_map.shape[-2:]
    if student_map.shape[-2:] != size:
        if student_map.shape[-2] >= size[0] and student_map.shape[-1] >= size[1]:
            student_map = F.adaptive_avg_pool2d(student_map, size)
        else:
            student_map = F.interpolate(student_map, size=size, mode="bilinear", align_corners=False)
    s = F.normalize(student_map.flatten(1), dim=1)
    t = F.normalize(teacher_map.flatten(1).float(), dim=1)
    return (s - t).pow(2).sum(dim=1)


@register_method("sa-mdrad")
class SAMDRAD(Method):
    summary = "SA-MDRAD: rectified, sample-adaptively fused standard teachers; logits + features distilled."

    def __init__(
        self,
        temperature: float = 4.0,
        adv_weight: float = 5 / 6,
        feature_weight: float = 1.0,
        fusion_temperature: float = 1.0,
        feature_stage: int = -1,
    ) -> None:
        super().__init__()
        if not 0 <= adv_weight <= 1:
            raise ValueError(f"adv_weight={adv_weight} must lie in [0, 1] (it splits adversarial vs clean distillation)")
        if temperature <= 0 or fusion_temperature <= 0:
            raise ValueError("temperature and fusion_temperature must be positive")
        self.temperature = temperature
        self.adv_weight = adv_weight
        self.feature_weight = feature_weight
        self.fusion_temperature = fusion_temperature
        self.feature_stage = feature_stage
        self.adapters = nn.ModuleList()

    def setup(self, student: nn.Module, teachers: Sequence[nn.Module], num_classes: int, input_size: int) -> None:
        """One 1x1 conv per teacher maps the student's feature channels onto that teacher's."""
        require_teacher(self.name, teachers)
        self.adapters = nn.ModuleList()
        if self.feature_weight == 0:
            return
        channels = int(getattr(student, "mean", torch.zeros(1, 3)).shape[1])
        student_c = probe_feature_shape(student, input_size, channels, self.feature_stage)[0]
        for teacher in teachers:
            teacher_c = probe_feature_shape(teacher, input_size, channels, self.feature_stage)[0]
            self.adapters.append(nn.Conv2d(student_c, teacher_c, kernel_size=1, bias=False))

    def clean_teacher_plan(self, num_teachers: int) -> CleanTeacherPlan:
        """Every teacher is queried on the clean image only (logits, and features when the feature term is on)."""
        return CleanTeacherPlan(tuple(range(num_teachers)), self.feature_stage if self._uses_features() else None)

    def _uses_features(self) -> bool:
        return self.feature_weight != 0

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        if self._uses_features() and len(self.adapters) != len(ctx.teachers):
            raise RuntimeError("sa-mdrad: call method.setup(student, teachers, ...) before training (the trainer does)")
        # One forward per teacher per batch, on the clean image only: logits and features come out together
        # (or out of the table computed once before training, with teacher_outputs="cached").
        logits, features = [], []
        if ctx.teacher_outputs is not None:
            cached = ctx.teacher_outputs
            logits = [cached.logits[t] for t in range(len(ctx.teachers))]
            if self._uses_features():
                features = [cached.features[t] for t in range(len(ctx.teachers))]
        else:
            with torch.no_grad(), eval_mode(*ctx.teachers):
                for teacher in ctx.teachers:
                    if self._uses_features():
                        z, f = logits_and_features(teacher, ctx.x, self.feature_stage)
                        features.append(f)
                    else:
                        z = teacher(ctx.x)
                    logits.append(z.float())
        weights = fusion_weights(logits, ctx.y, self.fusion_temperature, ctx.teacher_weights)
        rectified = [rectify_logits(z, ctx.y) for z in logits]
        target = fused_target(rectified, weights, self.temperature)
        ctx.cache.update(target=target, weights=weights, teacher_features=features)
        t = self.temperature
        return pgd(ctx.student, ctx.x, target, ctx.eps, ctx.step_size, ctx.steps,
                   loss=lambda z, q: kl_div(z, q, temperature=t))

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.temperature
        target, weights = ctx.cache["target"], ctx.cache["weights"]
        if self._uses_features():
            logits_adv, student_map = logits_and_features(ctx.student, x_adv, self.feature_stage)
        else:
            logits_adv = ctx.student(x_adv)
        loss, _ = AdvCleanKL(self.adv_weight, t)(ctx.student, x_adv, ctx.x, target, logits_adv=logits_adv)
        if self._uses_features():
            per_teacher = torch.stack(
                [match_features(adapter(student_map), f) for adapter, f in zip(self.adapters, ctx.cache["teacher_features"])],
                dim=1,
            )
            loss = loss + self.feature_weight * (weights * per_teacher).sum(dim=1).mean()
        return loss, logits_adv
