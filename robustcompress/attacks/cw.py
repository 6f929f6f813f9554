"""Carlini-Wagner L-inf attack as PGD on the CW margin (Carlini & Wagner 2017); registry names cwN and cwNxR."""
from __future__ import annotations

import re

from robustcompress.attacks.pgd import restarted_attack
from robustcompress.attacks.registry import Attack, attack_family


@attack_family(r"cw(?P<steps>\d+)(?:x(?P<restarts>\d+))?", examples=("cw30",))
def _family(match: re.Match[str]) -> Attack:
    return restarted_attack(match, "cw")
