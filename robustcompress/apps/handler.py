"""The demo's logic without a UI: attack a picture and compare the robust student, the undefended model and the
exported student. Loading lives in robustcompress.apps.loading, pictures in robustcompress.apps.pictures; their
public names are importable from here too."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustcompress.apps.loading import DemoModels, find_onnx, find_plot, gallery_images, load_demo_models
from robustcompress.apps.pictures import (  # the demo's picture helpers, importable from here too
    MAX_PIXELS, check_image_values, image_to_tensor, open_image, perturbation_image, upscale,
)
from robustcompress.attacks import craft
from robustcompress.attacks.common import eval_mode

ATTACKS = ("FGSM", "PGD", "APGD-CE")
TARGETS = {
    "undefended": "the undefended model (white-box; the student sees the same image: transfer)",
    "student": "the robust student (white-box)",
}
MAX_EPS_255 = 16.0
MAX_STEPS = 100
# pyautoattack's APGD-CE sets its step-size checkpoints from n_iter when it is built; our wrapper keeps its default.
APGD_STEPS = 100
PROB_KEYS = ("student_clean", "student_adv", "undefended_clean", "undefended_adv", "onnx_adv")

__all__ = ["APGD_STEPS", "ATTACKS", "AttackResult", "DemoModels", "MAX_EPS_255", "MAX_PIXELS", "MAX_STEPS", "PROB_KEYS",
           "REGISTRY_NAMES", "TARGETS", "attack_images", "check_attack_settings", "check_image_values",
           "compare_models", "find_onnx", "find_plot", "gallery_images", "image_to_tensor", "load_demo_models",
           "open_image", "perturbation_image", "registry_name", "run_attack", "upscale"]


@dataclass
class AttackResult:
    """One attacked image: the model input before and after the attack and every model's class probabilities."""

    x_clean: torch.Tensor  # (1, 3, S, S) in [0, 1]: exactly what the models saw
    x_adv: torch.Tensor
    probs: dict[str, torch.Tensor]  # PROB_KEYS -> (num_classes,) probabilities
    class_names: list[str]
    attack: str
    eps: float
    steps: int
    target: str
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    def prediction(self, key: str) -> str:
        """The top class name for one of PROB_KEYS."""
        return self.class_names[int(self.probs[key].argmax())]

    @property
    def student_flipped(self) -> bool:
        return self.prediction("student_clean") != self.prediction("student_adv")

    @property
    def undefended_flipped(self) -> bool:
        return self.prediction("undefended_clean") != self.prediction("undefended_adv")

    def top_k(self, key: str, k: int = 3) -> dict[str, float]:
        """The k most likely classes with their probabilities, as gr.Label expects."""
        probs = self.probs[key]
        values, indices = probs.topk(min(k, len(probs)))
        return {self.class_names[int(i)]: float(v) for v, i in zip(values, indices)}


