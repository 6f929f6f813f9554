"""L-inf projected gradient descent on any differentiable per-sample loss (Madry et al. 2018)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode, project
from robustcompress.attacks.losses import cross_entropy, cw_margin

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NAMED_LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "cw": cw_margin}


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    loss: str | LossFn = "ce",
    targeted: bool = False,
    random_start: bool = True,
    x_init: torch.Tensor | None = None,
    return_path: bool = False,
    models_in_eval: tuple[nn.Module, ...] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Return adversarial images within the eps-ball of x and inside [0, 1].

    loss(logits, y) gives a per-sample loss that is *ascended*; with targeted=True, ``y`` holds the target classes
    and the loss is descended instead (towards the target). Any callable works, e.g. a KL to a teacher's
    distribution with ``y`` carrying the teacher probabilities. The model (and ``models_in_eval``) runs in eval
    mode during the attack and gets its previous mode back afterwards. With return_path=True the list of every
    iterate x_1..x_K is returned instead of only the last one. ``generator`` draws the random start (default: torch's
    global RNG); a private one makes the attack reproducible without touching the global random state.
    """
    loss_fn = NAMED_LOSSES[loss] if isinstance(loss, str) else loss
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    if x_init is not None:
        x_adv = project(x_init.detach().clone(), x, eps)
    elif random_start and eps > 0:
        x_adv = project(x + torch.empty_like(x).uniform_(-eps, eps, generator=generator), x, eps)
    else:
        x_adv = x.clone()
    path: list[torch.Tensor] = []
    with eval_mode(model, *models_in_eval), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            objective = sign * loss_fn(model(x_adv), y).sum()
            (grad,) = torch.autograd.grad(objective, x_adv)
            x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
            if return_path:
                path.append(x_adv)
    return path if return_path else x_adv.detach()
