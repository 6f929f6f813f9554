"""Loss terms written once and composed by methods, by name (torchdistill style).

* ``kd_kl(τ)``: KL(target || softmax(student / τ)) averaged over the batch, times τ² (Hinton et al.'s scaling; 1 at
  τ = 1), the target probabilities already at temperature τ.
* ``adv_clean_kl``: the adversarial/clean mix w * kd_kl(S(x_adv), q_adv) + (1 - w) * kd_kl(S(x), q_clean) that
  RSLAD, AdaAD, SA-MDRAD and MTARD (with its own adaptive w) share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from robustcompress.attacks.losses import kl_div

_LOSS_TERMS: dict[str, Callable[..., Any]] = {}


def register_loss(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a loss term (function or class) available to :func:`create_loss` by ``name``."""

    def wrap(term: Callable[..., Any]) -> Callable[..., Any]:
        if name in _LOSS_TERMS:
            raise ValueError(f"loss term '{name}' is registered twice")
        _LOSS_TERMS[name] = term
        return term

    return wrap


def list_losses() -> list[str]:
    return sorted(_LOSS_TERMS)


def create_loss(name: str, **kwargs: Any) -> Any:
    """The loss term ``name`` (a class is instantiated with ``kwargs``; a function comes back as is)."""
    if name not in _LOSS_TERMS:
        raise ValueError(f"unknown loss term '{name}'; available: {', '.join(list_losses())}")
    term = _LOSS_TERMS[name]
    return term(**kwargs) if isinstance(term, type) else term


@register_loss("kd_kl")
def kd_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Batch-mean KL(target || softmax(student / τ)) · τ²; exactly the plain mean KL at τ = 1."""
    loss = kl_div(student_logits, target_probs, temperature=temperature).mean()
    return loss if temperature == 1 else loss * temperature * temperature


@register_loss("adv_clean_kl")
@dataclass
class AdvCleanKL:
    """``adv_weight`` * kd_kl(S(x_adv), q_adv) + (1 - adv_weight) * kd_kl(S(x), q_clean), at ``temperature``.

    The clean forward S(x) only runs when its weight is non-zero (``adv_weight < 1``) or ``always_clean`` is set
    (MTARD weighs the two parts adaptively, so it always needs both: see :meth:`parts`).
    """

    adv_weight: float = 1.0
    temperature: float = 1.0

    def parts(self, student: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, adv_target: torch.Tensor,
              clean_target: torch.Tensor | None, logits_adv: torch.Tensor | None = None,
              always_clean: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(adversarial term, clean term or None, student logits on x_adv); ``logits_adv`` if already computed."""
        t = self.temperature
        logits_adv = student(x_adv) if logits_adv is None else logits_adv
        adv = kd_kl(logits_adv, adv_target, t)
        clean = None
        if always_clean or self.adv_weight < 1:
            clean = kd_kl(student(x), adv_target if clean_target is None else clean_target, t)
        return adv, clean, logits_adv

    def __call__(self, student: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, adv_target: torch.Tensor,
                 clean_target: torch.Tensor | None = None,
                 logits_adv: torch.Tensor | None = None, always_clean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, student logits on x_adv); ``clean_target`` defaults to ``adv_target``."""
        adv, clean, logits_adv = self.parts(student, x_adv, x, adv_target, clean_target, logits_adv, always_clean)
        loss = self.adv_weight * adv
        if clean is not None:
            loss = loss + (1 - self.adv_weight) * clean
        return loss, logits_adv
