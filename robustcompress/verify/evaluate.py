"""Clean and robust accuracy of a model under a suite of attacks, with the per-sample worst case."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from robustcompress.attacks.common import channels_last_weights, eval_mode
from robustcompress.data.core import check_images, check_labels
from robustcompress.data.tensors import as_float_images
from robustcompress.arguments import require_int
from robustcompress.attacks.autoattack import autoattack_flags
from robustcompress.attacks import craft_batches, get_attack, resolve_attacks
from robustcompress.io import weights_fingerprint
from robustcompress.runtime_env import progress_bar

__all__ = ["EvalReport", "attack_flags", "evaluate", "predict_correct", "take_examples", "validation_score"]


@dataclass
class EvalReport:
    """Accuracies of one model: clean, per attack, and worst case over every attack run (per sample).

    ``per_sample[name][i]`` says whether sample i was still classified correctly after attack ``name``
    ('clean' included); a sample counts towards ``worst_case_acc`` only if it survives every attack.
    ``attack_warnings`` holds the flags AutoAttack itself raised (zero gradients, randomised defence, ...).
    """

    n_examples: int
    eps: float
    clean_acc: float
    robust_acc: dict[str, float]
    worst_case_acc: float
    per_sample: dict[str, list[bool]] = field(repr=False, default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    attack_settings: dict[str, Any] = field(default_factory=dict)
    norm: str = "Linf"
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    attack_warnings: dict[str, list[str]] = field(default_factory=dict)
    #: Samples classified correctly: 'clean', each attack and 'worst_case' (so gates compare exact fractions).
    correct: dict[str, int] = field(default_factory=dict)
    #: For AutoAttack suites: samples still robust after each of the suite's attacks, in order.
    stage_correct: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self, per_sample: bool = False) -> dict[str, Any]:
        out = {
            "n_examples": self.n_examples,
            "eps": self.eps,
            "norm": self.norm,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "clean_acc": self.clean_acc,
            "robust_acc": dict(self.robust_acc),
            "worst_case_acc": self.worst_case_acc,
            "worst_case_over": ["clean", *self.robust_acc],
            "correct": dict(self.correct),
            "timings_s": dict(self.timings_s),
            "attack_settings": dict(self.attack_settings),
            "attack_warnings": {k: list(v) for k, v in self.attack_warnings.items()},
        }
        if per_sample:
            out["per_sample"] = {k: list(v) for k, v in self.per_sample.items()}
        return out


def take_examples(
    data: Dataset | tuple[torch.Tensor, torch.Tensor], n: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n (image, label) pairs as two tensors, checked: float images in [0, 1], whole-number labels."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n_examples={n!r} must be a whole number of at least 1 (or None for all images)")
    if isinstance(data, tuple):
        x, y = data
        if len(x) == 0:
            raise ValueError("the evaluation set is empty; pass a dataset with at least one image")
        x, y = x[:n], y[:n]
    else:
        count = len(data) if n is None else min(n, len(data))  # type: ignore[arg-type]
        if count == 0:
            raise ValueError("the evaluation set is empty; pass a dataset with at least one image")
        tensors = getattr(data, "tensors", None)
        if tensors is not None:
            x, y = as_float_images(tensors[0][:count]), tensors[1][:count]
        else:
            items = [data[i] for i in range(count)]
            x = torch.stack([torch.as_tensor(a) for a, _ in items])
            y = torch.as_tensor([torch.as_tensor(b).item() for _, b in items])
    check_images(x, "evaluation images")
    return x, check_labels(y, "evaluation labels")


def predict_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                    device: torch.device | str) -> torch.Tensor:
    """Per-sample 'classified correctly' flags (on the CPU) for images x."""
    out = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            out.append((model(xb).argmax(1).cpu() == y[start : start + batch_size].cpu()))
    return torch.cat(out)


def check_label_range(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str) -> None:
    """Refuse labels the model cannot output (one forward of one image), before any attack runs."""
    with torch.no_grad(), eval_mode(model):
        outputs = model(x[:1].to(device)).shape[-1]
    top = int(y.max())
    if top >= outputs:
        raise ValueError(f"evaluation labels go up to {top} but the model predicts {outputs} classes "
                         f"(0..{outputs - 1}); evaluate it on data with the classes it was trained on")


def autoattack_state_path(state_dir: str | Path, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                          eps: float, seed: int) -> Path:
    """Where the resumable state of one AutoAttack run lives: one file per model, data, eps, seed and suite."""
    digest = hashlib.sha256()
    digest.update(weights_fingerprint(model).encode())
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{eps!r}:{seed}".encode())
    return Path(state_dir) / f"{name}-{digest.hexdigest()[:16]}.json"


def attack_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    eps: float,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    scorer: nn.Module | None = None,
    state_dir: str | Path | None = None,
    progress: bool = False,
    warnings_out: list[str] | None = None,
    stages_out: dict[str, int] | None = None,
) -> torch.Tensor:
    """Per-sample flags (CPU, bool): is sample i still classified correctly after attack ``name`` at ``eps``?

    White-box attacks are crafted on ``model``; black-box ones (Square) query ``scorer``. Correctness is judged
    by ``scorer`` (default: ``model``), e.g. an ONNX session whose PyTorch twin supplies the gradients.
    ``state_dir`` makes AutoAttack resumable; its flags are appended to ``warnings_out``.
    """
    scorer = model if scorer is None else scorer
    if name == "clean" or eps == 0:
        return predict_correct(scorer, x, y, batch_size, device)
    attack = get_attack(name)
    if attack.kind == "autoattack":
        state_path = None if state_dir is None else autoattack_state_path(state_dir, name, model, x, y, eps, seed)
        return autoattack_flags(model, x, y, name, eps, batch_size, device, seed, scorer, state_path, warnings_out,
                                progress, stages_out=stages_out)
    target = scorer if attack.kind == "black-box" else model
    out = [predict_correct(scorer, x_adv, y[start : start + len(x_adv)], batch_size, device)
           for start, x_adv in craft_batches(name, target, x, y, eps, seed, batch_size, device, progress)]
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    attacks: Sequence[str] = ("pgd20",),
    eps: float = 8 / 255,
    n_examples: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
    *,
    scorer: nn.Module | None = None,
    state_dir: str | Path | None = None,
    shard: bool = False,
) -> EvalReport:
    """Clean accuracy and accuracy under each attack; a sample is robust only if it survives every attack.

    ``attacks`` are names from :func:`robustcompress.attacks.get_attack` or a preset ('fast', 'standard').
    ``scorer`` judges correctness when it differs from the model the attacks are crafted on (ONNX + twin);
    ``state_dir`` keeps AutoAttack's state there so an interrupted evaluation resumes where it stopped.
    ``shard=True``: under torchrun each rank attacks every world-th image and every rank gets the whole report
    (no effect in one process).
    """
    if not 0 <= eps <= 1:
        raise ValueError(f"eps={eps} is outside [0, 1]; eps is in pixel units, e.g. 8/255 = {8 / 255:.4f}")
    require_int("batch_size", batch_size, least=1)
    names = resolve_attacks(attacks)
    x_all, y_all = take_examples(data, n_examples)
    model = model.to(device)
    check_label_range(scorer if scorer is not None else model, x_all, y_all, device)
    if shard:  # imported here: plain evaluation does not load the training layer
        from robustcompress.trainer.distributed import shard_evaluation

    def run(rank: int, world: int) -> tuple[dict[str, list[bool]], dict[str, float], dict[str, list[str]],
                                            dict[str, dict[str, int]]]:
        """Raw per-sample flags, seconds, AutoAttack's warnings and per-stage counts by attack, for images rank,
        rank + world, ... (the counts are summed over ranks by shard_evaluation)"""
        x, y = x_all[rank::world], y_all[rank::world]
        flags: dict[str, list[bool]] = {}
        timings: dict[str, float] = {}
        warnings: dict[str, list[str]] = {}
        stage_correct: dict[str, dict[str, int]] = {}
        with channels_last_weights(model):  # NHWC kernels: attacks ran 1.4x faster on the CPU
            for name in progress_bar(["clean", *names], "attacks", progress):
                t0 = time.perf_counter()
                messages: list[str] = []
                stages: dict[str, int] = {}
                flags[name] = attack_flags(model, x, y, name, eps, batch_size, device, seed, scorer, state_dir,
                                           progress, messages, stages).tolist()
                timings[name] = time.perf_counter() - t0
                if messages:
                    warnings[name] = messages
                if stages:
                    stage_correct[name] = stages
        return flags, timings, warnings, stage_correct

    per_sample, timings, warnings, stage_correct = shard_evaluation(run, len(y_all)) if shard else run(0, 1)
    flags = {k: torch.tensor(v, dtype=torch.bool) for k, v in per_sample.items()}
    worst = torch.stack(list(flags.values())).all(dim=0)
    return EvalReport(
        n_examples=len(y_all),
        eps=eps,
        clean_acc=flags["clean"].float().mean().item(),
        robust_acc={k: v.float().mean().item() for k, v in flags.items() if k != "clean"},
        worst_case_acc=worst.float().mean().item(),
        per_sample={k: v.tolist() for k, v in flags.items()},
        timings_s=timings,
        attack_settings={k: get_attack(k).settings for k in names},
        seed=seed,
        batch_size=batch_size,
        device=str(device),
        attack_warnings=warnings,
        stage_correct=stage_correct,
        correct={**{k: int(v.sum()) for k, v in flags.items()}, "worst_case": int(worst.sum())},
    )


def validation_score(val_set: Dataset, eps: float, device: torch.device | str, seed: int
                     ) -> Callable[[nn.Module], dict[str, Any]]:
    """PGD-10 accuracy at ``eps`` on a validation split: the score RobustCompressor(select='best-robust') keeps."""
    def score(model: nn.Module) -> dict[str, Any]:
        report = evaluate(model, val_set, ("pgd10",), eps=eps, device=device, seed=seed, progress=False)
        return {"score": report.robust_acc["pgd10"], "val_clean": report.clean_acc,
                "val_pgd10": report.robust_acc["pgd10"]}

    return score
