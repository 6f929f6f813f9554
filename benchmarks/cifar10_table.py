"""CIFAR-10 benchmark: every distillation method under one protocol, written to docs/results/cifar10_subset.{json,md}.

    python benchmarks/cifar10_table.py --smoke                      # tiny student, 1 epoch, 32 test images, CPU
    python benchmarks/cifar10_table.py                              # the fixed setting (needs a GPU)
    python benchmarks/cifar10_table.py --methods akd,rslad --seeds 0,1,2   # split a run; rows merge into the table
    python benchmarks/cifar10_table.py --data ~/data/torchvision    # full CIFAR-10 from a torchvision folder

Teachers (shared by every method and seed, trained once with seed 0 and cached under $ROBUSTCOMPRESS_CACHE):
teacher 1 is pyautoattack's pre-trained CIFAR-10 ResNet-18; teacher 2 a different timm architecture trained here
with standard training; the robust teacher is teacher 1 weakly adversarially fine-tuned here. Each method gets the
teachers it was designed for (TEACHERS_OF). Re-running with the same setting merges rows into the existing table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import torch

from robustcompress.process_exit import exit_process

# The protocol, its teachers, its students and the results table live beside this script (on sys.path when it runs);
# this file parses arguments, runs them and prints.
from repo_paths import shown
from table_protocol import (AUTOATTACK, DATA_OF, FULL, ISSUE_METHODS, PROTOCOLS, REPO, RESULTS_OF, Setting,
                            calibration_unit, command_line, describe_device, first_images, load_benchmark_data,
                            read_json, reductions, teacher_attacks, today)
from table_report import (ablations_name, checks_cell, finished_runs, fmt, merge_results, ordered_teacher_rows,
                          place_teacher_row, retire_teacher, same_setting, teacher_key, write_ablations,
                          write_results)
from table_students import Variant, run_method
from table_teachers import check_roles, evaluate_teacher, make_teachers, stored_weights, teacher_roles


# -- main ---------------------------------------------------------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_eps(text: str) -> float:
    """'8/255' or '0.0314', by the rule every robustcompress command uses (robustcompress.cli.common.parse_eps)."""
    from robustcompress.cli.common import eps_value

    return eps_value(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny student, 1 epoch, 32 test images; checks the plumbing")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default=None,
                   help="full (GPU; cifar10_subset.*), cpu-scale (2-core CPU, CIFAR-10 JPEGs; cifar10_cpu.*) or smoke")
    p.add_argument("--save-bundles", type=Path, default=None,
                   help="save seed 0's student of each method as a bundle in DIR/<method> (student.safetensors + "
                        "config.json)")
    p.add_argument("--teacher-store", type=Path, default=None,
                   help="a folder of the repository for the robust teacher (e.g. docs/results/cifar10_cpu_standard/"
                        "teachers): read from there when it holds one of this setting's recipe, put there when made")
    p.add_argument("--retire-teacher", metavar="ROLE", default=None,
                   help="retire the table's teacher of ROLE, lost with its machine's cache: its rows are marked † and "
                        "the teacher made for the role after it becomes the table's; rewrites and renders the table")
    p.add_argument("--methods", type=parse_list, default=list(ISSUE_METHODS), help="comma-separated (default: all ten)")
    p.add_argument("--seeds", type=lambda t: [int(s) for s in parse_list(t)], default=[0], help="e.g. 0,1,2")
    p.add_argument("--data", type=Path, default=None,
                   help="the CIFAR-10 subset .npz (default of full/smoke), the CIFAR-10 JPEG image folder (default "
                        "of cpu-scale), or torchvision's CIFAR-10 root folder")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for cifar10_subset.json/.md (default docs/results, or runs/cifar10_smoke with --smoke)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--cache", type=Path, default=None, help="teacher cache folder (default $ROBUSTCOMPRESS_CACHE)")
    p.add_argument("--note", default="", help="a sentence put at the top of the results file (with --render-only: "
                   "replaces the file's note, e.g. to say how a row was timed, and renders it)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--variant", metavar="LABEL",
                   help="run the methods with changed hyperparameters (--method-arg) or teacher outputs; rows are "
                        "labelled 'METHOD [LABEL]' and sit beside the protocol's rows (ablations, full-cost settings)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="with --variant: a method hyperparameter, e.g. feature_weight=0 (repeatable)")
    p.add_argument("--teacher-outputs", choices=("live", "cached"),
                   help="with --variant: run clean-image teachers at every step (live) or once before training (cached)")
    p.add_argument("--teachers", metavar="ROLES",
                   help="with --variant: the teachers instead of the method's own, comma-separated roles of "
                   "teacher1, teacher2, robust, robust-final (the robust teacher's last epoch, not its early-stopped "
                   "one), robust2 (the other standard teacher made robust by the same recipe)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="with --variant: the students' training precision instead of the protocol's (evaluation is "
                        "always fp32)")
    p.add_argument("--validation-only", action="store_true",
                   help="an ablation on the validation split: train with best-robust selection and record each "
                        "epoch's validation clean / PGD-10 accuracy, never touching the test split; rows go to "
                        "<results>_ablations.json/.md beside the table")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="resumable runs: each student checkpoints every epoch in DIR/<method>-seed<S> (with --variant: "
                        "<method>-<label>-seed<S>) and a rerun continues it, or loads it when it finished training")
    p.add_argument("--skip-done", action="store_true",
                   help="leave out every method and seed whose row the results file already holds (status ok): a "
                        "queue of runs re-issued after an interruption does only what is missing")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the .md and .png from the existing .json in --out without running anything")
    g = p.add_argument_group("changes to the fixed setting (recorded in the results as reductions)")
    g.add_argument("--student")
    g.add_argument("--eps", type=parse_eps, help="L-inf budget of training and evaluation, e.g. 8/255")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--steps", type=int, help="PGD steps of the training attack")
    g.add_argument("--step-size", type=parse_eps, help="step of the training attack, e.g. 4/255")
    g.add_argument("--train-images", type=int)
    g.add_argument("--test-images", type=int)
    g.add_argument("--teacher-test-images", type=int)
    g.add_argument("--attacks", type=lambda t: tuple(parse_list(t)), help="e.g. pgd20,cw30")
    g.add_argument("--teacher-attacks", type=lambda t: tuple(parse_list(t)),
                   help="attacks for the teachers' rows (default: the students' attacks and AutoAttack)")
    g.add_argument("--autoattack", choices=tuple(AUTOATTACK),
                   help="AutoAttack version: standard, fast (APGD-CE + APGD-T), apgd-ce or none")
    g.add_argument("--autoattack-standard-for", type=lambda t: tuple(parse_list(t)),
                   help="methods that get standard AutoAttack even when --autoattack fast")
    g.add_argument("--checks", choices=("full", "quick", "none"), help="level of the gradient-masking checks")
    g.add_argument("--teacher2")
    g.add_argument("--teacher2-epochs", type=int)
    g.add_argument("--teacher2-lr", type=float)
    g.add_argument("--robust-eps", type=parse_eps, help="e.g. 4/255")
    g.add_argument("--robust-steps", type=int)
    g.add_argument("--robust-epochs", type=int)
    g.add_argument("--robust-lr", type=float)
    g.add_argument("--robust-train-images", type=int)
    g.add_argument("--val-images", type=int, help="validation images carved out of train for best-robust selection")
    g.add_argument("--aa-test-images", type=int, help="test images AutoAttack runs on")
    return p


def variant_from(args: argparse.Namespace) -> Variant | None:
    """The --variant of this run, or None for the protocol's own setting of each method."""
    kwargs = {}
    for item in args.method_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--method-arg {item!r} must look like KEY=VALUE, e.g. feature_weight=0")
        kwargs[key] = parse_value(value)
    teachers = tuple(t for t in (args.teachers or "").split(",") if t) or None
    try:
        check_roles(teachers or ())
    except ValueError as exc:
        raise SystemExit(f"--teachers: {exc}") from None
    if args.variant is None:
        if kwargs or args.teacher_outputs or args.precision or teachers:
            raise SystemExit("--method-arg, --teacher-outputs, --precision and --teachers change a method: name the "
                             "variant with --variant LABEL so its rows sit beside the protocol's instead of "
                             "replacing them")
        return None
    return Variant(args.variant, kwargs, args.teacher_outputs, args.precision, teachers)


