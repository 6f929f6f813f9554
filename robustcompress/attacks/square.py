"""Square attack (Andriushchenko et al. 2020), query-only, through pyautoattack; registry names square and squareQ."""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode, seeded
from robustcompress.attacks.registry import Attack, AttackFn, attack_family

#: AutoAttack's query budget, with its fixed schedule of square sizes.
DEFAULT_SQUARE_QUERIES = 5000


def square_attack(queries: int) -> AttackFn:
    """The registry's Square run with ``queries`` queries per image (one restart, p_init 0.8)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        from pyautoattack.square import SquareAttack

        # AutoAttack runs 5000 queries with its fixed p schedule; shorter budgets rescale the schedule to fit.
        attack = SquareAttack(model, norm="Linf", n_queries=queries, eps=eps, p_init=0.8, n_restarts=1, seed=seed,
                              verbose=False, device=x.device, resc_schedule=queries != DEFAULT_SQUARE_QUERIES)
        with seeded(seed, x.device), eval_mode(model), torch.no_grad():
            return attack.perturb(x, y).detach()

    return run


@attack_family(r"square(?P<queries>\d+)?", examples=("square",), usage="square (or square1000 for 1000 queries)")
def _family(match: re.Match[str]) -> Attack:
    queries = int(match["queries"] or DEFAULT_SQUARE_QUERIES)
    return Attack(match.string, "black-box", {"queries": queries, "p_init": 0.8, "loss": "margin", "restarts": 1},
                  square_attack(queries))
