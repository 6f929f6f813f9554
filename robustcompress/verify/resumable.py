"""AutoAttack run attack by attack and batch by batch, with a state file so an interrupted evaluation resumes.

pyautoattack has its own state file (``run_standard_evaluation(..., state_path=...)``), but version 0.2.0 cannot
resume from it: it stores the attack sets as a string and a list, so the reloaded state never matches the planned
attacks ("The state was created with a different set of attacks"), and a resumed run that breaks one more sample
fails with an UnboundLocalError on ``y_adv``. So this module drives pyautoattack's attacks itself, exactly as its
standard evaluation does (each attack runs, in order, on the samples still robust, ``batch_size`` at a time, with
the attack's seed reset per batch), and after every batch writes the per-sample flags to its own JSON state file.
A resumed run therefore gives the same result as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustcompress.attacks.autoattack import build_autoattack
from robustcompress.attacks.common import eval_mode
from robustcompress.io import atomic_write
from robustcompress.verify.suite import AUTOATTACK_VERSIONS, seeded

STATE_FORMAT = "robustcompress-autoattack-state"
log = logging.getLogger("robustcompress")


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
        text = json.dumps(state)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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
    stages_out: dict[str, int] | None = None,
) -> torch.Tensor:
    """Per-sample flags (CPU, bool): does sample i survive every attack of AutoAttack suite ``name``?

    ``name`` is 'autoattack' (standard: APGD-CE, APGD-T, FAB-T, Square), 'autoattack-fast' or 'apgd-ce'. Attacks
    are crafted on ``model`` and success is judged by ``scorer`` (default ``model``). With ``state_path`` the
    progress is saved after every batch and an existing state file is resumed. AutoAttack's warnings (zero
    gradients, randomised defence, ...) are appended to ``warnings_out``; ``stages_out`` receives, per attack of the
    suite, how many samples were still robust after it (so a standard run also yields the APGD-CE + APGD-T number).
    """
    scorer = model if scorer is None else scorer
    x, y = x.cpu(), y.cpu().long()
    path = None if state_path is None else Path(state_path)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(model(x[:1].to(device)).shape[1])
    adversary = build_autoattack(model, eps, AUTOATTACK_VERSIONS[name], seed, device, num_classes)
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
    bar = tqdm(total=len(attacks), desc=name, disable=not progress, leave=False)
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
                robust[chunk] &= _correct(scorer, x_adv, y[chunk], device)
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
    if stages_out is not None:
        stages_out.update(state.get("robust_after", {}))
    return robust