def parse_value(text: str) -> Any:
    """A --method-arg value: JSON when it parses (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def protocol_of(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else (args.protocol or "full")


#: Flags named like a Setting field that change a --variant's rows, never the protocol's setting.
VARIANT_FLAGS = ("precision",)


def setting_from(args: argparse.Namespace) -> Setting:
    base = PROTOCOLS[protocol_of(args)]
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Setting)
               if f.name not in VARIANT_FLAGS and getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **changes)


def check_methods(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """(registered methods to run, methods of the benchmark that this robustcompress lacks); typos are errors."""
    from robustcompress import list_methods

    registered = set(list_methods())
    unknown = [m for m in requested if m not in registered and m not in ISSUE_METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; the benchmark's methods are {', '.join(ISSUE_METHODS)} "
                         f"and this robustcompress registers {', '.join(sorted(registered))}")
    return [m for m in requested if m in registered], [m for m in requested if m not in registered]


def print_row(row: dict[str, Any]) -> None:
    if row.get("split") == "validation":
        print(f"   validation: clean {fmt(row['val_clean'])}  pgd10 {fmt(row['val_pgd10'])}  "
              f"train {row['train_time_s']:.0f}s", flush=True)
        return
    scores = {"clean": row["clean"], **row["attacks"], "autoattack": row["autoattack"], "worst": row["worst_case"]}
    print("   " + "  ".join(f"{k} {fmt(v)}" for k, v in scores.items())
          + f"  train {row['train_time_s']:.0f}s  eval {row['eval_wall_s']:.0f}s  checks {checks_cell([row])}",
          flush=True)


def write_any(out: Path, results: dict[str, Any], ablations: bool, table_name: str, plot: bool = True) -> None:
    """The table, or the ablations file (which compares with the table's own rows of the same seeds)."""
    if ablations:
        write_ablations(out, results, table_name)
    else:
        write_results(out, results, table_name, plot=plot)


def retire(out: Path, table_name: str, role: str) -> int:
    """--retire-teacher: retire_teacher on the table (and its ablations), written and rendered."""
    table, ablations = read_json(out / f"{table_name}.json"), read_json(out / f"{ablations_name(table_name)}.json")
    try:
        retire_teacher(table, role, today(), ablations or None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_any(out, table, False, table_name)
    if ablations:
        write_any(out, ablations, True, table_name)
    print(f"retired {role} in {out / f'{table_name}.json'}; its rows are marked †", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = command_line(argv)  # the table records this run's own arguments, also when called as main(argv)
    variant = variant_from(args)  # before any work: a malformed --method-arg costs nothing
    if args.cache is not None:
        os.environ["ROBUSTCOMPRESS_CACHE"] = str(args.cache)
    from robustcompress.io import weights_fingerprint
    from robustcompress.runtime_env import resolve_device

    protocol = protocol_of(args)
    table_name = RESULTS_OF[protocol]
    results_name = ablations_name(table_name) if args.validation_only else table_name
    data_path = args.data or DATA_OF[protocol]
    out = args.out or (REPO / "runs" / "cifar10_smoke" if args.smoke else REPO / "docs" / "results")
    if args.retire_teacher:
        return retire(out, table_name, args.retire_teacher)
    if args.render_only:
        results = read_json(out / f"{results_name}.json")
        if not results:
            print(f"error: no {results_name}.json in {out} to render; run the benchmark first", file=sys.stderr)
            return 2
        if args.note:
            results = {**results, "note": args.note}
        write_any(out, results, args.validation_only, table_name)
        print(f"rendered {out / f'{results_name}.md'}", flush=True)
        return 0
    setting = setting_from(args)
    if args.validation_only and not setting.val_images:
        print("error: --validation-only needs a validation split: give --val-images N", file=sys.stderr)
        return 2
    run, missing = check_methods(args.methods)
    for m in missing:
        print(f"warning: method '{m}' is not registered in this robustcompress; its row is left out", flush=True)
    path = out / f"{results_name}.json"
    old = read_json(path)
    comparable = same_setting(old.get("setting"), json.loads(json.dumps(dataclasses.asdict(setting))),
                              old.get("rows", []))
    # a row trained with another robust teacher than the stored one is run again, with the stored one
    done = finished_runs(old.get("rows", []), stored_weights(args.teacher_store)) if (
        comparable and args.skip_done) else set()
    def label_of(method: str) -> str:  # the method as its rows name it
        return method if variant is None else f"{method} [{variant.label}]"

    todo: list[tuple[str, int]] = []
    for method in run:
        for seed in args.seeds:
            if (label_of(method), seed) in done:
                print(f"== {label_of(method)} seed {seed}: in {path.name} already (--skip-done)", flush=True)
            else:
                todo.append((method, seed))
    if args.skip_done and not todo:
        # Before the data, the calibration and the teachers: on a machine without the teacher cache, a finished step
        # would otherwise re-make (hours, for the robust teacher) and evaluate teachers that nothing uses.
        print(f"nothing left to run for {path.name}", flush=True)
        return 0
    unregistered = check_methods(ISSUE_METHODS)[1]  # the table lists every benchmark method it could not run
    device = resolve_device(args.device)
    if device.type == "cpu" and setting == FULL:
        print("warning: the full setting on a CPU takes days; use --protocol cpu-scale or --smoke", flush=True)
    progress = not args.no_progress
    try:
        data = load_benchmark_data(data_path, setting, progress)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unit_s = calibration_unit() if device.type == "cpu" and not args.smoke else None
    if unit_s:
        print(f"calibration unit: {unit_s:.3f} s (../shared/tools/calibrate.py)", flush=True)
    load = os.getloadavg()[0] if device.type == "cpu" and hasattr(os, "getloadavg") else None
    started = time.perf_counter()

    roles = sorted({r for m, _ in todo for r in teacher_roles(m, variant)})  # only the teachers a run still needs
    try:
        teachers = make_teachers(setting, data, device, progress, roles, store=args.teacher_store)
    except (ValueError, FileNotFoundError) as exc:  # a teacher choice this setting cannot give (--teachers)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    teacher_rows = {teacher_key(t): t for t in old.get("teachers", [])} if comparable else {}
    fingerprints = {role: weights_fingerprint(t.model) for role, t in teachers.items()}
    remade: set[str] = set()
    for t in ([] if args.validation_only else teachers.values()):  # an ablation never looks at the test split
        known = next((key for key, r in teacher_rows.items() if r["role"] == t.role
                      and r.get("weights") == fingerprints[t.role] and "per_image" in r), None)
        if known is not None:  # the table holds this teacher's evaluation (a stored teacher on a fresh machine)
            if known != t.role:
                remade.add(t.role)
            continue
        row = evaluate_teacher(t, setting, data, device, progress)
        row = {"role": t.role, "description": t.description, "train_time_s": t.train_time_s,
               "train_units": None if not (unit_s and t.train_time_s) else t.train_time_s / unit_s,
               "weights": fingerprints[t.role], **t.extra, **row}
        if place_teacher_row(teacher_rows, row, today()):
            remade.add(t.role)
            print(f"note: {t.role} differs from the teacher the table's rows were trained with (re-made on another "
                  f"machine?); its rows are marked", flush=True)

    val = setting.val_images or 0
    header = {
        "benchmark": results_name,
        "protocol": protocol,
        "mode": "smoke" if args.smoke else ("fixed" if setting == PROTOCOLS[protocol] else "reduced"),
        "setting": json.loads(json.dumps(dataclasses.asdict(setting))),
        "reduced_from_fixed_setting": json.loads(json.dumps(reductions(setting, PROTOCOLS[protocol]))),
        "data": {"source": shown(data_path), "train_available": len(data.train),
                 "train_size": len(first_images(data.train, setting.train_images)) - val, "val_size": val,
                 "test_used": min(setting.test_images or len(data.test), len(data.test))},
        "teachers": ordered_teacher_rows(teacher_rows),
        "teacher_attacks": teacher_attacks(setting),
        "teachers_of": {m: list(teacher_roles(m)) for m in ISSUE_METHODS if m not in unregistered},
        "missing_methods": unregistered,
        "note": args.note,
        "date": today(),
        "environment": {"device": describe_device(device), "torch": torch.__version__,
                        "python": platform.python_version(), "cpu_count": os.cpu_count(), "load_average": load,
                        "calibration_unit_s": unit_s},
    }
    new_rows: list[dict[str, Any]] = []
    failures = 0
    for method, seed in todo:
        print(f"== {method} seed {seed}", flush=True)
        try:
            work = None if args.work_dir is None else args.work_dir / "-".join(
                [method, *([variant.label] if variant else []), f"seed{seed}"])
            row = run_method(method, seed, setting, data, teachers, device, progress, unit_s, variant,
                             test_split=not args.validation_only, work_dir=work)
        except Exception as exc:  # reported in the table and the exit code; the other methods still run
            traceback.print_exc()
            failures += 1
            row = {"method": label_of(method), "seed": seed,
                   "status": f"failed: {type(exc).__name__}: {exc}", "device": describe_device(device), "date": today()}
        else:
            student = row.pop("student")
            row["teacher_weights"] = {role: fingerprints[role] for role in row["teachers"]}
            if remade & set(row["teachers"]):
                row["teachers_remade"] = sorted(remade & set(row["teachers"]))
            if args.save_bundles is not None and seed == 0 and variant is None and not args.validation_only:
                # The committed bundles hold the selected (best-validation) student only, without teacher
                # weights or the last epoch: a few MB each, enough for 'robustcompress evaluate BUNDLE DATA'.
                student.save(args.save_bundles / method, teachers=False, last=False)
            print_row(row)
        row["command"] = command
        new_rows.append(row)
        # After every row, so an interrupted run keeps what it finished; the plot once, at the end.
        write_any(out, merge_results(path, header, new_rows, command), args.validation_only, table_name, plot=False)
    write_any(out, merge_results(path, header, new_rows, command), args.validation_only, table_name)
    print(f"wrote {path} and {path.with_suffix('.md')} in {time.perf_counter() - started:.0f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    exit_process(main())