# -- attacking -----------------------------------------------------------------------------------------------------
def check_attack_settings(attack: str, eps_255: float, steps: int, target: str) -> None:
    """Raise a ValueError naming the allowed range for any setting outside it."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack '{attack}'; choose one of {', '.join(ATTACKS)}")
    try:
        eps_value = float(eps_255)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"eps must be a number of /255 steps between 0 and {MAX_EPS_255:g}; got {eps_255!r}") from exc
    if not 0 <= eps_value <= MAX_EPS_255:
        raise ValueError(f"eps must be between 0 and {MAX_EPS_255:g} (in /255 units); got {eps_255}")
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or float(steps) != int(steps):
        raise ValueError(f"steps must be a whole number between 1 and {MAX_STEPS}; got {steps!r}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}; got {steps}")
    if target not in TARGETS:
        raise ValueError(f"unknown attack target '{target}'; choose 'student' or 'undefended'")


#: The demo's attack menu -> the registry name (robustcompress.attacks.get_attack); PGD's holds its step count.
REGISTRY_NAMES = {"FGSM": "fgsm", "PGD": "pgd{steps}", "APGD-CE": "apgd-ce"}


def registry_name(attack: str, steps: int) -> str:
    """The registry attack behind a menu entry: FGSM -> fgsm, PGD with 10 steps -> pgd10, APGD-CE -> apgd-ce."""
    if attack not in REGISTRY_NAMES:
        raise ValueError(f"unknown attack '{attack}'; choose one of {', '.join(ATTACKS)}")
    return REGISTRY_NAMES[attack].format(steps=int(steps))


def attack_images(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int,
                  seed: int = 0) -> torch.Tensor:
    """Untargeted L-inf attack on ``model`` moving x away from labels y; always within eps of x and in [0, 1].

    The registry's attack (PGD with N steps is 'pgdN': step eps/4, random start), crafted as ``evaluate`` and the
    export report craft it, so the same model, attack and seed give the same images. PGD's random start comes from
    a private generator: concurrent requests do not reseed each other.
    """
    return craft(registry_name(attack, steps), model, x, y, eps, seed)


def _verdict(result: AttackResult, undefended_name: str) -> str:
    def fate(who: str, key: str) -> str:
        clean, adv = result.prediction(f"{key}_clean"), result.prediction(f"{key}_adv")
        return f"{who} kept '{clean}'" if clean == adv else f"{who} flipped from '{clean}' to '{adv}'"

    where = "on the student (white-box)" if result.target == "student" else f"crafted on {undefended_name}, transferred"
    onnx, torch_pred = result.prediction("onnx_adv"), result.prediction("student_adv")
    agrees = "as in PyTorch" if onnx == torch_pred else f"unlike PyTorch's '{torch_pred}'"
    return (
        f"{result.attack} at {result.eps * 255:g}/255 {where}: {fate('the robust student', 'student')}, "
        f"{fate('the undefended model', 'undefended')}; the exported ONNX student says '{onnx}' ({agrees})."
    )


def compare_models(
    models: DemoModels,
    x: torch.Tensor,
    attack: str = "PGD",
    eps_255: float = 8.0,
    steps: int = 10,
    target: str = "student",
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attack a batch x (N, 3, S, S) in [0, 1]; return x_adv and every model's (N, K) probabilities by PROB_KEYS.

    The attack pushes each image away from the attacked model's own clean prediction, so no labels are needed.
    """
    check_attack_settings(attack, eps_255, steps, target)
    check_image_values(x)
    eps, steps = float(eps_255) / 255.0, int(steps)
    x = x.to(models.device)
    attacked = models.student if target == "student" else models.undefended
    with torch.no_grad(), eval_mode(models.student, models.undefended):
        student_clean = models.student(x).softmax(1)
        undefended_clean = models.undefended(x).softmax(1)
    y = (student_clean if target == "student" else undefended_clean).argmax(1)
    x_adv = attack_images(attacked, x, y, attack, eps, steps, seed).detach()
    with torch.no_grad(), eval_mode(models.student, models.undefended):
        student_adv = models.student(x_adv).softmax(1)
        undefended_adv = models.undefended(x_adv).softmax(1)
    onnx_adv = models.onnx(x_adv.cpu()).softmax(1)
    probs = (student_clean, student_adv, undefended_clean, undefended_adv, onnx_adv)
    return x_adv.cpu(), dict(zip(PROB_KEYS, (p.cpu() for p in probs)))


def run_attack(
    models: DemoModels,
    image: Any,
    attack: str = "PGD",
    eps_255: float = 8.0,
    steps: int = 10,
    target: str = "student",
    seed: int = 0,
) -> AttackResult:
    """The demo's handler: attack one picture and report both models (and the ONNX student) before and after.

    ``image``: anything image_to_tensor accepts. ``eps_255``: the L-inf budget in /255 units (0..16). ``steps``: PGD
    iterations (FGSM takes one step, APGD-CE its own 100). ``target``: 'student' (white-box) or 'undefended' (the
    attack is built on the undefended model and transferred to the student). Raises ValueError on bad input.
    """
    check_attack_settings(attack, eps_255, steps, target)
    x, notes = image_to_tensor(image, models.input_size)
    x_adv, probs = compare_models(models, x, attack, eps_255, steps, target, seed)
    if attack == "APGD-CE" and float(eps_255) > 0 and torch.equal(x_adv, x):
        notes.append("APGD-CE found no image within eps that changes the attacked model's answer, "
                     "so AutoAttack returned the clean image")
    result = AttackResult(
        x_clean=x, x_adv=x_adv, probs={k: p[0] for k, p in probs.items()}, class_names=models.class_names,
        attack=attack, eps=float(eps_255) / 255.0,
        steps=APGD_STEPS if attack == "APGD-CE" else (1 if attack == "FGSM" else int(steps)), target=target, notes=notes,
    )
    result.verdict = _verdict(result, models.undefended_name)
    return result
