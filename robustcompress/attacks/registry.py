"""The one attack registry: every evaluation attack by name, one signature ``run(model, x, y, eps, seed)``.

Names: fgsm, pgdN, pgdNxR, cwN, squareQ and the AutoAttack suites (autoattack, autoattack-fast, apgd-ce), plus the
fast/standard presets. Verification, the export report, the demo and the benchmark all get their attacks here (and
craft whole sets with :func:`craft` / :func:`craft_batches`), so the same name, eps and seed give the same images.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustcompress.attacks.autoattack import AUTOATTACK_VERSIONS, run_autoattack
from robustcompress.attacks.common import batch_seed, eval_mode, seeded
from robustcompress.attacks.fgsm import fgsm
from robustcompress.attacks.pgd import pgd

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]

#: Preset suites. 'fast' is for quick runs; 'standard' is what a release number should be measured with.
PRESETS: dict[str, tuple[str, ...]] = {
    "fast": ("fgsm", "pgd20", "cw30", "autoattack-fast"),
    "standard": ("fgsm", "pgd20", "cw30", "autoattack"),
}
#: AutoAttack suites run through pyautoattack (robustcompress.attacks.autoattack, AUTOATTACK_VERSIONS there).
AUTOATTACK_SUITES = {
    "autoattack": "APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries); pyautoattack 'standard'",
    "autoattack-fast": "APGD-CE, APGD-T (up to 9 targets), 100 iterations, 1 restart each",
    "apgd-ce": "APGD-CE, 100 iterations, 1 restart",
}
DEFAULT_SQUARE_QUERIES = 5000
_PATTERN = re.compile(r"^(?P<kind>pgd|cw|square)(?P<n>\d+)?(?:x(?P<restarts>\d+))?$")


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


def _pgd_attack(steps: int, loss: str, restarts: int) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        x_best: torch.Tensor | None = None
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for r in range(restarts):
            # Restart r uses seed + r, so restarts=1 is exactly the single run and further restarts add fresh starts.
            # A private generator: the global random state is neither used nor disturbed (safe across threads).
            generator = torch.Generator(device=x.device).manual_seed(seed + r)
            x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, loss=loss, generator=generator)
            assert isinstance(x_adv, torch.Tensor)
            if restarts == 1:
                return x_adv
            with torch.no_grad(), eval_mode(model):
                wrong = model(x_adv).argmax(1) != y
            if x_best is None:
                x_best = x_adv.clone()
            else:
                new = wrong & ~fooled  # keep the first restart that fools each sample
                x_best[new] = x_adv[new]
            fooled |= wrong
            if bool(fooled.all()):
                break
        assert x_best is not None
        return x_best

    return run


def _square_attack(queries: int) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        from pyautoattack.square import SquareAttack

        # AutoAttack runs 5000 queries with its fixed p schedule; shorter budgets rescale the schedule to fit.
        attack = SquareAttack(model, norm="Linf", n_queries=queries, eps=eps, p_init=0.8, n_restarts=1, seed=seed,
                              verbose=False, device=x.device, resc_schedule=queries != DEFAULT_SQUARE_QUERIES)
        with seeded(seed, x.device), eval_mode(model), torch.no_grad():
            return attack.perturb(x, y).detach()

    return run


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    return fgsm(model, x, y, eps)


def _autoattack(name: str) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        # One batch of the AutoAttack driver, which robustcompress.verify also runs (resumably) over whole sets.
        return run_autoattack(model, x, y, eps, version=name, batch_size=max(1, len(x)), seed=seed)

    return run


#: Attacks users registered with register_attack, by name.
_REGISTERED: dict[str, Attack] = {}
#: The kinds an attack may have (see Attack).
ATTACK_KINDS = ("white-box", "black-box")


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
    if name in PRESETS or name == "clean" or _builtin_attack(name) is not None:
        raise ValueError(f"'{name}' is a built-in attack or preset; register yours under another name")
    if name in _REGISTERED and not replace:
        raise ValueError(f"an attack '{name}' is registered already; pass replace=True to replace it")
    attack = Attack(name, kind, dict(settings or {}), run)
    _REGISTERED[name] = attack
    return attack


def list_attacks() -> list[str]:
    """The attack names the registry answers: the documented built-ins (families such as pgdN take any N), the
    presets, and the ones registered with register_attack."""
    return [*ATTACKS, *PRESETS, *sorted(_REGISTERED)]


def get_attack(name: str) -> Attack:
    """The attack called ``name``: fgsm, pgdN, pgdNxR (R restarts), cwN, square / squareQ (Q queries),
    autoattack, autoattack-fast, apgd-ce, or one registered with :func:`register_attack`. PGD and CW use step eps/4
    (2/255 at eps 8/255) and a random start."""
    attack = _REGISTERED.get(name) or _builtin_attack(name)
    if attack is not None:
        return attack
    registered = f", {', '.join(sorted(_REGISTERED))}" if _REGISTERED else ""
    raise ValueError(
        f"unknown attack '{name}'; use clean, fgsm, pgd20 (any step count, e.g. pgd100; pgd20x5 for 5 restarts), "
        f"cw30, square (or square1000 for 1000 queries), {', '.join(AUTOATTACK_VERSIONS)}{registered}, a preset "
        f"({', '.join(PRESETS)}), or register one (robustcompress.attacks.register_attack)"
    )


def _builtin_attack(name: str) -> Attack | None:
    """The built-in attack called ``name``, or None."""
    if name == "fgsm":
        return Attack(name, "white-box", {"steps": 1, "step_size": "eps", "loss": "ce", "random_start": False}, _fgsm)
    if name in AUTOATTACK_VERSIONS:
        return Attack(name, "autoattack", {"suite": AUTOATTACK_SUITES[name], "version": AUTOATTACK_VERSIONS[name]},
                      _autoattack(name))
    match = _PATTERN.match(name)
    if match and match["kind"] in ("pgd", "cw") and match["n"]:
        steps, restarts = int(match["n"]), int(match["restarts"] or 1)
        if steps < 1 or restarts < 1:
            raise ValueError(f"attack '{name}' needs at least one step and one restart")
        loss = "ce" if match["kind"] == "pgd" else "cw"
        settings = {"steps": steps, "step_size": "eps/4", "loss": "ce" if loss == "ce" else "cw-margin",
                    "random_start": True, "restarts": restarts}
        return Attack(name, "white-box", settings, _pgd_attack(steps, loss, restarts))
    if match and match["kind"] == "square" and not match["restarts"]:
        queries = int(match["n"] or DEFAULT_SQUARE_QUERIES)
        return Attack(name, "black-box", {"queries": queries, "p_init": 0.8, "loss": "margin", "restarts": 1},
                      _square_attack(queries))
    return None


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


#: The named attacks documented in the README; get_attack() also accepts the pgdN / cwN / squareQ families.
ATTACKS: dict[str, Attack] = {
    n: get_attack(n)
    for n in ("fgsm", "pgd10", "pgd20", "pgd50", "pgd100", "pgd20x5", "cw30", "square", "autoattack",
              "autoattack-fast", "apgd-ce")
}


def craft_batches(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Attack ``name`` on x, ``batch_size`` images at a time: yields (index of the batch's first image, x_adv).

    Batch ``start`` uses seed ``seed + start`` (:func:`~robustcompress.attacks.common.batch_seed`), so a result does
    not depend on which batches ran before. AutoAttack suites run through their driver over the whole set at once
    (attack by attack on the samples still robust, as :func:`robustcompress.verify.evaluate` runs them) and come
    back as one batch. Images are on ``device`` (default: x's device).
    """
    attack = get_attack(name)
    device = x.device if device is None else torch.device(device)
    if eps == 0:
        yield 0, x.to(device).clone()
        return
    if attack.kind == "autoattack":
        yield 0, run_autoattack(model, x.to(device), y.to(device), eps, version=name, batch_size=batch_size,
                                seed=seed)
        return
    assert attack.run is not None
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=f"{name} eps {eps * 255:.3g}/255", disable=not progress or len(starts) < 2,
                      leave=False):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        yield start, attack.run(model, xb, yb, eps, batch_seed(seed, start)).detach()


def craft(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Adversarial images for all of x from the registry's attack ``name`` (see :func:`craft_batches`)."""
    return torch.cat([x_adv for _, x_adv in craft_batches(name, model, x, y, eps, seed, batch_size, device, progress)])
