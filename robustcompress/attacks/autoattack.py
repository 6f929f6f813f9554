"""AutoAttack (Croce & Hein 2020) through pyautoattack, the authors' package: the one driver every consumer uses.

pyautoattack has its own state file (``run_standard_evaluation(..., state_path=...)``), but version 0.2.0 cannot
resume from it: it stores the attack sets as a string and a list, so the reloaded state never matches the planned
attacks ("The state was created with a different set of attacks"), and a resumed run that breaks one more sample
fails with an UnboundLocalError on ``y_adv``. So :func:`autoattack_flags` drives pyautoattack's attacks itself,
exactly as its standard evaluation does (each attack runs, in order, on the samples still robust, ``batch_size`` at
a time, with the attack's seed reset per batch), and after every batch writes the per-sample flags to its own JSON
state file. A resumed run therefore gives the same result as an uninterrupted one. :func:`run_autoattack` (the
adversarial images) is the same driver without a state file. Registry names: autoattack, autoattack-fast,
apgd-ce (:data:`SUITES`).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode, seeded
from robustcompress.attacks.registry import Attack, attack_family
from robustcompress.io import write_json
from robustcompress.runtime_env import progress_bar

STATE_FORMAT = "robustcompress-autoattack-state"
log = logging.getLogger("robustcompress")


@dataclass(frozen=True)
class Suite:
    """One AutoAttack suite: the version name reports give, pyautoattack's attacks (None: its own 'standard' set
    of APGD-CE, APGD-T, FAB-T, Square) and what it runs, in words."""

    version: str
    attacks: tuple[str, ...] | None
    description: str


#: The registry's AutoAttack names, one suite each.
SUITES = {
    "autoattack": Suite("standard", None, "APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries); "
                                          "pyautoattack 'standard'"),
    "autoattack-fast": Suite("fast", ("apgd-ce", "apgd-t"), "APGD-CE, APGD-T (up to 9 targets), 100 iterations, "
                                                           "1 restart each"),
    "apgd-ce": Suite("apgd-ce", ("apgd-ce",), "APGD-CE, 100 iterations, 1 restart"),
}


def _build_autoattack(
    model: nn.Module,
    eps: float,
    suite: Suite,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
) -> Any:
    """A configured pyautoattack.AutoAttack for ``suite``; its ``attacks_to_run`` lists the attacks in order."""
    from pyautoattack import AutoAttack

    attacks = None if suite.attacks is None else list(suite.attacks)
    kwargs = {"version": "standard"} if attacks is None else {"version": "custom", "attacks": attacks}
    adversary = AutoAttack(model, norm="Linf", eps=eps, device=str(device), seed=seed, **kwargs)
    if attacks is not None:
        # Custom sets start from pyautoattack's 5-restart APGD; use the standard version's settings instead.
        adversary.apgd.n_restarts = 1
    if num_classes is not None:
        # The standard version targets 9 classes; with fewer classes there are only num_classes - 1 targets.
        adversary.apgd_targeted.n_target_classes = min(9, num_classes - 1)
        adversary.fab.n_target_classes = min(9, num_classes - 1)
    return adversary


class _Collect(logging.Handler):
    """Collects the warnings pyautoattack logs (its 'flags'), each message once."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return (model(x.to(device)).argmax(1).cpu() == y.cpu())


def _save(path: Path | None, state: dict[str, Any]) -> None:
    if path is not None:
        write_json(path, state, indent=None)


def _load(path: Path | None, expected: dict[str, Any]) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"AutoAttack state file {path} is corrupt ({exc}); delete it to start over") from exc
    if state.get("format") != STATE_FORMAT or any(state.get(k) != v for k, v in expected.items()):
        raise ValueError(f"AutoAttack state file {path} belongs to a different evaluation; delete it or use another "
                         "state folder")
    return state


