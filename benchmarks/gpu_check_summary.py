"""Summarise a benchmarks/gpu_check.sh run: step outcomes, merged throughput table, pytest counts, fit metrics.

    python benchmarks/gpu_check_summary.py OUT [--dry-run 0|1] [--data NAME] [--seconds N]

Reads OUT/versions.json, OUT/steps.tsv, OUT/throughput_{eager,compile}.json, OUT/pytest_gpu.xml and
OUT/fit/config.json (whatever exists: a step that failed or timed out leaves its part empty) and writes OUT/throughput.{json,md} and
OUT/summary.{json,md}. Exit status 0 when every step passed, else 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def read_versions(out: Path) -> dict[str, Any] | None:
    """Python, torch, timm, onnx and onnxruntime as gpu_check.sh found them, and what it installed from wheels."""
    path = out / "versions.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_steps(out: Path) -> list[dict[str, Any]]:
    steps = []
    path = out / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, rc, seconds, limit = line.split("\t")
        limit_s = float(limit)  # coreutils' timeout takes fractions of a second too
        steps.append({"name": name, "status": status, "rc": int(rc), "seconds": int(seconds),
                      "timeout_s": int(limit_s) if limit_s.is_integer() else limit_s, "log": f"logs/{name}.log"})
    return steps


def merge_throughput(out: Path) -> dict[str, Any] | None:
    """One result from the eager and compile runs: all rows, speed-ups of fast and compile over reference."""
    parts = [json.loads(p.read_text()) for p in (out / "throughput_eager.json", out / "throughput_compile.json")
             if p.is_file()]
    if not parts:
        return None
    rows = [row for part in parts for row in part["rows"]]
    reference = {r["student"]: r["images_per_s"] for r in rows if r["mode"] == "reference"}
    speedups = {f"{r['student']} {r['mode']}": r["images_per_s"] / reference[r["student"]]
                for r in rows if r["mode"] != "reference" and r["student"] in reference}
    merged = {**{k: v for k, v in parts[0].items() if k not in ("rows", "speedup_fast_vs_reference")},
              "commands": [part["command"] for part in parts], "rows": rows, "speedup_vs_reference": speedups,
              # False when a run was stopped by its timeout: its finished rows are kept, the rest are missing.
              "complete": all(part.get("complete", True) for part in parts)}
    merged.pop("command", None)
    from throughput_table import table  # a sibling module: benchmarks/ is on sys.path when this one runs

    text = table(rows)
    (out / "throughput.json").write_text(json.dumps(merged, indent=2))
    (out / "throughput.md").write_text(
        f"Device: {merged['device']}; torch {merged['torch']}; date {merged['date']}; seed 0 (synthetic data).\n\n"
        + "".join(f"Command: `{c}`\n\n" for c in merged["commands"]) + text + "\n")
    merged["table"] = text
    return merged


def pytest_counts(out: Path) -> dict[str, int] | None:
    path = out / "pytest_gpu.xml"
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def fit_result(out: Path) -> dict[str, Any] | None:
    if not (out / "fit" / "config.json").is_file():  # robustcompress.bundle.is_bundle, without importing torch
        return None  # the fit failed or timed out
    from robustcompress.bundle import read_bundle

    bundle = read_bundle(out / "fit")
    train = bundle.train_config
    return {"student": bundle.record["student"]["name"], "method": bundle.method, "data": bundle.get("data").get("name"),
            "epochs": train.epochs, "steps": train.steps, "batch_size": train.batch_size, "speed": train.speed,
            "metrics": bundle.get("metrics"), "timings_s": bundle.get("timings_s")}


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# GPU check{' (dry run on the CPU)' if summary['dry_run'] else ''}", "",
             f"{summary['seconds']} s in all; data for the fit: {summary['data']}; "
             f"{'all steps passed' if summary['passed'] else 'SOME STEPS FAILED'}.", ""]
    versions = summary.get("versions")
    if versions:
        installed = ", ".join(versions.get("installed_from_wheels") or []) or "nothing"
        lines += [f"Python {versions['python']}, torch {versions['torch']}, timm {versions['timm']}, "
                  f"onnx {versions['onnx']}, onnxruntime {versions['onnxruntime']}; installed from wheels: "
                  f"{installed}.", ""]
    lines += ["| step | status | seconds | timeout s | log |", "|---|---|---:|---:|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['timeout_s']} | {s['log']} |"
              for s in summary["steps"]]
    if summary.get("pytest_gpu"):
        c = summary["pytest_gpu"]
        lines += ["", f"pytest -m gpu: {c['tests']} tests, {c['failures']} failures, {c['errors']} errors, "
                      f"{c['skipped']} skipped."]
    if summary.get("throughput"):
        missing = "" if summary["throughput"]["complete"] else " (incomplete: a run hit its timeout)"
        lines += ["", f"## Training throughput{missing}", "", summary["throughput"]["table"]]
    fit = summary.get("fit")
    if fit:
        m = fit["metrics"] or {}
        robust = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("robust_acc") or {}).items())
        timings = ", ".join(f"{k} {v:.0f} s" for k, v in fit["timings_s"].items())
        lines += ["", "## Fit", "",
                  f"{fit['method']} {fit['student']} on {fit['data']}, {fit['epochs']} epochs, PGD-{fit['steps']}, "
                  f"batch {fit['batch_size']}, speed {fit['speed']}: clean {m.get('clean_acc', float('nan')):.3f}, "
                  f"{robust or 'no robust numbers'} on {m.get('n_examples', '?')} test images ({timings})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--data", default="")
    p.add_argument("--seconds", type=int, default=0)
    args = p.parse_args(argv)
    steps = read_steps(args.out)
    throughput = merge_throughput(args.out)
    summary = {"dry_run": bool(args.dry_run), "data": args.data, "seconds": args.seconds,
               "versions": read_versions(args.out), "steps": steps,
               "passed": bool(steps) and all(s["status"] == "ok" for s in steps),
               "pytest_gpu": pytest_counts(args.out), "throughput": throughput, "fit": fit_result(args.out)}
    text = markdown(summary)
    if throughput:
        throughput.pop("table")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
