"""robustcompress export: write a bundle's student to ONNX (and INT8), verified on real images, with a report."""
from __future__ import annotations

import argparse

from robustcompress.cli.common import non_negative_int, parity_tolerance, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a bundle's student to ONNX (optionally INT8) with its verified numbers in the metadata",
        description=(
            "Export the student of a saved bundle to a self-contained .onnx file (input: [0, 1] NCHW float32 "
            "images, normalisation inside, dynamic batch), check on real images that onnxruntime reproduces the "
            "PyTorch logits, measure the file's clean and PGD robust accuracy, and write everything into the "
            "file's metadata and a <stem>.report.json beside it. Fails, writing nothing, if parity does not hold."
        ),
    )
    p.add_argument("bundle", help="folder written by 'robustcompress fit' or 'quickstart'")
    p.add_argument("--out", help="output .onnx path, or a folder to write student.onnx in (default "
                   "BUNDLE/student.onnx; INT8 goes to <stem>.int8.onnx)")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 model (onnxruntime static QDQ, per-channel, calibrated on training images)")
    p.add_argument("--data", help="labelled images for verification and calibration: 'digits', 'cifar10', an image "
                   "folder or an .npz (default: the bundle's own data, when it can be reloaded by name or path)")
    p.add_argument("--examples", type=positive_int, default=100, help="held-out images to verify on (default 100)")
    p.add_argument("--attack-steps", type=positive_int, default=10, help="PGD steps for the robust accuracy (default 10)")
    p.add_argument("--calibration-examples", type=positive_int, default=256, help="training images for INT8 calibration")
    p.add_argument("--tolerance", type=parity_tolerance, default=1e-4,
                   help="largest accepted |logit difference| (default 1e-4, at most 1e-2)")
    p.add_argument("--latency-runs", type=non_negative_int, default=20, help="batch-1 runs for the report's latency (0: skip)")
    p.set_defaults(run=run)


def format_summary(result: dict) -> str:
    """The lines printed after an export: files, parity, accuracies, size and latency."""
    report = result["report"]
    lines = []
    for key in ("fp32", "int8"):
        if key not in report:
            continue
        section = report[key]
        robust = ", ".join(f"{name} {acc:.3f}" for name, acc in section["robust_acc"].items())
        line = (f"{key}: {section['path']} ({section['size_bytes'] / 1e6:.2f} MB), clean {section['clean_acc']:.3f}, "
                f"robust {robust}")
        if key == "fp32":
            line += (f"; max |logit diff| vs PyTorch {section['parity']['max_abs_diff']:.2e}, "
                     f"arg-max agreement {section['parity']['argmax_agreement']:.3f}")
        else:
            transfer = ", ".join(f"{v:.3f}" for v in section["robust_acc_transfer"].values())
            twin = ", ".join(f"{v:.3f}" for v in section["robust_acc_twin"].values())
            line += (f" (transfer from fp32 {transfer}, attack on int8 twin {twin}); arg-max agreement with fp32 "
                     f"{section['argmax_agreement_with_fp32']:.3f}")
        if "latency_cpu" in section:
            line += f"; batch-1 p50 {section['latency_cpu']['batch1_p50_ms']:.2f} ms"
        lines.append(line)
    lines.append(f"report: {report['report_path']} ({report['data']['eval_examples']} {report['data'].get('name', '')} "
                 "test images)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustcompress import RobustCompressor

    rc = RobustCompressor.load(args.bundle, device="cpu")
    out = args.out or str(Path(args.bundle) / "student.onnx")
    result = rc.export_onnx(
        out, parity_data=args.data, n_parity=args.examples, int8=args.int8, attack_steps=args.attack_steps,
        calibration_examples=args.calibration_examples, tolerance=args.tolerance, latency_runs=args.latency_runs,
    )
    print(format_summary(result))
    return 0
