"""Dual-path distillation on untargeted and targeted intermediate adversarial samples (Dong et al., CVPR 2024).

Source: J. Dong, P. Koniusz, J. Chen, Z. J. Wang, Y.-S. Ong, "Robust Distillation via Untargeted and Targeted
Intermediate Adversarial Samples", CVPR 2024. Only the abstract could be read; from it: every intermediate sample
of the multi-step attack path is aligned between teacher and student, with adaptive weights that emphasise
informative samples and down-weight noisy ones, on two branches - the untargeted ascent away from the true class
and the targeted descent towards another class c_j. RECONSTRUCTED here (see docs/methods.md):

* both paths attack the student with cross-entropy, start from the clean image (no random start; with
  ``random_start=True`` both start from one uniform random point of the eps-ball, as FGSM-RS does against
  catastrophic overfitting when the trainer takes a single step), and take the trainer's step size and number of
  steps; c_j is the teacher ensemble's runner-up class on the clean image (``target_class="random"``, an
  ablation: a uniformly random wrong class);
* ``path_points`` evenly spaced iterates per path are used (always including the last; None = every iterate);
* weight of a point = drop of the teacher's true-class probability from the clean image to that point, zero where
  the teacher no longer predicts the true class (a noisy target), divided by the mean drop over the path's
  points in the batch where the teacher is still right;
* ``adaptive_weights=False`` (an ablation) weighs every point 1: plain distillation along both paths;
* loss = (1 - clean_weight) * mean over both paths of the weighted KL(T(x_k) || S(x_k))
         + clean_weight * KL(T(x) || S(x)), temperature 1; clean_weight = 1/6 is borrowed from RSLAD.
"""
from __future__ import annotations

import torch

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods.common import require_teacher, teacher_probs
from robustcompress.methods.registry import Method, StepContext, register_method


#: How the targeted path's class c_j is chosen: the teacher's most probable wrong class (the reconstruction) or a
#: uniformly random wrong class (an ablation).
TARGET_CLASSES = ("runner-up", "random")


def runner_up_class(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The most probable class other than the true one."""
    return probs.scatter(1, y.view(-1, 1), float("-inf")).argmax(dim=1)


def random_wrong_class(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class drawn uniformly from the ``num_classes - 1`` classes other than ``y``."""
    return (y + torch.randint(1, num_classes, y.shape, device=y.device)) % num_classes


def path_indices(steps: int, points: int | None) -> list[int]:
    """Indices of ``points`` evenly spaced iterates among ``steps`` (the last always included)."""
    if points is None or points >= steps:
        return list(range(steps))
    return sorted({round(i) for i in torch.linspace(steps - 1, 0, points).tolist()})


def dual_paths(
    student: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    points: int | None,
    random_start: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The selected intermediate samples of the untargeted path (away from y) and the targeted one (towards target),
    both from the clean image or, with ``random_start``, from one shared uniform random point of the eps-ball."""
    keep = path_indices(steps, points)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) if random_start else None
    away = pgd(student, x, y, eps, step_size, steps, random_start=False, x_init=start, return_path=True)
    towards = pgd(student, x, target, eps, step_size, steps, targeted=True, random_start=False, x_init=start,
                  return_path=True)
    return [away[i].detach() for i in keep], [towards[i].detach() for i in keep]  # type: ignore[index]


def path_weights(clean_true_p: torch.Tensor, point_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Weights for the (K*N) points of one path: true-class probability drop, 0 where the teacher is wrong.

    ``clean_true_p`` is (N,), ``point_probs`` (K*N, C) stacked point-major. The weights average 1 over the points
    where the teacher is still right, so a teacher that is wrong on much of the path contributes less in total
    instead of piling the whole term onto its few reliable points.
    """
    k = point_probs.shape[0] // y.shape[0]
    y_rep = y.repeat(k)
    reliable = point_probs.argmax(dim=1) == y_rep
    drop = (clean_true_p.repeat(k) - point_probs.gather(1, y_rep.view(-1, 1)).squeeze(1)).clamp_min(0) * reliable
    mean_over_reliable = drop.sum() / reliable.sum().clamp_min(1)
    return drop / mean_over_reliable.clamp_min(1e-12)  # all-zero drops stay zero; no host sync


@register_method("dual-path")
class DualPath(Method):
    summary = "Dual-path: teacher-student KL on every intermediate sample of an untargeted and a targeted PGD path."

    def __init__(self, path_points: int | None = None, clean_weight: float = 1 / 6, random_start: bool = False,
                 adaptive_weights: bool = True, target_class: str = "runner-up") -> None:
        super().__init__()
        if target_class not in TARGET_CLASSES:
            raise ValueError(f"target_class={target_class!r} must be one of {', '.join(TARGET_CLASSES)}")
        if path_points is not None and path_points < 1:
            raise ValueError(f"path_points={path_points} must be at least 1 (or None for every PGD iterate)")
        if not 0 <= clean_weight <= 1:
            raise ValueError(f"clean_weight={clean_weight} must lie in [0, 1]")
        self.path_points = path_points
        self.clean_weight = clean_weight
        self.random_start = bool(random_start)
        self.adaptive_weights = bool(adaptive_weights)
        self.target_class = target_class

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        require_teacher(self.name, ctx.teachers)
        if ctx.steps < 1:
            raise ValueError("dual-path distils along PGD paths and needs steps >= 1; raise steps (e.g. 10)")
        clean_probs = teacher_probs(ctx.teachers, ctx.x, ctx.teacher_weights)
        if self.target_class == "runner-up":
            target = runner_up_class(clean_probs, ctx.y)
        else:
            target = random_wrong_class(ctx.y, clean_probs.shape[1])
        away, towards = dual_paths(ctx.student, ctx.x, ctx.y, target, ctx.eps, ctx.step_size, ctx.steps,
                                   self.path_points, self.random_start)
        ctx.cache.update(clean_probs=clean_probs, away=away, towards=towards, target_class=target)
        return away[-1]

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        away, towards, clean_probs = ctx.cache["away"], ctx.cache["towards"], ctx.cache["clean_probs"]
        n, k = len(ctx.y), len(away)
        points = torch.cat([*away, *towards])  # one teacher and one student forward for both paths
        point_probs = teacher_probs(ctx.teachers, points, ctx.teacher_weights)
        student_logits = ctx.student(points)
        per_point = kl_div(student_logits, point_probs)
        clean_true_p = clean_probs.gather(1, ctx.y.view(-1, 1)).squeeze(1)
        path_terms = []
        for part in (slice(0, k * n), slice(k * n, 2 * k * n)):
            if self.adaptive_weights:
                path_terms.append((path_weights(clean_true_p, point_probs[part], ctx.y) * per_point[part]).mean())
            else:
                path_terms.append(per_point[part].mean())
        loss = (1 - self.clean_weight) * torch.stack(path_terms).mean()
        if self.clean_weight > 0:
            loss = loss + self.clean_weight * kl_div(ctx.student(ctx.x), clean_probs).mean()
        return loss, student_logits[(k - 1) * n : k * n]
