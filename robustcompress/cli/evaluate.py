"""robustcompress evaluate: verify a saved model's robustness, write the reports, and gate a release on them."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

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
                            parity check. Without a twin only clean accuracy and black-box attacks (square) run.

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


class OnnxClassifier(nn.Module):
    """An exported .onnx classifier behind the nn.Module interface: forward only (no gradients), onnxruntime on CPU."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        from robustcompress.export.onnx import onnx_session

        self.path = str(path)
        self.name = Path(path).name
        self.session = onnx_session(self.path)
        self.batch_size = 256  # 1 for a graph fixed to batch 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from robustcompress.export.onnx import onnx_logits

        logits = onnx_logits(self.path, x.detach().cpu().float().numpy(), self.session, self.batch_size)
        return torch.from_numpy(logits).to(x.device)


@dataclass
class Target:
    """The model to verify, how it is attacked, and what to compare it with."""

    model: nn.Module
    info: dict[str, Any]
    scorer: nn.Module | None = None
    white_box: bool = True
    eps: float | None = None
    seed: int | None = None
    references: dict[str, nn.Module] = field(default_factory=dict)


def _timm_spec(spec: str, checkpoint: str | None) -> tuple[str, str] | None:
    name, sep, path = spec.partition("=")
    if sep:
        return name, path
    if checkpoint:
        return spec, checkpoint
    return None


def _bundle_input_size(path: Path) -> int:
    config = json.loads((path / "config.json").read_text())
    return int(config["student"]["input_size"])


def _find_twin(onnx_path: Path, bundle: str | None) -> Path | None:
    if bundle:
        if not (Path(bundle) / "config.json").is_file():
            raise FileNotFoundError(f"--bundle {bundle} is not a robustcompress bundle (no config.json)")
        return Path(bundle)
    for folder in (onnx_path.parent, onnx_path.parent / "bundle"):
        if (folder / "config.json").is_file():
            return folder
    return None


