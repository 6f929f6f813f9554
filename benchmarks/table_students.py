"""The CIFAR-10 benchmark's students: one method and seed trained under the protocol, then evaluated on the test
split (clean, PGD, AutoAttack, masking checks) or, for an ablation, scored on the validation split only."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from table_protocol import (Setting, describe_device, metrics_of, student_attacks, today,
                            verdict_string, with_train)
from table_teachers import Teacher, teacher_roles


# -- students -----------------------------------------------------------------------------------------------------------
def autoattack_block(setting: Setting, seed: int) -> slice:
    """The test images (positions in the shuffled test split) seed ``seed``'s AutoAttack runs on: the first
    aa_test_images, or with aa_block_per_seed the seed's own block of that many."""
    n = setting.aa_test_images or setting.test_images or 0
    start = n * seed if setting.aa_block_per_seed else 0
    return slice(start, start + n)


def autoattack_images(setting: Setting, data: Any, seed: int) -> Any:
    """The test set AutoAttack (and the masking checks, which compare with it) runs on for ``seed``."""
    from robustcompress.data.tensors import subset_tensors

    block = autoattack_block(setting, seed)
    if block.start == 0:
        return data.test
    if block.stop > len(data.test):
        raise ValueError(f"seed {seed}'s AutoAttack block (test images {block.start}-{block.stop - 1}) lies beyond "
                         f"the {len(data.test)} test images; use seeds below {len(data.test) // (block.stop - block.start)}")
    return subset_tensors(data.test, block)


