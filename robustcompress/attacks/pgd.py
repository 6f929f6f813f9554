"""L-inf projected gradient descent on any differentiable per-sample loss (Madry et al. 2018); registry names pgdN
and pgdNxR (N steps, R restarts)."""
from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode, project
from robustcompress.attacks.losses import cross_entropy, cw_margin
from robustcompress.attacks.registry import Attack, AttackFn, attack_family

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


def pgd_with_restarts(steps: int, loss: str | LossFn, restarts: int) -> AttackFn:
    """The registry's PGD run (step eps/4, random start) with ``restarts`` starts; a sample counts as fooled by the
    first restart that fools it. ``loss`` is a name of NAMED_LOSSES or any per-sample loss(logits, y) to ascend
    (e.g. a margin towards one target class, as a multi-targeted attack needs)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        x_best: torch.Tensor | None = None
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for r in range(restarts):
            # Restart r uses seed + r, so restarts=1 is exactly the single run and further restarts add fresh starts.
            # A private generator: the global random state is neither used nor disturbed (safe across threads).
            generator = torch.Generator(device=x.device).manual_seed(seed + r)
            x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, loss=loss, generator=generator)
            assert isinstance(x_adv, torch.Tensor)
            if restarts == 1:
                return x_adv
            with torch.no_grad(), eval_mode(model):
                wrong = model(x_adv).argmax(1) != y
            if x_best is None:
                x_best = x_adv.clone()
            else:
                new = wrong & ~fooled  # keep the first restart that fools each sample
                x_best[new] = x_adv[new]
            fooled |= wrong
            if bool(fooled.all()):
                break
        assert x_best is not None
        return x_best

    return run


def restarted_attack(match: re.Match[str], loss: str) -> Attack:
    """The white-box Attack for a name such as pgd20 or cw30x5 (groups ``steps`` and ``restarts``) on ``loss``."""
    steps, restarts = int(match["steps"]), int(match["restarts"] or 1)
    if steps < 1 or restarts < 1:
        raise ValueError(f"attack '{match.string}' needs at least one step and one restart")
    settings = {"steps": steps, "step_size": "eps/4", "loss": "ce" if loss == "ce" else "cw-margin",
                "random_start": True, "restarts": restarts}
    return Attack(match.string, "white-box", settings, pgd_with_restarts(steps, loss, restarts))


@attack_family(r"pgd(?P<steps>\d+)(?:x(?P<restarts>\d+))?", examples=("pgd10", "pgd20", "pgd50", "pgd100", "pgd20x5"),
               usage="pgd20 (any step count, e.g. pgd100; pgd20x5 for 5 restarts)")
def _family(match: re.Match[str]) -> Attack:
    return restarted_attack(match, "ce")
