"""The CIFAR-10 benchmark's students: one method and seed trained under the protocol, then evaluated on the test
split (clean, PGD, AutoAttack, masking checks) or, for an ablation, scored on the validation split only."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from table_protocol import (Setting, command_line, describe_device, metrics_of, student_attacks, today, with_train)
from table_teachers import Teacher, teacher_roles


# -- students -----------------------------------------------------------------------------------------------------------
def masking_checks(model: torch.nn.Module, data: Any, setting: Setting, report: Any, teachers: dict[str, Teacher],
                   device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """robustcompress.verify's gradient-masking checks on the student's evaluation, transfers from every teacher."""
    from robustcompress.verify import CheckSettings, run_checks
    from robustcompress.verify.evaluate import take_examples

    if setting.checks == "none":
        return []
    x, y = take_examples(data.test, report.n_examples)
    results = run_checks(model, x, y, report, settings=CheckSettings(level=setting.checks),
                         transfer_from={t.role: t.model for t in teachers.values()}, device=device, progress=progress)
    return [{"name": r.name, "status": r.status, "message": r.message} for r in results]


def evaluate_student(model: torch.nn.Module, method: str, seed: int, setting: Setting, data: Any,
                     device: torch.device, progress: bool, with_autoattack: bool = True) -> dict[str, Any]:
    """Clean and the PGD attacks on ``test_images``; AutoAttack on the first ``aa_test_images`` of them, whose worst
    case counts an image only if it survives every attack (PGD included)."""
    from robustcompress.verify import evaluate

    aa = student_attacks(setting, method, seed)[len(setting.attacks):] if with_autoattack else []
    aa_n = setting.aa_test_images or setting.test_images
    if not aa or aa_n == setting.test_images:
        report = evaluate(model, data.test, [*setting.attacks, *aa], eps=setting.eps, n_examples=setting.test_images,
                          device=device, seed=seed, progress=progress)
        return {**metrics_of(report), "n_test_autoattack": report.n_examples if aa else None}, report
    main = evaluate(model, data.test, setting.attacks, eps=setting.eps, n_examples=setting.test_images,
                    device=device, seed=seed, progress=progress)
    sub = evaluate(model, data.test, aa, eps=setting.eps, n_examples=aa_n, device=device, seed=seed,
                   progress=progress)
    row = metrics_of(main)
    flags = [torch.tensor(sub.per_sample[a]) for a in aa]
    flags += [torch.tensor(main.per_sample[a][: sub.n_examples]) for a in setting.attacks]
    row.update(autoattack=sub.robust_acc[aa[0]], autoattack_version=metrics_of(sub)["autoattack_version"],
               n_test_autoattack=sub.n_examples, worst_case=torch.stack(flags).all(0).float().mean().item(),
               worst_case_n=sub.n_examples, eval_time_s=row["eval_time_s"] + sum(sub.timings_s.values()),
               attack_times_s={**main.timings_s, **sub.timings_s})  # where the evaluation budget goes
    stages = sub.stage_correct.get("autoattack")
    if stages and "apgd-t" in stages:
        # A standard run passes through APGD-CE + APGD-T first: that point is the 'fast' number every seed has, so
        # the seeds' mean stays one quantity; the standard number is kept beside it.
        row.update(autoattack_standard=row["autoattack"], autoattack_stages={k: v / sub.n_examples
                                                                             for k, v in stages.items()},
                   autoattack=stages["apgd-t"] / sub.n_examples, autoattack_version="fast")
    return row, sub


@dataclass(frozen=True)
class Variant:
    """A method run with changed hyperparameters or teacher outputs: its rows are labelled 'method [label]' and
    sit beside the protocol's rows (ablations, the full-cost setting of a method that has a cheaper one)."""

    label: str
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher_outputs: str | None = None  # None: the protocol's choice for the method


def teacher_outputs_for(method: str, setting: Setting, variant: Variant | None = None) -> str:
    if variant is not None and variant.teacher_outputs is not None:
        return variant.teacher_outputs
    return "cached" if method in setting.cached_teacher_outputs_for else "live"


def run_method(method: str, seed: int, setting: Setting, data: Any, teachers: dict[str, Teacher], device: torch.device,
               progress: bool, unit_s: float | None = None, variant: Variant | None = None,
               test_split: bool = True) -> dict[str, Any]:
    """Train one student with ``method`` and ``seed`` under the shared setting and evaluate it (with select=
    'best-robust', the best-validation epoch in full and the last epoch on clean and the PGD attacks).
    ``test_split=False`` (an ablation) stops after training: the row holds the validation curve only."""
    import copy

    from robustcompress import RobustCompressor

    roles = teacher_roles(method)
    outputs = teacher_outputs_for(method, setting, variant)
    rc = RobustCompressor(
        [teachers[r].model for r in roles], setting.student, method=method, eps=setting.eps,
        step_size=setting.step_size, steps=setting.steps, epochs=setting.epochs, batch_size=setting.batch_size,
        lr=setting.lr, momentum=setting.momentum, weight_decay=setting.weight_decay, schedule=setting.schedule,
        device=str(device), seed=seed, verify_attacks=(), progress=progress,
        select="best-robust" if setting.val_images else "last", val_size=setting.val_images or 1000,
        teacher_outputs=outputs, method_kwargs=dict(variant.method_kwargs) if variant else None,
    )
    rc.fit(with_train(data, setting.train_images))
    train_s = rc.timings_s["train"]
    common = {
        "method": method if variant is None else f"{method} [{variant.label}]",
        "seed": seed,
        "status": "ok",
        "teachers": list(roles),
        "teacher_outputs": outputs,
        "variant": None if variant is None else dataclasses.asdict(variant),
        "method_hparams": rc.method.hparams(),
        "selection": rc.selection or {"select": "last"},
        "train_time_s": train_s,
        "unit_s": unit_s,
        "train_units": None if not unit_s else train_s / unit_s,
        "final_train_acc": rc.history[-1]["train_acc"] if rc.history else None,
        "device": describe_device(device),
        "date": today(),
        "command": command_line(),
        "student": rc,  # removed before writing; main() saves seed 0's bundle when asked
    }
    if not test_split:  # an ablation: the selected epoch's validation scores, no test-split number
        best = rc.selection["best"]
        return {**common, "split": "validation", "val_clean": best["val_clean"], "val_pgd10": best["val_pgd10"]}
    t0 = time.perf_counter()
    # A variant (an ablation) gets the protocol's AutoAttack; standard AutoAttack is for the protocol's own rows.
    row, report = evaluate_student(rc.student, common["method"], seed, setting, data, device, progress)
    checks = masking_checks(rc.student, data, setting, report, teachers, device, progress)
    last = None
    if rc.selection.get("best_epoch") == setting.epochs:  # the best epoch is the last: nothing more to evaluate
        last = {k: row[k] for k in ("clean", "attacks", "n_test")}
    elif rc.last_state is not None:
        last_model = copy.deepcopy(rc.student)
        last_model.load_state_dict(rc.last_state)
        last, _ = evaluate_student(last_model, method, seed, setting, data, device, progress, with_autoattack=False)
        last = {k: last[k] for k in ("clean", "attacks", "n_test")}
    eval_wall = time.perf_counter() - t0
    return {**common, **row, "last_epoch": last, "eval_wall_s": eval_wall,
            "eval_units": None if not unit_s else eval_wall / unit_s, "masking_checks": checks}