def masking_checks(model: torch.nn.Module, test_set: Any, setting: Setting, report: Any, teachers: dict[str, Teacher],
                   device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """robustcompress.verify's gradient-masking checks on the images of the student's AutoAttack evaluation
    (``test_set``, whose first ``report.n_examples`` the report covers), transfers from every teacher."""
    from robustcompress.verify import CheckSettings, run_checks
    from robustcompress.verify.evaluate import take_examples

    if setting.checks == "none":
        return []
    x, y = take_examples(test_set, report.n_examples)
    results = run_checks(model, x, y, report, settings=CheckSettings(level=setting.checks),
                         transfer_from={t.role: t.model for t in teachers.values()}, device=device, progress=progress)
    return [{"name": r.name, "status": r.status, "message": r.message} for r in results]


def evaluate_student(model: torch.nn.Module, method: str, seed: int, setting: Setting, data: Any,
                     device: torch.device, progress: bool, with_autoattack: bool = True) -> dict[str, Any]:
    """Clean and the PGD attacks on ``test_images``; AutoAttack on ``aa_test_images`` of them (the first ones, or
    the seed's block), whose worst case counts an image only if it survives every attack (PGD included)."""
    from robustcompress.verify import evaluate

    aa = student_attacks(setting, method, seed)[len(setting.attacks):] if with_autoattack else []
    aa_n = setting.aa_test_images or setting.test_images
    block = autoattack_block(setting, seed)
    if not aa or (aa_n == setting.test_images and block.start == 0):
        report = evaluate(model, data.test, [*setting.attacks, *aa], eps=setting.eps, n_examples=setting.test_images,
                          device=device, seed=seed, progress=progress)
        return {**metrics_of(report), "n_test_autoattack": report.n_examples if aa else None}, report
    main = evaluate(model, data.test, setting.attacks, eps=setting.eps, n_examples=setting.test_images,
                    device=device, seed=seed, progress=progress)
    sub = evaluate(model, autoattack_images(setting, data, seed), aa, eps=setting.eps, n_examples=aa_n,
                   device=device, seed=seed, progress=progress)
    row = metrics_of(main)
    flags = [torch.tensor(sub.per_sample[a]) for a in aa]
    flags += [torch.tensor(main.per_sample[a][block.start: block.start + sub.n_examples]) for a in setting.attacks]
    row.update(autoattack=sub.robust_acc[aa[0]], autoattack_version=metrics_of(sub)["autoattack_version"],
               n_test_autoattack=sub.n_examples, autoattack_images=[block.start, block.start + sub.n_examples],
               worst_case=torch.stack(flags).all(0).float().mean().item(),
               worst_case_n=sub.n_examples, eval_time_s=row["eval_time_s"] + sum(sub.timings_s.values()),
               attack_times_s={**main.timings_s, **sub.timings_s},  # where the evaluation budget goes
               # per-image verdicts, for paired differences and the bootstrap over images and seeds
               per_image={"autoattack": verdict_string(sub.per_sample[aa[0]]),
                          **{a: verdict_string(main.per_sample[a]) for a in setting.attacks}})
    stages = sub.stage_correct.get("autoattack")
    if stages and "apgd-t" in stages and setting.autoattack_column == "standard":
        row.update(autoattack_stages={k: v / sub.n_examples for k, v in stages.items()})
    elif stages and "apgd-t" in stages:
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
    precision: str | None = None  # None: the protocol's training precision
    teachers: tuple[str, ...] | None = None  # None: the teachers the method was designed for (TEACHERS_OF)


def teacher_outputs_for(method: str, setting: Setting, variant: Variant | None = None) -> str:
    if variant is not None and variant.teacher_outputs is not None:
        return variant.teacher_outputs
    return "cached" if method in setting.cached_teacher_outputs_for else "live"


def train_or_resume(method: str, seed: int, setting: Setting, data: Any, teachers: dict[str, Teacher],
                    device: torch.device, progress: bool, variant: Variant | None,
                    work_dir: Path | None) -> tuple[Any, bool]:
    """The trained RobustCompressor and whether its training was resumed. With a ``work_dir`` the run checkpoints
    every epoch there and saves its bundle at the end, so a benchmark stopped mid-run continues after its last
    epoch, and a run whose bundle is complete is loaded instead of trained again."""
    from robustcompress import RobustCompressor
    from robustcompress.bundle import is_bundle

    if work_dir is not None and is_bundle(work_dir):
        print(f"   trained earlier: {work_dir}", flush=True)
        return RobustCompressor.load(work_dir, device=str(device)), True
    roles = teacher_roles(method, variant)
    rc = RobustCompressor(
        [teachers[r].model for r in roles], setting.student, method=method, eps=setting.eps,
        precision=variant.precision if variant is not None and variant.precision else setting.precision,
        step_size=setting.step_size, steps=setting.steps, epochs=setting.epochs, batch_size=setting.batch_size,
        lr=setting.lr, momentum=setting.momentum, weight_decay=setting.weight_decay, schedule=setting.schedule,
        device=str(device), seed=seed, verify_attacks=(), progress=progress,
        select="best-robust" if setting.val_images else "last", val_size=setting.val_images or 1000,
        teacher_outputs=teacher_outputs_for(method, setting, variant),
        method_kwargs=dict(variant.method_kwargs) if variant else None, out_dir=work_dir,
    )
    resume = work_dir is not None and (work_dir / "checkpoints" / "last.pt").is_file()
    rc.fit(with_train(data, setting.train_images), resume=resume)
    return rc, resume


def run_method(method: str, seed: int, setting: Setting, data: Any, teachers: dict[str, Teacher], device: torch.device,
               progress: bool, unit_s: float | None = None, variant: Variant | None = None,
               test_split: bool = True, work_dir: Path | None = None) -> dict[str, Any]:
    """Train one student with ``method`` and ``seed`` under the shared setting and evaluate it (with select=
    'best-robust', the best-validation epoch in full and the last epoch on clean and the PGD attacks).
    ``test_split=False`` (an ablation) stops after training: the row holds the validation curve only.
    ``work_dir``: where the run checkpoints (see train_or_resume)."""
    import copy

    roles = teacher_roles(method, variant)
    outputs = teacher_outputs_for(method, setting, variant)
    rc, resumed = train_or_resume(method, seed, setting, data, teachers, device, progress, variant, work_dir)
    # A resumed run's wall time covers only its last part: the sum of its epochs' own times stands in for it.
    train_s = sum(h["seconds"] for h in rc.history) if resumed else rc.timings_s["train"]
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
        "resumed": resumed,
        "training_speed": rc.training_speed,
        "history": [{k: h[k] for k in ("epoch", "loss", "train_acc", "seconds") if k in h} for h in rc.history],
        "unit_s": unit_s,
        "train_units": None if not unit_s else train_s / unit_s,
        "final_train_acc": rc.history[-1]["train_acc"] if rc.history else None,
        "device": describe_device(device),
        "date": today(),
        "student": rc,  # removed before writing; main() saves seed 0's bundle when asked
    }
    if not test_split:  # an ablation: the selected epoch's validation scores, no test-split number
        best = rc.selection["best"]
        return {**common, "split": "validation", "val_clean": best["val_clean"], "val_pgd10": best["val_pgd10"]}
    t0 = time.perf_counter()
    # A variant (an ablation) gets the protocol's AutoAttack; standard AutoAttack is for the protocol's own rows.
    row, report = evaluate_student(rc.student, common["method"], seed, setting, data, device, progress)
    checks = masking_checks(rc.student, autoattack_images(setting, data, seed), setting, report, teachers, device,
                            progress)
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
