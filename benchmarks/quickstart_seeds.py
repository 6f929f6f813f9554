"""The quickstart over several seeds: does its distilled student at least tie its PGD-AT baseline?

    python benchmarks/quickstart_seeds.py                                   # seeds 0,1,2 of the quickstart as shipped
    python benchmarks/quickstart_seeds.py --methods sa-mdrad,akd --seeds 0,1,2 --out runs/qs_methods

Each seed runs ``robustcompress.quickstart.run_quickstart`` (teachers, distilled student, baseline, PGD-20 +
AutoAttack on the held-out digits, ONNX export) with that seed; with ``--methods`` the distillation is repeated
for each method against the same teachers and baseline. Writes ``quickstart_seeds.{json,md}`` with one row per
seed, the mean difference student − baseline under AutoAttack (and worst case) with a paired 95% t interval over
the seeds, the verdict (win / tie / loss), and the time of each run in units of ../shared/tools/calibrate.py.
Rows merge across runs of the same settings, so seeds can be added later.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from repo_paths import shown_command  # benchmarks/ is on sys.path when this file runs as a script
from table_protocol import calibration_unit, verdict_word
from table_report import ci95

REPO = Path(__file__).resolve().parents[1]


def paired_interval(differences: Sequence[float]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the paired differences with a 95% t interval; None with fewer than two seeds."""
    interval = ci95(differences)
    if interval is None:
        return None
    mean, half = interval
    return mean, mean - half, mean + half


def verdict(interval: tuple[float, float, float] | None) -> str:
    if interval is None:
        return "not yet (needs two seeds)"
    _, low, high = interval
    return verdict_word(low, high)


def robust_of(metrics: dict[str, Any]) -> float:
    """The AutoAttack number when the run had AutoAttack, otherwise the worst case over its attacks."""
    attacks = metrics["robust_acc"]
    return next((v for k, v in attacks.items() if k.startswith("autoattack")), metrics["worst_case_acc"])


def run_seed(seed: int, method: str, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from robustcompress.quickstart import run_quickstart

    unit = calibration_unit()
    t0 = time.perf_counter()
    report = run_quickstart(out / f"{method}-seed{seed}", device="cpu", progress=False, seed=seed, method=method,
                            **overrides)
    wall = time.perf_counter() - t0
    return {
        "method": method, "seed": seed, "student": report["metrics"], "baseline": report["baseline"],
        "student_robust": robust_of(report["metrics"]), "baseline_robust": robust_of(report["baseline"]),
        "timings_s": report["timings_s"], "wall_s": wall, "unit_s": unit,
        "units": None if not unit else wall / unit, "date": datetime.date.today().isoformat(),
    }


def parse_overrides(items: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """KEY=JSON pairs (a bare word is taken as a string) for keys the quickstart has; others are refused."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in settings:
            raise SystemExit(f"--set {item!r}: use KEY=VALUE with KEY one of {sorted(settings)}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def render(results: dict[str, Any]) -> str:
    lines = ["# The quickstart over seeds: distilled student vs PGD-AT baseline", "",
             f"Command: `{results['command']}`", "",
             "Each seed is a whole quickstart run (teachers, student, baseline, evaluation on "
             f"{results['rows'][0]['student']['n_examples'] if results['rows'] else '?'} held-out digits, export) on "
             "this CPU. Robust accuracy is AutoAttack's (APGD-CE + APGD-T); the difference is student − baseline, "
             "with a paired 95% t interval over the seeds (the same seed gives both models the same data order and "
             "evaluation images). Run time: a fresh run for the first method of a seed; later methods of the same "
             "seed reuse its cached teachers and baseline.", "",
             "| method | seed | student clean | student AutoAttack | baseline clean | baseline AutoAttack | "
             "difference | run time (s) | units |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        units = "–" if r["units"] is None else f"{r['units']:.0f}"
        lines.append(f"| {r['method']} | {r['seed']} | {100 * r['student']['clean_acc']:.1f} | "
                     f"{100 * r['student_robust']:.1f} | {100 * r['baseline']['clean_acc']:.1f} | "
                     f"{100 * r['baseline_robust']:.1f} | {100 * (r['student_robust'] - r['baseline_robust']):+.1f} | "
                     f"{r['wall_s']:.0f} | {units} |")
    lines += ["", "| method | seeds | mean difference [95% interval] | verdict |", "|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["method"] == method]
        interval = paired_interval([r["student_robust"] - r["baseline_robust"] for r in rows])
        cell = "–" if interval is None else (f"{100 * interval[0]:+.1f} [{100 * interval[1]:+.1f}, "
                                             f"{100 * interval[2]:+.1f}]")
        lines.append(f"| {method} | {', '.join(str(r['seed']) for r in rows)} | {cell} | {verdict(interval)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from robustcompress.quickstart import SETTINGS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=SETTINGS["method"], help="comma-separated (default: the quickstart's)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "quickstart_seeds")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON",
                   help="change a quickstart setting for this run, e.g. --set input_size=8 --set "
                        "'teachers=[\"regnetx_002\", \"resnet10t\"]' (repeatable; the table keys on the settings)")
    args = p.parse_args(argv)
    from robustcompress.io import atomic_write

    overrides = parse_overrides(args.overrides, SETTINGS)
    path = args.out / "quickstart_seeds.json"
    settings = {k: v for k, v in {**SETTINGS, **overrides}.items() if k not in ("method", "seed")}
    old = json.loads(path.read_text()) if path.is_file() else {}
    rows = {(r["method"], r["seed"]): r for r in old.get("rows", [])} if old.get("settings") == settings else {}
    for method in [m for m in args.methods.split(",") if m]:
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            print(f"== {method} seed {seed}", flush=True)
            row = run_seed(seed, method, args.work, overrides)
            rows[(method, seed)] = row
            print(f"   student {100 * row['student_robust']:.1f}  baseline {100 * row['baseline_robust']:.1f}  "
                  f"{row['wall_s']:.0f} s", flush=True)
            results = {"settings": settings, "command": shown_command(
                           ["benchmarks/quickstart_seeds.py", *(sys.argv[1:] if argv is None else argv)]),
                       "rows": sorted(rows.values(), key=lambda r: (r["method"], r["seed"]))}
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
            text = render(results)
            atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
