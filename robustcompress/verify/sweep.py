"""Accuracy-vs-eps curves: one attack at several budgets, for the student and any model to compare it with."""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn as nn

from robustcompress.verify.evaluate import attack_flags
from robustcompress.runtime_env import progress_bar

#: The default budgets (pixel units): 0, 1, 2, 4, 8 and 16 out of 255.
DEFAULT_SWEEP_EPS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
DEFAULT_SWEEP_ATTACK = "pgd20"


def eps_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_values: Sequence[float] = DEFAULT_SWEEP_EPS,
    attack: str = DEFAULT_SWEEP_ATTACK,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    scorer: nn.Module | None = None,
    progress: bool = False,
    known: dict[float, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Accuracy under ``attack`` at every eps in ``eps_values`` (eps 0 is clean accuracy).

    Returns ``{"attack", "eps", "accuracy", "per_sample", "time_s"}`` with eps sorted ascending; ``known`` maps
    eps values to per-sample flags already measured with this attack, which are reused instead of re-attacked.
    """
    values = sorted({float(e) for e in eps_values})
    bad = [e for e in values if not 0 <= e <= 1]
    if bad:
        raise ValueError(f"sweep eps {bad} outside [0, 1]; give pixel units, e.g. 8/255 = {8 / 255:.4f}")
    t0 = time.perf_counter()
    per_sample: dict[float, torch.Tensor] = {}
    for eps in progress_bar(values, f"eps sweep ({attack})", progress):
        cached = None if known is None else known.get(eps)
        per_sample[eps] = cached if cached is not None else attack_flags(
            model, x, y, "clean" if eps == 0 else attack, eps, batch_size, device, seed, scorer
        )
    return {
        "attack": attack,
        "eps": values,
        "accuracy": [per_sample[e].float().mean().item() for e in values],
        "per_sample": per_sample,
        "time_s": time.perf_counter() - t0,
    }
