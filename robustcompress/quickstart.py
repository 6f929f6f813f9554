"""The quickstart pipeline: standard teachers -> distilled student vs PGD-AT baseline -> verify -> ONNX, on digits."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from robustcompress.bundle import is_bundle
from robustcompress.compressor import RobustCompressor
from robustcompress.data import load_data
from robustcompress.io import atomic_write, cache_dir
from robustcompress.methods import create_method
from robustcompress.teachers import data_fingerprint, train_teacher
from robustcompress.trainer.loop import resolve_device
from robustcompress.verify import evaluate

# Sized to finish in about two minutes on a 2-core laptop CPU. The digits stay at their native 8x8: upscaling them
# adds no information and made every phase two to four times slower.
SETTINGS: dict[str, Any] = {
    "dataset": "digits",
    "input_size": 8,
    # Two standard teachers of different depth and width that reach ~99% on 8x8 digits in 6 epochs (RegNetX-200MF,
    # MobileNetV2 and DLA, tried first, stay at 22-84% at this size: their downsampling leaves nothing to see).
    "teachers": ["resnet10t", "test_resnet"],
    "teacher_epochs": 6,
    "teacher_lr": 0.05,
    "student": "test_efficientnet",  # timm's 0.1M-parameter EfficientNet, 4-50x smaller than the teachers
    # Chosen from docs/results/quickstart_seeds.md (3 seeds each, these settings): ARD's student beat the PGD-AT
    # baseline under AutoAttack on every seed (+10.3 points on average); SA-MDRAD +3.8, RSLAD +1.0, AKD +0.8.
    "method": "ard",
    # The digits have 17 grey levels (0..16): 16/255 is about one level, the smallest change a pixel can show.
    "eps": 16 / 255,
    "steps": 5,
    "epochs": 10,
    "batch_size": 64,
    "lr": 0.1,
    "eval_examples": 200,
    "attacks": ["pgd20", "autoattack-fast"],
    # The teachers are the reference, not the product: PGD-20 only (an upper bound on their robust accuracy);
    # AutoAttack on them would double the quickstart's time.
    "teacher_attacks": ["pgd20"],
    # For methods whose teachers see clean images only through a plan (SA-MDRAD, MTARD's clean teacher), their
    # outputs are computed once before training (robustcompress.methods.teacher_outputs); others run them live.
    "teacher_outputs": "cached",
    "seed": 0,
}


#: Bumped when the baseline's training or evaluation changes, so a cached baseline from older code is not reused.
BASELINE_RECIPE = 1


def cached_baseline(s: dict[str, Any], data: Any, common: dict[str, Any], kw: dict[str, Any],
                    timings: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """The PGD-AT baseline's metrics and whether they came from the cache (its bundle is kept beside them).

    The baseline depends only on the student, the data and the training/evaluation settings, not on the method or
    the teachers, so it is cached like the teachers: a second quickstart (another method, another look) reuses it.
    """
    recipe = {"recipe": BASELINE_RECIPE, "student": s["student"], "data": data_fingerprint(data),
              "size": data.input_size, "torch": torch.__version__,
              **{k: s[k] for k in ("eps", "steps", "epochs", "batch_size", "lr", "seed", "attacks", "eval_examples")}}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / "quickstart" / f"baseline-{s['student']}-{digest}"
    metrics_file = folder / "evaluation.json"
    if is_bundle(folder) and metrics_file.is_file():
        timings["baseline"] = 0.0
        return json.loads(metrics_file.read_text()), True
    t0 = time.perf_counter()
    baseline = RobustCompressor([], s["student"], method="pgd-at", **common)
    baseline.fit(data)
    timings["baseline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = _metrics(evaluate(baseline.student, data.test, **kw))
    timings["evaluate_baseline"] = time.perf_counter() - t0
    baseline.save(folder)
    text = json.dumps(metrics, indent=2)
    atomic_write(metrics_file, lambda tmp: Path(tmp).write_text(text))  # last: a folder with it is complete
    return metrics, False


def _metrics(report: Any) -> dict[str, Any]:
    return {
        "clean_acc": report.clean_acc,
        "robust_acc": report.robust_acc,
        "worst_case_acc": report.worst_case_acc,
        "n_examples": report.n_examples,
    }


def run_quickstart(out_dir: str | Path = "quickstart_out", device: str = "auto", progress: bool = True,
                   **overrides: Any) -> dict[str, Any]:
    """Run the whole pipeline and write report.json, report.md, student.onnx and bundle/ into out_dir."""
    s = {**SETTINGS, **overrides}
    out = Path(out_dir)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    dev = resolve_device(device)
    data = load_data(s["dataset"], s["input_size"])

    t0 = time.perf_counter()
    teachers = [
        train_teacher(name, data, epochs=s["teacher_epochs"], lr=s["teacher_lr"], batch_size=s["batch_size"],
                      seed=s["seed"], device=dev, progress=progress)
        for name in s["teachers"]
    ]
    timings["teachers"] = time.perf_counter() - t0

    common = dict(eps=s["eps"], steps=s["steps"], epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                  seed=s["seed"], device=device, verify_attacks=(), progress=progress)
    t0 = time.perf_counter()
    method = create_method(s["method"])
    outputs = s["teacher_outputs"] if method.clean_teacher_plan(len(teachers)) is not None else "live"
    student = RobustCompressor(teachers, s["student"], method=s["method"], teacher_outputs=outputs, **common)
    student.fit(data)
    timings["distill"] = time.perf_counter() - t0
    kw = dict(attacks=s["attacks"], eps=s["eps"], n_examples=s["eval_examples"], device=dev, seed=s["seed"],
              progress=progress)
    baseline_metrics, baseline_cached = cached_baseline(s, data, common, kw, timings)

    t0 = time.perf_counter()
    to_evaluate = [("student", student.student), *((f"teacher {name}", t) for name, t in zip(s["teachers"], teachers))]
    reports = []
    # The longest phase (AutoAttack): one bar over the models, with the attack bars beneath it.
    bar = tqdm(to_evaluate, desc="evaluating", unit="model", disable=not progress)
    for label, model in bar:
        attacks = s["teacher_attacks"] if label.startswith("teacher") else s["attacks"]
        bar.set_postfix_str(f"{label}: {', '.join(attacks)} on {s['eval_examples']} images")
        reports.append(evaluate(model, data.test, **{**kw, "attacks": attacks}))
    student_report, *teacher_reports = reports
    timings["evaluate"] = time.perf_counter() - t0 + timings.pop("evaluate_baseline", 0.0)
    student.metrics = student_report.to_dict()

    t0 = time.perf_counter()
    if progress:
        print("exporting the student to ONNX and checking it on held-out images ...", file=sys.stderr, flush=True)
    student.save(out / "bundle")
    onnx_info = student.export_onnx(out / "student.onnx")
    timings["export"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    report = {
        "method": s["method"],
        "teachers": s["teachers"],
        "student": s["student"],
        "dataset": {"name": data.name, "input_size": data.input_size, "train_size": len(data.train),
                    "test_size": len(data.test), "eval_examples": student_report.n_examples},
        "eps": s["eps"],
        "norm": "Linf",
        "train": {k: s[k] for k in ("steps", "epochs", "batch_size", "lr", "teacher_epochs", "teacher_lr")},
        "teacher_outputs": outputs,
        "teacher_attacks": list(s["teacher_attacks"]),
        "device": str(dev),
        "torch": torch.__version__,
        "seed": s["seed"],
        "metrics": _metrics(student_report),
        "baseline": {"method": "pgd-at", **baseline_metrics, "cached": baseline_cached},
        "teachers_metrics": [{"name": n, **_metrics(r)} for n, r in zip(s["teachers"], teacher_reports)],
        "onnx": {"path": onnx_info["path"], "max_abs_diff": onnx_info["max_abs_diff"],
                 "argmax_agreement": onnx_info["argmax_agreement"]},
        "bundle": str(out / "bundle"),
        "timings_s": timings,
    }
    text = json.dumps(report, indent=2)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(text))
    markdown = render_markdown(report)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(markdown))
    return report


def table_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(f"teacher {t['name']} (standard)", t) for t in report["teachers_metrics"]]
    cached = ", cached" if report["baseline"].get("cached") else ""
    rows.append((f"baseline {report['student']} (pgd-at{cached})", report["baseline"]))
    rows.append((f"student {report['student']} ({report['method']})", report["metrics"]))
    return rows


def render_table(report: dict[str, Any]) -> str:
    """The plain-text table the quickstart prints."""
    attacks = list(report["metrics"]["robust_acc"])
    header = f"{'model':40s} {'clean':>7s} " + " ".join(f"{a:>15s}" for a in attacks) + f" {'worst':>7s}"
    lines = [header, "-" * len(header)]
    for name, m in table_rows(report):
        cells = " ".join(f"{m['robust_acc'][a]:15.3f}" if a in m["robust_acc"] else f"{'–':>15s}" for a in attacks)
        lines.append(f"{name:40s} {m['clean_acc']:7.3f} {cells} {m['worst_case_acc']:7.3f}")
    if any(set(m["robust_acc"]) != set(attacks) for _, m in table_rows(report)):
        lines.append("– not run on the teachers (the reference, not the product): their worst case is an upper bound")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    attacks = list(report["metrics"]["robust_acc"])
    lines = [
        "# robustcompress quickstart report",
        "",
        f"Dataset {report['dataset']['name']} ({report['dataset']['eval_examples']} test images, "
        f"{report['dataset']['input_size']}px), L-inf eps = {report['eps']:.4f} ({report['eps'] * 255:.0f}/255), "
        f"device {report['device']}, seed {report['seed']}.",
        "",
        "| model | clean | " + " | ".join(attacks) + " | worst case |",
        "|---|---|" + "---|" * len(attacks) + "---|",
    ]
    for name, m in table_rows(report):
        cells = " | ".join(f"{m['robust_acc'][a]:.3f}" if a in m["robust_acc"] else "–" for a in attacks)
        lines.append(f"| {name} | {m['clean_acc']:.3f} | {cells} | {m['worst_case_acc']:.3f} |")
    if any(set(m["robust_acc"]) != set(attacks) for _, m in table_rows(report)):
        lines += ["", "–: not run on the standard teachers, which are the reference rather than the product "
                      "(to keep the quickstart short); their worst case is an upper bound."]
    lines += [
        "",
        f"ONNX export: `{report['onnx']['path']}`, max |logit difference| vs PyTorch "
        f"{report['onnx']['max_abs_diff']:.2e}.",
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)
