"""Re-evaluate the committed CIFAR-10 bundles the way a user would, and compare with the table they came from.

    python benchmarks/reevaluate_bundles.py                       # clean + PGD-20 on the 8,000 test images, per bundle
    python benchmarks/reevaluate_bundles.py --autoattack 1000     # also AutoAttack (APGD-CE + APGD-T) on 1,000
    python benchmarks/reevaluate_bundles.py --methods pgd-at,akd

Each bundle under docs/results/cifar10_cpu/<method>/ is evaluated with the documented command,
``robustcompress evaluate BUNDLE ../shared/data/cifar10_jpg --attacks pgd20 --checks none --json ...`` (the bundle's
own eps and seed), and each number is compared with the table's seed-0 row of that method: it agrees when it lies
within one standard error, sqrt(p(1 - p) / n), of the table's number. Writes
docs/results/cifar10_cpu_reevaluation.{json,md}; the exit status is 1 when a number disagrees.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from repo_paths import REPO, shown_argv, shown_command_line  # a sibling module: benchmarks/ is on sys.path

RESULTS = REPO / "docs" / "results"
DATA = REPO.parent / "shared" / "data" / "cifar10_jpg"


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def compare(table: float, measured: float, n: int) -> dict[str, Any]:
    """The table's and the re-evaluated number, their difference and whether it is within one standard error."""
    se = standard_error(table, n)
    return {"table": table, "measured": measured, "n": n, "difference": measured - table, "se": se,
            "agrees": abs(measured - table) <= se + 1e-12}


def table_row(results: dict[str, Any], method: str) -> dict[str, Any] | None:
    """The seed-0 row of ``method`` under the protocol's own setting (no variant, the table's own teachers), if the
    table has one."""
    return next((r for r in results["rows"] if r["method"] == method and r["seed"] == 0 and r["status"] == "ok"
                 and not r.get("teachers_remade")), None)


def run_evaluate(bundle: Path, data: Path, attacks: Sequence[str], n_examples: int | None) -> dict[str, Any]:
    """``robustcompress evaluate`` as a user runs it, its JSON report read back."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = ["robustcompress", "evaluate", str(bundle), str(data), "--attacks", *attacks, "--checks", "none",
                   "--no-progress", *(["--n-examples", str(n_examples)] if n_examples is not None else [])]
        done = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return {"command": shown_argv(command), **json.loads(out.read_text())}  # the user's command: no temp --json


def reevaluate(method: str, row: dict[str, Any], bundle: Path, data: Path, autoattack: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = run_evaluate(bundle, data, ["pgd20"], row["n_test"])
    n = report["n_examples"]
    checks = {"clean": compare(row["clean"], report["clean_acc"], n),
              "pgd20": compare(row["attacks"]["pgd20"], report["robust_acc"]["pgd20"], n)}
    commands = [report["command"]]
    if autoattack:
        aa = run_evaluate(bundle, data, ["autoattack-fast"], autoattack)
        checks["autoattack"] = compare(row["autoattack"], aa["robust_acc"]["autoattack-fast"], aa["n_examples"])
        commands.append(aa["command"])
    return {"method": method, "bundle": str(bundle.relative_to(REPO)), "checks": checks, "commands": commands,
            "seconds": time.perf_counter() - t0, "agrees": all(c["agrees"] for c in checks.values())}


def render(results: dict[str, Any]) -> str:
    lines = ["# Committed CIFAR-10 bundles, re-evaluated", "",
             f"{results['date']}, {results['device']}. Each bundle in `docs/results/cifar10_cpu/` evaluated with "
             "`robustcompress evaluate` (its own eps and seed) and compared with its seed-0 row of "
             "`cifar10_cpu.md`: a number agrees when it lies within one standard error sqrt(p(1-p)/n) of the "
             "table's.", "",
             "| method | attack | table | re-evaluated | difference | 1 SE | images | agrees |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in results["bundles"]:
        for attack, c in entry["checks"].items():
            lines.append(f"| {entry['method']} | {attack} | {100 * c['table']:.2f} | {100 * c['measured']:.2f} | "
                         f"{100 * c['difference']:+.2f} | {100 * c['se']:.2f} | {c['n']} | "
                         f"{'yes' if c['agrees'] else 'NO'} |")
    lines += ["", "Commands:", ""] + [f"    {shown_command_line(c)}" for e in results["bundles"] for c in e["commands"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="", help="comma-separated (default: every committed bundle)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--table", type=Path, default=RESULTS / "cifar10_cpu.json")
    p.add_argument("--autoattack", type=int, default=0, metavar="N",
                   help="also AutoAttack (APGD-CE + APGD-T) on the first N test images (default: not run)")
    p.add_argument("--out", type=Path, default=RESULTS / "cifar10_cpu_reevaluation.json")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"no CIFAR-10 image folder at {args.data}; pass --data DIR (train/ and test/ class folders)")
    results_table = json.loads(args.table.read_text())
    folder = args.table.with_suffix("")
    wanted = [m for m in args.methods.split(",") if m] or sorted(d.name for d in folder.iterdir() if d.is_dir())
    old = json.loads(args.out.read_text()) if args.out.is_file() else {"bundles": []}
    entries = {e["method"]: e for e in old["bundles"]}
    for method in wanted:
        row = table_row(results_table, method)
        if row is None or not (folder / method).is_dir():
            raise SystemExit(f"{method}: needs both a seed-0 row in {args.table} and a bundle in {folder / method}")
        print(f"== {method}", flush=True)
        entries[method] = reevaluate(method, row, folder / method, args.data, args.autoattack)
        for attack, c in entries[method]["checks"].items():
            print(f"   {attack}: table {100 * c['table']:.2f}  re-evaluated {100 * c['measured']:.2f}  "
                  f"{'agrees' if c['agrees'] else 'DISAGREES'}", flush=True)
    from robustcompress.io import atomic_write

    results = {"date": datetime.date.today().isoformat(), "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
               "bundles": [entries[m] for m in sorted(entries)]}
    text, markdown = json.dumps(results, indent=2), render(results)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0 if all(e["agrees"] for e in results["bundles"]) else 1


if __name__ == "__main__":
    sys.exit(main())
