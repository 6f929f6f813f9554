"""Adversarial attacks in pixel space ([0, 1] images): FGSM, L-inf PGD on any loss, AutoAttack, and the one registry
of evaluation attacks by name (``get_attack('pgd20').run(model, x, y, eps, seed)``, :func:`craft`)."""
from robustcompress.attacks.autoattack import autoattack_flags, run_autoattack
from robustcompress.attacks.common import eval_mode
from robustcompress.attacks.fgsm import fgsm
from robustcompress.attacks.losses import cross_entropy, cw_margin, kl_div, soft_cross_entropy
from robustcompress.attacks.pgd import pgd
from robustcompress.attacks.registry import (ATTACKS, PRESETS, Attack, craft, craft_batches, get_attack, list_attacks,
                                             register_attack, resolve_attacks)

__all__ = [
    "ATTACKS",
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
    "register_attack",
    "resolve_attacks",
    "run_autoattack",
    "soft_cross_entropy",
]
