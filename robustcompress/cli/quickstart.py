"""robustcompress quickstart: the whole pipeline on the embedded digits data in about two minutes."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train teachers, distil a robust student, verify and export it (about a minute on a 2-core CPU)",
        description=(
            "Runs fit -> verify -> export on scikit-learn's handwritten digits: two standard teachers (cached), "
            "a distilled student, a PGD-AT baseline (in a second process on a CPU), PGD-20 and AutoAttack "
            "evaluation, and an ONNX export. "
            "Writes report.json, report.md, student.onnx and bundle/ to --out."
        ),
    )
    p.add_argument("--out", default="quickstart_out", help="output folder (default quickstart_out)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from robustcompress.quickstart import render_table, run_quickstart

    report = run_quickstart(args.out, device=args.device, progress=not args.no_progress)
    print(render_table(report))
    print(f"\nONNX parity: max |diff| {report['onnx']['max_abs_diff']:.2e}; total {report['timings_s']['total']:.0f} s")
    print(f"wrote {args.out}/report.json, report.md, student.onnx, bundle/")
    return 0