def autoattack_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    eps: float,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    scorer: nn.Module | None = None,
    state_path: str | Path | None = None,
    warnings_out: list[str] | None = None,
    progress: bool = False,
    images_out: torch.Tensor | None = None,
    stages_out: dict[str, int] | None = None,
) -> torch.Tensor:
    """Per-sample flags (CPU, bool): does sample i survive every attack of AutoAttack suite ``name``?

    ``name`` is 'autoattack' (standard: APGD-CE, APGD-T, FAB-T, Square), 'autoattack-fast' or 'apgd-ce'. Attacks
    are crafted on ``model`` and success is judged by ``scorer`` (default ``model``). With ``state_path`` the
    progress is saved after every batch and an existing state file is resumed. AutoAttack's warnings (zero
    gradients, randomised defence, ...) are appended to ``warnings_out``. ``images_out`` (a CPU copy of x, without
    a state file) receives the adversarial image of every sample an attack broke.
    """
    if name not in SUITES:
        raise ValueError(f"unknown AutoAttack suite '{name}'; use one of {', '.join(SUITES)}")
    if images_out is not None and state_path is not None:
        raise ValueError("a resumed AutoAttack run has no images of the batches run before; pass no state_path")
    scorer = model if scorer is None else scorer
    x, y = x.cpu(), y.cpu().long()
    path = None if state_path is None else Path(state_path)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(model(x[:1].to(device)).shape[1])
    adversary = _build_autoattack(model, eps, SUITES[name], seed, device, num_classes)
    attacks = list(adversary.attacks_to_run)
    identity = {"suite": name, "attacks": attacks, "eps": eps, "seed": seed, "n": len(y)}
    state = _load(path, identity)
    if state is None:
        robust = _correct(scorer, x, y, device) & _correct(model, x, y, device)
        state = {"format": STATE_FORMAT, **identity, "robust": robust.tolist(), "done": [], "current": None,
                 "warnings": []}
        _save(path, state)
    else:
        log.info("resuming AutoAttack from %s (finished: %s)", path, ", ".join(state["done"]) or "none")
    robust = torch.tensor(state["robust"], dtype=torch.bool)
    handler = _Collect(state["warnings"])
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    bar = progress_bar(desc=name, enabled=progress, total=len(attacks))
    try:
        for attack in attacks:
            if attack in state["done"]:
                bar.update(1)
                continue
            if state["current"] is None or state["current"]["attack"] != attack:
                queue = robust.nonzero().flatten().tolist()
                state["current"] = {"attack": attack, "queue": queue, "next": 0}
                _save(path, state)
            current = state["current"]
            adversary.attacks_to_run = [attack]
            while current["next"] < len(current["queue"]):
                bar.set_postfix_str(f"{attack}: {current['next']}/{len(current['queue'])} images attacked")
                chunk = torch.tensor(current["queue"][current["next"] : current["next"] + batch_size])
                with seeded(seed, device), eval_mode(model):
                    x_adv, _ = adversary.run_standard_evaluation(x[chunk].to(device), y[chunk].to(device),
                                                                 batch_size=len(chunk))
                survived = _correct(scorer, x_adv, y[chunk], device)
                robust[chunk] &= survived
                if images_out is not None:
                    images_out[chunk[~survived]] = x_adv.detach().cpu()[~survived]
                current["next"] += len(chunk)
                state["robust"] = robust.tolist()
                _save(path, state)
            state["done"].append(attack)
            state.setdefault("robust_after", {})[attack] = int(robust.sum())
            state["current"] = None
            _save(path, state)
            bar.update(1)
    finally:
        bar.close()
        logger.removeHandler(handler)
        _save(path, state)  # keeps the warnings collected so far
    if warnings_out is not None:
        warnings_out.extend(m for m in state["warnings"] if m not in warnings_out)
    if stages_out is not None:  # samples still robust after each attack (a standard run gives the fast number too)
        stages_out.update(state.get("robust_after", {}))
    return robust


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    version: str = "standard",
    batch_size: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial examples from AutoAttack (the :func:`autoattack_flags` driver); unbroken samples come back unchanged.

    ``version`` is a registry name ('autoattack', 'autoattack-fast', 'apgd-ce') or pyautoattack's ('standard',
    'fast'). For a resumable evaluation use :func:`autoattack_flags` with a ``state_path``.
    """
    by_version = {suite.version: name for name, suite in SUITES.items()}
    name = version if version in SUITES else by_version.get(version)
    if name is None:
        raise ValueError(f"unknown AutoAttack version '{version}'; use one of {list(SUITES)}")
    if eps == 0:
        return x.detach().clone()  # an empty ball has nothing to search
    images = x.detach().cpu().clone()
    autoattack_flags(model, x, y, name, eps, batch_size, x.device, seed, images_out=images)
    return images.to(x.device)


@attack_family("|".join(re.escape(name) for name in SUITES), examples=tuple(SUITES))
def _family(match: re.Match[str]) -> Attack:
    name = match.string
    suite = SUITES[name]

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        # One batch of the AutoAttack driver, which robustcompress.verify also runs (resumably) over whole sets.
        return run_autoattack(model, x, y, eps, version=name, batch_size=max(1, len(x)), seed=seed)

    return Attack(name, "autoattack", {"suite": suite.description, "version": suite.version}, run)
