"""robustcompress fit: train a robust student and save a bundle."""
from __future__ import annotations

import argparse
import json

from robustcompress.cli.common import (
    check_config_keys, eps_value, non_negative_float, non_negative_int, parse_eps, positive_float, positive_int,
    read_config,
)
from robustcompress.models.sources import PRETRAINED_ALIASES

DEFAULT_OUT = "runs/fit"
#: fit()'s own arguments a config file may set besides RobustCompressor's (and 'data').
FIT_KEYS = ("data", "resume", "force", "overwrite")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="distil a robust student from teachers and save a bundle",
        description=(
            "Train a student with an adversarial distillation method and save the bundle (weights, config, "
            "verification numbers) to --out. Command-line flags override values from --config."
        ),
    )
    p.add_argument("data", nargs="?", help="'digits', 'cifar10', 'cifar100', an image folder (class folders, or "
                   "train/ and test/ or val/ of them) or a path to an .npz file")
    p.add_argument("--config", help="YAML/JSON file with RobustCompressor arguments (and optionally 'data')")
    p.add_argument("--teachers", nargs="*", metavar="TEACHER",
                   help="timm names (trained on the data first), NAME=CHECKPOINT (.safetensors/.pt/.pth), "
                        "NAME:pretrained (timm weights from the Hugging Face cache), hf-hub:ORG/REPO, or an alias: "
                        + ", ".join(PRETRAINED_ALIASES))
    p.add_argument("--teacher-weights", nargs="+", type=non_negative_float, metavar="W",
                   help="one weight per teacher (at least 0; normalised to sum to 1), e.g. --teacher-weights 2 1")
    p.add_argument("--student", help="timm name of the student (default resnet18)")
    p.add_argument("--method", help="training method; see 'robustcompress fit --list-methods'")
    p.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    p.add_argument("--eps", type=eps_value, help="L-inf budget, e.g. 8/255")
    p.add_argument("--steps", type=positive_int, help="PGD steps of the training attack")
    p.add_argument("--step-size", type=eps_value, help="step of the training attack, e.g. 2/255 (default eps/4)")
    p.add_argument("--select", choices=["last", "best-robust"],
                   help="keep the last epoch (default) or the one with the best PGD-10 accuracy on a validation split "
                        "carved out of the training data (--val-size images)")
    p.add_argument("--val-size", type=positive_int, help="validation images for --select best-robust (default 1000)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--input-size", type=positive_int, help="resize images to this size")
    p.add_argument("--teacher-epochs", type=positive_int, help="epochs for teachers given by bare name")
    p.add_argument("--finetune-teachers", type=non_negative_int, metavar="N", dest="teacher_finetune_epochs",
                   help="fine-tune each pre-trained teacher on the data for up to N epochs first (clean training, "
                        "early-stopped on validation accuracy, cached); replaces a head with another class count")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="method hyperparameter, e.g. --method-arg alpha=0.9 (repeatable)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=int)
    p.add_argument("--speed", choices=["fast", "compile", "reference"],
                   help="fast (default: channels_last, with --precision auto), compile (fast + torch.compile) or "
                        "reference (fp32, NCHW, eager). Multi-GPU: torchrun --nproc_per_node N -m robustcompress fit ...")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="training precision of --speed fast: auto (default) is bf16 autocast on GPUs with bf16 and "
                        "fp32 on CPUs; bf16 forces it (1.4-2.5x faster on CPUs with AMX-BF16 or AVX512-BF16, but not "
                        "bit-reproducible there); evaluation always runs in fp32")
    p.add_argument("--teacher-outputs", choices=["live", "cached"],
                   help="live (default): teachers run on every batch; cached: teachers that see only clean images "
                        "(sa-mdrad's, mtard's clean one) run once over the training set, a cheaper setting")
    p.add_argument("--out", help=f"bundle directory (default: 'out_dir' in --config, else {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (refused when "
                   "the method, student, steps, lr, selection, data or another setting differs from the checkpoint's)")
    p.add_argument("--force", action="store_true", help="with --resume: continue even though settings differ; the "
                   "changes are recorded in the bundle's history")
    p.add_argument("--overwrite", action="store_true", help="--out may hold an earlier run (bundle, checkpoints, "
                   "exports): remove its outputs and train a new one (without it such a folder is refused)")
    p.set_defaults(run=run)


