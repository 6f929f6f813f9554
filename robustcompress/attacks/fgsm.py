"""Fast gradient sign method (Goodfellow et al. 2015): one signed-gradient step of size eps; registry name 'fgsm'."""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from robustcompress.attacks.pgd import pgd
from robustcompress.attacks.registry import Attack, attack_family


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One step of size eps on the cross-entropy, from the clean image, clipped to [0, 1]."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False)  # type: ignore[return-value]


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    return fgsm(model, x, y, eps)


@attack_family("fgsm", examples=("fgsm",))
def _family(match: re.Match[str]) -> Attack:
    return Attack("fgsm", "white-box", {"steps": 1, "step_size": "eps", "loss": "ce", "random_start": False}, _run)
