"""Check an exported graph on real images: parity with PyTorch, and its own clean and robust accuracy in onnxruntime."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode
from robustcompress.attacks import craft
from robustcompress.export.onnx import (
    PARITY_TOLERANCE,
    OnnxSource,
    check_parity,
    onnx_logits,
    onnx_session,
    torch_logits,
)


def craft_adversarial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """White-box L-inf PGD images for ``model`` on CPU: the registry's 'pgdN' attack (N = ``steps``).

    The same images as ``robustcompress.verify.evaluate(..., attacks=['pgdN'], seed=seed, batch_size=batch_size)``
    attacks (:func:`robustcompress.attacks.craft`), so the export report and ``evaluate`` agree.
    """
    if steps < 1:
        raise ValueError(f"the attack needs at least one PGD step, got steps={steps}")
    model = model.cpu()
    with eval_mode(model):
        return craft(f"pgd{steps}", model, x.cpu(), y.cpu(), eps, seed, batch_size=batch_size, progress=progress)


def attack_description(steps: int, eps: float, seed: int, crafted_on: str) -> dict[str, Any]:
    """How the adversarial examples were made, for reports and metadata."""
    return {"name": f"pgd{steps}", "eps": eps, "norm": "Linf", "steps": steps, "step_size": eps / 4,
            "loss": "ce", "random_start": True, "seed": seed, "crafted_on": crafted_on,
            "seeding": "seed + index of each batch's first image (robustcompress.attacks.craft)"}


def accuracy(logits: np.ndarray, y: torch.Tensor) -> tuple[float, np.ndarray]:
    """Top-1 accuracy and the per-sample correctness flags."""
    correct = logits.argmax(1) == y.cpu().numpy()
    return float(correct.mean()), correct


def verify_onnx(
    model: nn.Module,
    source: OnnxSource,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
    progress: bool = False,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Parity (raises ParityError) plus clean and robust accuracy of the exported graph under onnxruntime.

    Adversarial examples are crafted on the PyTorch twin (white-box gradients) and then classified by onnxruntime;
    parity is checked on the clean and on the adversarial images (which sit next to decision boundaries, where a
    small numeric difference would flip a prediction). Returns the numbers and the adversarial images.
    """
    x, y = x.cpu().float(), y.cpu()
    session = onnx_session(source)
    parity = check_parity(model, source, x, tolerance, session=session)
    clean_logits = onnx_logits(None, x.numpy(), session=session)
    clean_acc, clean_ok = accuracy(clean_logits, y)
    x_adv = craft_adversarial(model, x, y, eps, steps, seed, progress=progress)
    attack = f"pgd{steps}"
    adversarial_parity = check_parity(model, source, x_adv, tolerance, session=session)
    robust_acc, robust_ok = accuracy(onnx_logits(None, x_adv.numpy(), session=session), y)
    torch_clean, _ = accuracy(torch_logits(model, x), y)
    torch_robust, _ = accuracy(torch_logits(model, x_adv), y)
    return {
        "parity": parity,
        "parity_adversarial": adversarial_parity,
        "n_examples": len(x),
        "clean_acc": clean_acc,
        "robust_acc": {attack: robust_acc},
        "worst_case_acc": float((clean_ok & robust_ok).mean()),
        "pytorch_clean_acc": torch_clean,
        "pytorch_robust_acc": {attack: torch_robust},
        "attack": attack_description(steps, eps, seed, "the PyTorch model (white-box), classified by onnxruntime"),
    }, x_adv
