"""Adversarial attacks in pixel space ([0, 1] images): one attack family per file (fgsm, pgd, cw, square,
autoattack) and the one registry of evaluation attacks by name (``get_attack('pgd20').run(model, x, y, eps, seed)``,
:func:`craft`, :func:`register_attack` for your own, :func:`list_attacks`)."""
from robustcompress.attacks.registry import (PRESETS, Attack, get_attack, list_attacks, register_attack,
                                             resolve_attacks)
# Each family file registers its names on import; the order here is the order of list_attacks().
from robustcompress.attacks.pgd import pgd, pgd_with_restarts
from robustcompress.attacks.fgsm import fgsm
from robustcompress.attacks import cw, square  # noqa: F401  (the cwN and squareQ families)
from robustcompress.attacks.autoattack import autoattack_flags, run_autoattack
from robustcompress.attacks.common import eval_mode
from robustcompress.attacks.craft import craft, craft_batches
from robustcompress.attacks.losses import cross_entropy, cw_margin, kl_div, soft_cross_entropy

__all__ = [
    "Attack",
    "PRESETS",
    "autoattack_flags",
    "craft",
    "craft_batches",
    "cross_entropy",
    "cw_margin",
    "eval_mode",
    "fgsm",
    "get_attack",
    "kl_div",
    "list_attacks",
    "pgd",
    "pgd_with_restarts",
    "register_attack",
    "resolve_attacks",
    "run_autoattack",
    "soft_cross_entropy",
]