def config_switch(cfg: dict, key: str, path: str | None) -> bool:
    """A true/false setting of fit() taken out of the config (false when absent)."""
    value = cfg.pop(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' in {path} must be true or false; got {value!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import inspect

    from robustcompress import RobustCompressor, list_methods
    from robustcompress.methods import create_method

    if args.list_methods:
        for name in list_methods():
            print(f"{name:12s} {create_method(name).summary}")
        return 0
    cfg = read_config(args.config)
    check_config_keys(cfg, args.config, list(inspect.signature(RobustCompressor).parameters) + list(FIT_KEYS))
    resume, force, overwrite = (getattr(args, key) or config_switch(cfg, key, args.config) for key in FIT_KEYS[1:])
    if force and not resume:
        raise ValueError("--force only applies to --resume; add --resume, or drop --force to start a fresh run")
    for key in ("eps", "step_size"):  # budgets follow the --eps rule in config files too
        if cfg.get(key) is not None:
            cfg[key] = parse_eps(cfg[key], what=f"'{key}' in {args.config}")
    data = args.data or cfg.pop("data", None)
    cfg.pop("data", None)
    if data is None:
        raise ValueError("no data given; pass e.g. 'robustcompress fit digits' or set 'data' in --config")
    flags = {
        "teachers": args.teachers,  # NAME=CHECKPOINT as typed: the model factory (resolve_model) reads it
        "student": args.student, "method": args.method, "eps": args.eps, "steps": args.steps,
        "step_size": args.step_size, "select": args.select, "val_size": args.val_size,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "input_size": args.input_size,
        "teacher_epochs": args.teacher_epochs, "teacher_finetune_epochs": args.teacher_finetune_epochs,
        "teacher_weights": args.teacher_weights, "device": args.device, "seed": args.seed,
        "speed": args.speed, "precision": args.precision, "teacher_outputs": args.teacher_outputs,
    }
    cfg.update({k: v for k, v in flags.items() if v is not None})
    if args.method_arg:
        kwargs = dict(cfg.get("method_kwargs") or {})
        for item in args.method_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--method-arg '{item}' must look like KEY=VALUE")
            try:
                kwargs[key] = json.loads(value) if value[:1] in "-0123456789[{tf" else value
            except json.JSONDecodeError as exc:
                raise ValueError(f"--method-arg '{item}': {value!r} is not a number, true/false, a JSON list or "
                                 f"mapping ({exc.msg}); e.g. --method-arg {key}=0.9") from exc
        cfg["method_kwargs"] = kwargs
    cfg["out_dir"] = args.out or cfg.get("out_dir") or DEFAULT_OUT
    rc = RobustCompressor(**cfg)
    rc.fit(data, resume=resume, force=force, overwrite=overwrite)
    from robustcompress.trainer.distributed import is_main_process

    if not is_main_process():  # under torchrun rank 0 reports
        return 0
    from robustcompress.teachers import describe_teacher, finetune_summary

    for i, info in enumerate(rc.teachers_info):
        if "val_clean_before" in info:
            print(f"teacher {i} ({describe_teacher(rc.teacher_specs[i])}): {finetune_summary(info)}")
    m = rc.metrics
    if m:
        robust = ", ".join(f"{k} {v:.3f}" for k, v in m["robust_acc"].items())
        print(f"clean {m['clean_acc']:.3f}, {robust} on {m['n_examples']} test images")
    print(f"bundle saved to {rc.out_dir}")
    return 0
