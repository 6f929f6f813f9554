"""robustcompress evaluate: verify a saved model's robustness, write the reports, and gate a release on them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robustcompress.cli.common import eps_value, positive_int

GATE_FAILED = 1

EPILOG = """\
MODEL is one of
  a bundle folder           written by 'robustcompress fit' / 'quickstart' (student; teachers join the plot)
  NAME=CHECKPOINT           a timm architecture and its weights (.safetensors or a state-dict .pt)
  NAME --checkpoint PATH    the same, spelled differently
  NAME:pretrained           timm's pre-trained weights from the Hugging Face cache (also hf-hub:ORG/REPO), or an
                            alias such as cifar10_resnet18_autoattack
  FILE.onnx                 an exported model. White-box attacks are crafted on its PyTorch twin (the bundle it was
                            exported from: --bundle, or found next to the file) and judged by onnxruntime, after a
                            parity check (an INT8 export: within twice the logit difference its export
                            recorded; the twin's attacks are then transfer attacks). Without a twin only clean
                            accuracy and black-box attacks (square) run.

exit status: 0 verified (and the gate passed), 1 the gate failed, 2 usage or input error.

examples:
  robustcompress evaluate runs/fit digits --preset standard --eps-sweep --out runs/fit/verify
  robustcompress evaluate runs/fit cifar10 --preset standard --require "autoattack>=0.45" --require "clean>=0.80"
  robustcompress evaluate student.onnx digits --bundle runs/fit --attacks pgd20 autoattack-fast
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="verify robustness: attack suite, worst case, masking checks, reports and a release gate",
        description=(
            "Attack a model with a suite (FGSM, PGD-20, CW-30, AutoAttack), report per-attack and per-sample "
            "worst-case accuracy, run gradient-masking sanity checks, optionally sweep eps, write report.json / "
            "report.md / accuracy_vs_eps.png, and exit non-zero when a --require is not met or a check warns."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="bundle folder, NAME=CHECKPOINT, NAME (with --checkpoint) or .onnx")
    p.add_argument("data", metavar="DATA",
                   help="'digits', 'cifar10', 'cifar100', an image folder or an .npz path; its test split is used")
    p.add_argument("--checkpoint", help="weights for a timm NAME given as MODEL")
    p.add_argument("--input-size", type=positive_int, help="image size for a timm NAME (default: the data's own size)")
    p.add_argument("--bundle", help="for an .onnx MODEL: the bundle it was exported from (its PyTorch twin)")
    p.add_argument("--attacks", nargs="+", help="attack names, e.g. fgsm pgd20 cw30 autoattack square; "
                   "pgdN, pgdNxR (R restarts), cwN and squareQ work for any N, R, Q")
    p.add_argument("--preset", choices=("fast", "standard"),
                   help="fast: fgsm pgd20 cw30 autoattack-fast; standard: fgsm pgd20 cw30 autoattack "
                        "(default: fast when --attacks is not given)")
    p.add_argument("--eps", type=eps_value, help="L-inf budget, e.g. 8/255 (default: the bundle's, else 8/255)")
    p.add_argument("--n-examples", type=positive_int, help="evaluate the first N test images (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per attack batch (default 256)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=int, help="attack seed (default: the bundle's seed, else 0)")
    p.add_argument("--eps-sweep", nargs="*", type=eps_value, metavar="EPS",
                   help="also measure accuracy vs eps (default values 0 1/255 2/255 4/255 8/255 16/255) and plot it")
    p.add_argument("--sweep-attack", help="attack for the sweep (default pgd20; square1000 for a black-box model)")
    p.add_argument("--checks", choices=("full", "quick", "none"), default="full",
                   help="gradient-masking sanity checks: full (default), quick (no extra attacks) or none")
    p.add_argument("--check-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="check setting, e.g. square_queries=5000, strong_steps=200, restarts=10, large_eps=0.5, "
                        "tolerance=0.02 (repeatable; see docs/verification.md)")
    p.add_argument("--transfer-from", action="append", default=[], metavar="MODEL",
                   help="bundle folder or NAME=CHECKPOINT to craft transfer attacks on (default: the teachers)")
    p.add_argument("--baseline", metavar="MODEL", help="bundle folder or NAME=CHECKPOINT drawn in the eps plot")
    p.add_argument("--no-teachers", action="store_true", help="leave a bundle's teachers out of plot and transfer")
    p.add_argument("--require", action="append", default=[], metavar="METRIC>=VALUE",
                   help="gate condition, e.g. 'autoattack>=0.45', 'clean>=0.80', 'worst_case>=0.4' (repeatable); "
                        "the gate also fails when a sanity check warns")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) when a sanity check warns, even without "
                   "--require")
    p.add_argument("--out", help="write report.json, report.md and accuracy_vs_eps.png here; AutoAttack progress "
                   "is kept in OUT/autoattack_state so a rerun resumes an interrupted evaluation")
    p.add_argument("--no-resume", action="store_true", help="ignore AutoAttack progress saved in --out")
    p.add_argument("--json", help="also write the report JSON to this path")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from robustcompress.attacks.registry import resolve_attacks
    from robustcompress.data import load_data
    from robustcompress.io import check_writable, write_json
    from robustcompress.targets import load_pytorch, load_target, model_input_size
    from robustcompress.runtime_env import resolve_device
    from robustcompress.verify import CheckSettings, format_gate, verify_model, write_report
    from robustcompress.verify.gate import check_requirements_measurable, parse_requirement
    from robustcompress.verify.report import format_summary
    from robustcompress.verify.runner import autoattack_state_dir

    # Cheap argument errors first, before any model or data is loaded.
    requirements = [parse_requirement(r) for r in args.require]
    settings = CheckSettings.from_items(args.checks, args.check_arg)
    if args.out:  # a read-only --out fails now, not after the attacks
        check_writable(args.out, "--out folder")
    if args.json:
        check_writable(Path(args.json).parent, "--json folder")
    device = resolve_device(args.device)
    data = load_data(args.data, model_input_size(args.model, args.bundle, args.input_size))
    target = load_target(args.model, data, device, checkpoint=args.checkpoint, bundle=args.bundle,
                         teachers=not args.no_teachers)
    if target.info.get("note"):
        print(f"note: {target.info['note']}", file=sys.stderr)
    preset = args.preset
    if args.attacks is None and preset is None:  # the fast preset, or black-box Square for an .onnx without twin
        preset = "fast" if target.white_box else None
    attacks = args.attacks if args.attacks is not None or preset is not None else ["square"]
    check_requirements_measurable(requirements, resolve_attacks(attacks, preset))
    references = dict(target.references)
    if args.baseline:
        baseline, _ = load_pytorch(args.baseline, data, device, "--baseline")
        references[f"baseline ({getattr(baseline, 'name', args.baseline)})"] = baseline
    transfer = {spec: load_pytorch(spec, data, device, "--transfer-from")[0] for spec in args.transfer_from} or None
    result = verify_model(
        target.model, data.test if data.test is not None else data.train, attacks, preset,
        eps=target.eps if args.eps is None else args.eps, n_examples=args.n_examples, batch_size=args.batch_size,
        device=device, seed=target.seed if args.seed is None else args.seed, checks=settings,
        eps_sweep=None if args.eps_sweep is None else (args.eps_sweep or True), sweep_attack=args.sweep_attack,
        references=references, transfer_from=transfer, scorer=target.scorer, white_box=target.white_box,
        state_dir=autoattack_state_dir(args.out, resume=not args.no_resume), model_info=target.info,
        data_info={"name": data.name, "split": "test"}, progress=not args.no_progress and sys.stderr.isatty(),
    )
    gated = bool(requirements) or args.strict
    if gated:
        result.apply_gate([r.text for r in requirements], fail_on_check_warnings=True)
    result.invocation = {k: v for k, v in vars(args).items() if k != "run"}
    print(format_summary(result))
    if args.out:
        paths = write_report(result, args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.json:
        write_json(args.json, result.to_dict(), default=str)
    if gated:
        message = format_gate(result.gate)
        print(message, file=sys.stdout if result.gate_passed else sys.stderr)
        return 0 if result.gate_passed else GATE_FAILED
    return 0
