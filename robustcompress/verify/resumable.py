"""Resumable AutoAttack: the driver lives in :mod:`robustcompress.attacks.autoattack`; re-exported here."""
from robustcompress.attacks.autoattack import STATE_FORMAT, autoattack_flags

__all__ = ["STATE_FORMAT", "autoattack_flags"]
