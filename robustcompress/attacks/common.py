"""Pieces every attack shares: eval mode for the attacked models, projection onto the eps-ball, seeding."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode (BatchNorm statistics frozen) and restore each one's mode afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip x_adv into the L-inf ball of radius eps around x and into the image range [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Seed torch inside the block without disturbing the caller's random state."""
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch whose first image is image ``start``: results do not depend on batches run before."""
    return seed + start
