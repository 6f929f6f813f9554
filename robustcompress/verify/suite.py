"""The evaluation attacks by name: they live in :mod:`robustcompress.attacks.registry`, re-exported here."""
from robustcompress.attacks.autoattack import AUTOATTACK_VERSIONS
from robustcompress.attacks.common import seeded
from robustcompress.attacks.registry import (
    ATTACKS,
    AUTOATTACK_SUITES,
    DEFAULT_SQUARE_QUERIES,
    PRESETS,
    Attack,
    AttackFn,
    craft,
    craft_batches,
    get_attack,
    resolve_attacks,
)

__all__ = ["ATTACKS", "AUTOATTACK_SUITES", "AUTOATTACK_VERSIONS", "Attack", "AttackFn", "DEFAULT_SQUARE_QUERIES",
           "PRESETS", "craft", "craft_batches", "get_attack", "resolve_attacks", "seeded"]
