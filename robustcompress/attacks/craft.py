"""Whole sets of adversarial images from a registry attack, a batch at a time, seeded by each batch's position."""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn as nn

from robustcompress.attacks.autoattack import run_autoattack
from robustcompress.attacks.common import batch_seed
from robustcompress.attacks.registry import get_attack
from robustcompress.runtime_env import progress_bar


def craft_batches(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
                  batch_size: int = 256, device: torch.device | str | None = None,
                  progress: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """Attack ``name`` on x, ``batch_size`` images at a time: yields (index of the batch's first image, x_adv).

    Batch ``start`` uses seed ``seed + start`` (:func:`~robustcompress.attacks.common.batch_seed`), so a result does
    not depend on which batches ran before. AutoAttack suites run through their driver over the whole set at once
    (attack by attack on the samples still robust, as :func:`robustcompress.verify.evaluate` runs them) and come
    back as one batch. Images are on ``device`` (default: x's device).
    """
    attack = get_attack(name)
    device = x.device if device is None else torch.device(device)
    if eps == 0:
        yield 0, x.to(device).clone()
        return
    if attack.kind == "autoattack":
        yield 0, run_autoattack(model, x.to(device), y.to(device), eps, version=name, batch_size=batch_size,
                                seed=seed)
        return
    assert attack.run is not None
    starts = range(0, len(x), batch_size)
    for start in progress_bar(starts, f"{name} eps {eps * 255:.3g}/255", progress and len(starts) > 1):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        yield start, attack.run(model, xb, yb, eps, batch_seed(seed, start)).detach()


def craft(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
          **options: Any) -> torch.Tensor:
    """Adversarial images for all of x from the registry's attack ``name``; ``options`` (batch_size, device,
    progress) and the seeding are :func:`craft_batches`'."""
    return torch.cat([x_adv for _, x_adv in craft_batches(name, model, x, y, eps, seed, **options)])
