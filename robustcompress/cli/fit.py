"""robustcompress fit: train a robust student and save a bundle."""
from __future__ import annotations

import argparse
import json
from dataclasses import Field, fields
from typing import Any, Callable

from robustcompress.cli.common import check_config_keys, read_config
from robustcompress.models.sources import PRETRAINED_ALIASES
from robustcompress.settings import CompressConfig, setting_names

DEFAULT_OUT = "runs/fit"
#: fit()'s own arguments a config file may set besides RobustCompressor's (and 'data').
FIT_KEYS = ("data", "resume", "force", "overwrite")
#: RobustCompressor's models, which are not settings (CompressConfig): given by --teachers and --student or as keys.
MODEL_KEYS = ("teachers", "student")


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
    p.add_argument("--student", help="timm name of the student (default resnet18)")
    p.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    for setting in fields(CompressConfig):
        add_setting_flag(p, setting)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (refused when "
                   "the method, student, steps, lr, selection, data or another setting differs from the checkpoint's)")
    p.add_argument("--force", action="store_true", help="with --resume: continue even though settings differ; the "
                   "changes are recorded in the bundle's history")
    p.add_argument("--overwrite", action="store_true", help="--out may hold an earlier run (bundle, checkpoints, "
                   "exports): remove its outputs and train a new one (without it such a folder is refused)")
    p.set_defaults(run=run)


def add_setting_flag(parser: argparse.ArgumentParser, setting: Field) -> None:
    """The flag of one CompressConfig field, from its metadata; unset, it leaves the config file's value (or the
    default) in place."""
    meta = setting.metadata
    flag = meta["flag"] or "--" + setting.name.replace("_", "-")
    options: dict[str, Any] = {"dest": setting.name, "default": None, "help": meta["help"], "metavar": meta["metavar"]}
    if meta["read"] == "switch":
        options.update(action=argparse.BooleanOptionalAction, metavar=None)
    elif meta["read"] == "key=value":  # read in run(), so a bad one is the one-line error every setting gives
        options.update(action="append")
    else:
        options.update(type=READERS[meta["read"]], choices=meta["choices"], nargs=meta["nargs"])
    parser.add_argument(flag, **{key: value for key, value in options.items() if value is not None})


def count_or_fraction(text: str) -> int | float:
    """argparse reader for --val-size: a whole count such as 1000, else a fraction such as 0.1."""
    try:
        return int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a count such as 1000 nor a fraction such as 0.1"
                                         ) from exc


def method_argument(item: str) -> tuple[str, Any]:
    """One --method-arg KEY=VALUE: VALUE as JSON when it looks like a number, true/false, a list or a mapping, else
    as text."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--method-arg '{item}' must look like KEY=VALUE")
    try:
        return key, json.loads(value) if value[:1] in "-0123456789[{tf" else value
    except json.JSONDecodeError as exc:
        raise ValueError(f"--method-arg '{item}': {value!r} is not a number, true/false, a JSON list or mapping "
                         f"({exc.msg}); e.g. --method-arg {key}=0.9") from exc


#: How each kind of flag text is read (robustcompress.settings.READS; "switch" and "key=value" are actions).
READERS: dict[str, Callable[[str], Any]] = {
    "text": str, "whole number": int, "number": float, "eps": str, "count or fraction": count_or_fraction,
}


def config_switch(cfg: dict, key: str, path: str | None) -> bool:
    """A true/false setting of fit() taken out of the config (false when absent)."""
    value = cfg.pop(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' in {path} must be true or false; got {value!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from robustcompress import RobustCompressor, list_methods
    from robustcompress.methods import create_method

    if args.list_methods:
        for name in list_methods():
            print(f"{name:12s} {create_method(name).summary}")
        return 0
    cfg = read_config(args.config)
    check_config_keys(cfg, args.config, [*MODEL_KEYS, *setting_names(), *FIT_KEYS])
    resume, force, overwrite = (getattr(args, key) or config_switch(cfg, key, args.config) for key in FIT_KEYS[1:])
    if force and not resume:
        raise ValueError("--force only applies to --resume; add --resume, or drop --force to start a fresh run")
    data = args.data or cfg.pop("data", None)
    cfg.pop("data", None)
    if data is None:
        raise ValueError("no data given; pass e.g. 'robustcompress fit digits' or set 'data' in --config")
    flags = {name: getattr(args, name) for name in (*MODEL_KEYS, *setting_names())}
    if flags["method_kwargs"] is not None:  # --method-arg adds to (or overrides) the config file's method_kwargs
        given = dict(method_argument(item) for item in flags["method_kwargs"])
        flags["method_kwargs"] = {**(cfg.get("method_kwargs") or {}), **given}
    cfg.update({k: v for k, v in flags.items() if v is not None})
    cfg["out_dir"] = cfg.get("out_dir") or DEFAULT_OUT
    rc = RobustCompressor(**cfg)  # every setting is checked here (CompressConfig), before data or teachers
    rc.fit(data, resume=resume, force=force, overwrite=overwrite)
    from robustcompress.runtime_env import is_main_process

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