def _input_size(args: argparse.Namespace) -> int | None:
    """The image size the model expects, known before the data is loaded (None: the data's own size)."""
    path = Path(args.model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but not a robustcompress bundle (no config.json)")
        return _bundle_input_size(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        from robustcompress.export.onnx import graph_input_size, read_metadata

        size = read_metadata(path).get("input_size")
        if size is None:
            twin = _find_twin(path, args.bundle)
            size = _bundle_input_size(twin) if twin else args.input_size
        if size is None:  # a foreign file: the size its graph fixes, if any
            size = graph_input_size(path)
        return int(size) if size is not None else None
    return args.input_size


def _load_pytorch(
    spec: str, checkpoint: str | None, data: Any, device: torch.device, role: str
) -> tuple[nn.Module, Any]:
    """A bundle folder's RobustCompressor (or None) and its student, or a timm NAME=CHECKPOINT model."""
    from robustcompress import RobustCompressor
    from robustcompress.models import create_model
    from robustcompress.models.sources import is_pretrained_source, load_pretrained

    if Path(spec).is_dir():
        rc = RobustCompressor.load(spec, device=str(device))
        return rc._require_student(), rc
    timm = _timm_spec(spec, checkpoint)
    if timm is None and is_pretrained_source(spec):
        model = create_model(load_pretrained(spec, data.input_size), data.num_classes, data.input_size, data.channels,
                             role=role)
        return model.to(device).eval(), None
    if timm is None:
        raise ValueError(
            f"{role} '{spec}' is neither a bundle folder, an .onnx file nor NAME=CHECKPOINT; a bare timm name has "
            f"no trained weights, so pass e.g. '{spec}=weights.safetensors' or --checkpoint"
        )
    model = create_model(timm, data.num_classes, data.input_size, data.channels, role=role)
    return model.to(device).eval(), None


def load_target(args: argparse.Namespace, data: Any, device: torch.device) -> Target:
    """Resolve MODEL into the model to attack, the model that judges, references and defaults."""
    path = Path(args.model)
    if path.suffix == ".onnx":
        from robustcompress import RobustCompressor
        from robustcompress.export.onnx import (
            check_classifier_signature, check_parity, is_robustcompress_export, read_metadata,
        )
        from robustcompress.verify.evaluate import take_examples

        onnx_model = OnnxClassifier(path)
        meta = read_metadata(path)
        fixed_batch = check_classifier_signature(onnx_model.session, path, data.input_size, data.channels)
        onnx_model.batch_size = fixed_batch or onnx_model.batch_size
        twin_dir = _find_twin(path, args.bundle)
        info = {"name": meta.get("student", path.stem), "label": f"onnx ({path.name})", "source": "onnx",
                "path": str(path), "method": meta.get("method")}
        if not is_robustcompress_export(meta):
            info["note"] = (f"{path.name} has no robustcompress metadata (it was not written by 'robustcompress "
                            "export'): assumed to take [0, 1] NCHW images with any normalisation inside; if it "
                            "expects normalised inputs, these accuracies are wrong")
            print(f"note: {info['note']}", file=sys.stderr)
        if twin_dir is None:
            info["attacked_via"] = "black-box only (no PyTorch twin found; pass --bundle to add white-box attacks)"
            return Target(onnx_model, info, None, white_box=False, eps=meta.get("eps"))
        rc = RobustCompressor.load(twin_dir, device=str(device))
        twin = rc._require_student()
        x, _ = take_examples(data.test if data.test is not None else data.train, 64)
        parity = check_parity(twin, path, x)  # raises ParityError when the file is not this bundle's student
        info.update(attacked_via=f"white-box attacks crafted on the PyTorch twin in {twin_dir}, judged by onnxruntime",
                    twin=str(twin_dir), twin_max_abs_logit_diff=parity["max_abs_diff"])
        return Target(twin.to(device), info, onnx_model, True, rc.config.eps, rc.config.seed,
                      _teachers(rc, args.no_teachers))
    model, rc = _load_pytorch(args.model, args.checkpoint, data, device, "MODEL")
    if rc is not None:
        info = {"name": model.name, "label": f"student ({model.name})", "source": "bundle", "path": str(path),
                "method": rc.method_name}
        return Target(model, info, eps=rc.config.eps, seed=rc.config.seed, references=_teachers(rc, args.no_teachers))
    spec = _timm_spec(args.model, args.checkpoint)
    checkpoint = spec[1] if spec is not None else args.model  # None: a pre-trained source such as an alias
    return Target(model, {"name": model.name, "label": model.name, "source": "timm", "checkpoint": checkpoint})


def _teachers(rc: Any, skip: bool) -> dict[str, nn.Module]:
    if skip:
        return {}
    names = rc.teacher_specs or [t.name for t in rc.teachers]
    return {f"teacher {i} ({names[i] if i < len(names) else t.name})": t for i, t in enumerate(rc.teachers)}


def _check_settings(level: str, items: list[str]) -> Any:
    from dataclasses import fields

    from robustcompress.verify import CheckSettings

    known = {f.name: f.type for f in fields(CheckSettings) if f.name != "level"}
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--check-arg '{item}' must be KEY=VALUE with KEY one of {', '.join(known)}")
        if key == "base_attack":
            values[key] = value
        elif key == "sweep_factors":
            values[key] = tuple(float(v) for v in value.split(","))
        else:
            number = float(value)
            values[key] = int(number) if key in ("square_queries", "strong_steps", "restarts") else number
    return CheckSettings(level=level, **values)


def _print_summary(result: Any) -> None:
    report = result.report
    model = result.model
    print(f"{model.get('label', model.get('name'))}: {report.n_examples} images of {result.data.get('name')}, "
          f"{report.norm} eps {report.eps:.4f} ({report.eps * 255:.3g}/255), device {report.device}")
    if model.get("attacked_via"):
        print(f"attacks: {model['attacked_via']}")
    print(f"  {'clean':16s} {report.clean_acc:.4f}")
    for name, acc in report.robust_acc.items():
        print(f"  {name:16s} {acc:.4f}   ({report.timings_s.get(name, 0):.1f} s)")
    print(f"  {'worst-case':16s} {report.worst_case_acc:.4f}   (per sample, over every attack above)")
    if result.checks:
        counts = {s: sum(c.status == s for c in result.checks) for s in ("pass", "warn", "skip")}
        print(f"sanity checks: {counts['pass']} pass, {counts['warn']} warn, {counts['skip']} skip")
        for check in result.checks:
            if check.status == "warn":
                print(f"  WARN {check.name}: {check.message}")


def run(args: argparse.Namespace) -> int:
    from robustcompress.data import load_data
    from robustcompress.io import atomic_write, check_writable
    from robustcompress.trainer.loop import resolve_device
    from robustcompress.verify import format_gate, verify_model, write_report
    from robustcompress.verify.gate import check_requirements_measurable, parse_requirement
    from robustcompress.attacks.registry import resolve_attacks

    # Cheap argument errors first, before any model or data is loaded.
    requirements = [parse_requirement(r) for r in args.require]
    preset = args.preset
    settings = _check_settings(args.checks, args.check_arg)
    if args.out:  # a read-only --out fails now, not after the attacks
        check_writable(args.out, "--out folder")
    if args.json:
        check_writable(Path(args.json).parent, "--json folder")
    device = resolve_device(args.device)
    data = load_data(args.data, _input_size(args))
    dataset = data.test if data.test is not None else data.train
    target = load_target(args, data, device)
    if args.attacks is None and preset is None:
        preset = "fast" if target.white_box else None
    attacks = args.attacks if args.attacks is not None or preset is not None else ["square"]
    check_requirements_measurable(requirements, resolve_attacks(attacks, preset))

    references = dict(target.references)
    if args.baseline:
        baseline, _ = _load_pytorch(args.baseline, None, data, device, "--baseline")
        references[f"baseline ({getattr(baseline, 'name', args.baseline)})"] = baseline
    transfer = None
    if args.transfer_from:
        transfer = {spec: _load_pytorch(spec, None, data, device, "--transfer-from")[0] for spec in args.transfer_from}
    out = Path(args.out) if args.out else None
    state_dir = out / "autoattack_state" if out is not None else None
    if state_dir is not None and args.no_resume and state_dir.is_dir():
        for stale in state_dir.glob("*.json"):
            stale.unlink()
    eps = args.eps if args.eps is not None else (target.eps if target.eps is not None else 8 / 255)
    seed = args.seed if args.seed is not None else (target.seed if target.seed is not None else 0)
    sweep: Any = None if args.eps_sweep is None else (args.eps_sweep or True)
    result = verify_model(
        target.model, dataset, attacks, preset, eps=eps, n_examples=args.n_examples, batch_size=args.batch_size,
        device=device, seed=seed, checks=settings, eps_sweep=sweep, sweep_attack=args.sweep_attack,
        references=references, transfer_from=transfer, scorer=target.scorer, white_box=target.white_box,
        state_dir=state_dir, model_info=target.info, data_info={"name": data.name, "split": "test"},
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    gated = bool(requirements) or args.strict
    if gated:
        result.apply_gate([r.text for r in requirements], fail_on_check_warnings=True)
    result.invocation = {k: v for k, v in vars(args).items() if k != "run"}
    _print_summary(result)
    if out is not None:
        paths = write_report(result, out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.json:
        text = json.dumps(result.to_dict(), indent=2, default=str)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    if gated:
        message = format_gate(result.gate)
        print(message, file=sys.stdout if result.gate_passed else sys.stderr)
        return 0 if result.gate_passed else GATE_FAILED
    return 0
