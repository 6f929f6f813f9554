"""What several methods share: teacher ensembling and teacher forwards without gradients."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustcompress.attacks.common import eval_mode

if TYPE_CHECKING:
    from robustcompress.methods.registry import StepContext
    from robustcompress.methods.teacher_outputs import CleanTeacherPlan


#: On a CPU the teachers see at most this many images per forward: dual-path's 1,408 path points in one forward of a
#: ResNet-18 took 1.4x (fp32) to 2x (bf16 rounded, robustcompress.trainer.bf16_rounding) the time of 11 forwards of
#: 128 on a 2-core Xeon (the activations of a large batch outgrow the caches). A GPU gets the whole batch.
CPU_TEACHER_CHUNK = 128


def teacher_logits(teachers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Each frozen teacher's logits on x as fp32 (eval mode, no autograd graph).

    The forwards run under torch.inference_mode (cheaper than no_grad), on a CPU in chunks of CPU_TEACHER_CHUNK
    images. The returned tensors are ordinary fp32 copies made outside it, so they can be used as loss targets: an
    inference tensor cannot be saved for backward.
    """
    chunks = x.split(CPU_TEACHER_CHUNK) if x.device.type == "cpu" and len(x) > CPU_TEACHER_CHUNK else (x,)
    with torch.inference_mode(), eval_mode(*teachers):
        raw = [torch.cat([t(c) for c in chunks]) if len(chunks) > 1 else t(x) for t in teachers]
    return [z.to(torch.float32, copy=True) for z in raw]


def teacher_logits_batched(teachers: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Teacher logits for several inputs with ONE forward per teacher: ``result[i][t]`` is teacher t on inputs[i].

    Use it when a method needs the teachers on, e.g., both x and x_adv: one large batch keeps the GPU busier than
    two small ones (a CPU runs it in chunks, see teacher_logits). Teachers are in eval mode, so batching changes
    nothing but float rounding.
    """
    if len(inputs) == 1:
        return [teacher_logits(teachers, inputs[0])]
    sizes = [len(x) for x in inputs]
    per_teacher = teacher_logits(teachers, torch.cat(list(inputs)))
    split = [z.split(sizes) for z in per_teacher]
    return [[chunks[i] for chunks in split] for i in range(len(inputs))]


def ensemble_probs(
    logits: Sequence[torch.Tensor], weights: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Weighted average of the teachers' softmax probabilities (not of their logits).

    ``weights`` is None (uniform), a (T,) vector, or (N, T) per-sample weights; rows should sum to 1.
    """
    probs = torch.stack([F.softmax(z / temperature, dim=1) for z in logits], dim=1)  # N, T, C
    if weights is None:
        return probs.mean(dim=1)
    w = weights.to(probs)
    if w.dim() == 1:
        w = w.expand(probs.shape[0], -1)
    return (w.unsqueeze(-1) * probs).sum(dim=1)


def teacher_probs(
    teachers: Sequence[nn.Module], x: torch.Tensor, weights: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """The ensemble's averaged probabilities on x, without gradients."""
    return ensemble_probs(teacher_logits(teachers, x), weights, temperature)


def clean_teacher_probs(ctx: "StepContext", temperature: float = 1.0) -> torch.Tensor:
    """The ensemble's probabilities on the clean batch ctx.x: from the outputs computed once before training when the
    trainer has them (teacher_outputs="cached"), else from the teachers now."""
    if ctx.teacher_outputs is not None:
        logits = [ctx.teacher_outputs.logits[t] for t in range(len(ctx.teachers))]
        return ensemble_probs(logits, ctx.teacher_weights, temperature)
    return teacher_probs(ctx.teachers, ctx.x, ctx.teacher_weights, temperature)


def every_teacher_on_clean_images(num_teachers: int) -> "CleanTeacherPlan":
    """The plan of a method whose teachers only ever see the clean image (logits only)."""
    from robustcompress.methods.teacher_outputs import CleanTeacherPlan

    return CleanTeacherPlan(tuple(range(num_teachers)))


def teacher_probs_batched(
    teachers: Sequence[nn.Module],
    inputs: Sequence[torch.Tensor],
    weights: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """teacher_probs for several inputs (e.g. [x, x_adv]) from one batched forward per teacher.

    Per-sample ``weights`` (N, T) apply to every input alike.
    """
    return [ensemble_probs(logits, weights, temperature) for logits in teacher_logits_batched(teachers, inputs)]


def check_teachers_given(method: Any, teachers: Sequence[Any]) -> None:
    """Refuse training without teachers when ``method`` (with its hyperparameters: AKD with alpha=0 needs none)
    distils from them; the one such check, for the API's settings and the training loop."""
    if method.needs_teacher:
        require_teacher(method.name, teachers)


def require_teacher(name: str, teachers: Sequence[Any]) -> None:
    """Refuse to distil without teachers: the one message, for the API, the CLI and the training loop."""
    if not teachers:
        raise ValueError(f"method '{name}' distils from teachers; pass teachers=[...] or use method='pgd-at' "
                         "(CLI: --teachers NAME ... or --method pgd-at)")
