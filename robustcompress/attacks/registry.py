"""The one attack registry: every evaluation attack by name, one signature ``run(model, x, y, eps, seed)``.

A name is answered by a *family*: a pattern and a parser, e.g. ``pgd(N)(xR)`` -> PGD with N steps and R restarts.
Each built-in family lives in its own file (fgsm, pgd, cw, square, autoattack) and registers itself with
:func:`attack_family`; a user's attack registered with :func:`register_attack` joins the same table. Verification,
the export report, the demo and the benchmark all get their attacks here, so the same name, eps and seed give the
same images. :data:`PRESETS` is the one table of attack suites ('fast', 'standard').
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]

#: Preset suites. 'fast' is for quick runs; 'standard' is what a release number should be measured with.
PRESETS: dict[str, tuple[str, ...]] = {
    "fast": ("fgsm", "pgd20", "cw30", "autoattack-fast"),
    "standard": ("fgsm", "pgd20", "cw30", "autoattack"),
}
#: The kinds a user's attack may have (see Attack; 'autoattack' is the built-in AutoAttack suites' own kind).
ATTACK_KINDS = ("white-box", "black-box")


@dataclass(frozen=True)
class Attack:
    """One named attack: how to run it and the settings that go into reports.

    ``kind`` is 'white-box' (needs input gradients of the attacked model), 'black-box' (queries only, so it runs
    on the deployed model itself, e.g. an ONNX session) or 'autoattack' (pyautoattack; white-box, and its
    standard version also contains the black-box Square attack). ``run(model, x, y, eps, seed)`` attacks one
    batch; the same arguments give the same images.
    """

    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    run: AttackFn | None = None

    @property
    def needs_gradients(self) -> bool:
        return self.kind != "black-box"


@dataclass(frozen=True)
class AttackFamily:
    """The attack names one parser answers: every name that fully matches ``pattern``, built by ``parse(match)``.

    ``examples`` are the names :func:`list_attacks` shows, ``usage`` how an unknown-name error describes the family.
    """

    pattern: re.Pattern[str]
    parse: Callable[[re.Match[str]], Attack]
    examples: tuple[str, ...]
    usage: str
    builtin: bool = True


#: Every family the registry answers, built-ins first (in the order their files register them), then the users'.
_FAMILIES: list[AttackFamily] = []


def attack_family(pattern: str, examples: Sequence[str], usage: str | None = None
                  ) -> Callable[[Callable[[re.Match[str]], Attack]], Callable[[re.Match[str]], Attack]]:
    """Decorator for a built-in family's parser: ``parse(match) -> Attack`` answers every name matching ``pattern``."""

    def wrap(parse: Callable[[re.Match[str]], Attack]) -> Callable[[re.Match[str]], Attack]:
        _FAMILIES.append(AttackFamily(re.compile(pattern), parse, tuple(examples), usage or ", ".join(examples)))
        return parse

    return wrap


def register_attack(name: str, run: AttackFn, *, kind: str = "white-box", settings: dict[str, Any] | None = None,
                    replace: bool = False) -> Attack:
    """Make ``run(model, x, y, eps, seed) -> x_adv`` available by ``name`` to evaluate, verify, export and the CLI.

    ``run`` attacks one batch of [0, 1] images within the L-inf ball of radius eps and must give the same images
    for the same seed. ``kind`` is "white-box" (it needs input gradients) or "black-box" (queries only, so it also
    runs on an ONNX session); ``settings`` go into reports. A name the registry already answers (a built-in such as
    pgd20, or an earlier registration) is refused unless ``replace=True`` (built-ins can never be replaced).
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][\w.-]*", name):
        raise ValueError(f"attack name {name!r} must start with a letter and hold only letters, digits, '_', '.' or "
                         "'-', e.g. 'my-pgd'")
    if not callable(run):
        raise ValueError(f"register_attack('{name}', run): run must be a function (model, x, y, eps, seed) -> x_adv")
    if kind not in ATTACK_KINDS:
        raise ValueError(f"register_attack('{name}'): kind {kind!r} must be one of {', '.join(ATTACK_KINDS)}")
    if name in PRESETS or name == "clean" or any(f.builtin and f.pattern.fullmatch(name) for f in _FAMILIES):
        raise ValueError(f"'{name}' is a built-in attack or preset; register yours under another name")
    earlier = [f for f in _FAMILIES if f.pattern.fullmatch(name)]
    if earlier and not replace:
        raise ValueError(f"an attack '{name}' is registered already; pass replace=True to replace it")
    attack = Attack(name, kind, dict(settings or {}), run)
    _FAMILIES[:] = [f for f in _FAMILIES if f not in earlier]
    _FAMILIES.append(AttackFamily(re.compile(re.escape(name)), lambda _: attack, (name,), name, builtin=False))
    return attack


def list_attacks() -> list[str]:
    """The attack names the registry answers: the documented built-ins (families such as pgdN take any N), the
    presets, and the ones registered with register_attack."""
    builtin = [n for f in _FAMILIES if f.builtin for n in f.examples]
    return [*builtin, *PRESETS, *sorted(n for f in _FAMILIES if not f.builtin for n in f.examples)]


def get_attack(name: str) -> Attack:
    """The attack called ``name``: fgsm, pgdN, pgdNxR (R restarts), cwN, square / squareQ (Q queries),
    autoattack, autoattack-fast, apgd-ce, or one registered with :func:`register_attack`. PGD and CW use step eps/4
    (2/255 at eps 8/255) and a random start."""
    for family in _FAMILIES:
        match = family.pattern.fullmatch(name)
        if match:
            return family.parse(match)
    builtin = ", ".join(f.usage for f in _FAMILIES if f.builtin)
    registered = "".join(f", {f.usage}" for f in sorted(_FAMILIES, key=lambda f: f.usage) if not f.builtin)
    raise ValueError(
        f"unknown attack '{name}'; use clean, {builtin}{registered}, a preset ({', '.join(PRESETS)}), or register "
        "one (robustcompress.attacks.register_attack)"
    )


def resolve_attacks(attacks: Sequence[str] | None = None, preset: str | None = None) -> list[str]:
    """The attack names to run: the preset's, then any extra ``attacks``, in order and without duplicates.

    Every name is checked here, so a typo fails before any expensive attack starts.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; use one of {', '.join(PRESETS)}")
    names: list[str] = list(PRESETS[preset]) if preset else []
    for name in attacks or ():
        names.extend(PRESETS[name] if name in PRESETS else [name])
    unique = [n for i, n in enumerate(names) if n != "clean" and n not in names[:i]]
    for name in unique:
        get_attack(name)
    return unique
