"""A pre-trained teacher's clean accuracy on an image folder's test split before and after fine-tuning on it.

    robustcompress fit ../shared/data/cifar10_jpg --teachers cifar10_resnet18_autoattack --finetune-teachers 1 \\
        --student resnet10t_narrow --epochs 1 --steps 1 --eps 4/255 --step-size 5/255 --out runs/issue12
    python benchmarks/teacher_finetune.py runs/issue12 ../shared/data/cifar10_jpg   # -> docs/results/teacher_finetune.md

The "before" model is the bundle's teacher source loaded afresh (an alias or checkpoint the bundle names); the
"after" model is the fine-tuned teacher the bundle stored (teacher_0.safetensors).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from repo_paths import REPO, shown, shown_command  # a sibling module: benchmarks/ is on sys.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a bundle written by 'robustcompress fit ... --finetune-teachers N'")
    parser.add_argument("data", help="the image folder the bundle was trained on")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results", help="folder for teacher_finetune.*")
    args = parser.parse_args(argv)

    from robustcompress import RobustCompressor, load_data
    from robustcompress.models import resolve_model
    from robustcompress.verify import evaluate

    rc = RobustCompressor.load(args.bundle, device="cpu")
    data = load_data(args.data, rc.input_size, progress=False)
    rows = []
    for i, (name, info) in enumerate(zip(rc.teacher_specs, rc.teachers_info)):
        before = resolve_model(name, input_size=rc.input_size)
        after = rc.teachers[i]
        accuracy = {}
        for label, model in (("before", before), ("after", after)):
            report = evaluate(model, data.test, attacks=(), device="cpu")
            accuracy[label] = {"clean": report.clean_acc, "correct": report.correct["clean"], "n": report.n_examples}
        rows.append({"teacher": name, "test": accuracy, "validation_before": info.get("val_clean_before"),
                     "validation_after": info.get("val_clean_after"), "epochs": info.get("epochs"),
                     "kept_epoch": info.get("epoch"), "train_time_s": info.get("train_time_s"),
                     "val_images": info.get("val_images")})
    result = {"bundle": shown(args.bundle), "data": shown(args.data), "date": datetime.date.today().isoformat(),
              "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} torch threads)",
              "command": shown_command(["benchmarks/teacher_finetune.py", *sys.argv[1:]]),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher_finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Fine-tuning a pre-trained teacher on the user's images", "",
             "Clean accuracy of each pre-trained teacher on the data's test split, as shipped and after "
             "`--finetune-teachers` (clean training at lr 0.01, early-stopped on a validation split carved out of "
             "the training images; the starting weights compete too).", "",
             "| teacher | test: before | test: after | validation: before | validation: after | epochs (kept) | "
             "fine-tuning time (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["test"]
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines.append(f"| {r['teacher']} | {pct(t['before']['clean'])} ({t['before']['correct']}/{t['before']['n']}) "
                     f"| {pct(t['after']['clean'])} ({t['after']['correct']}/{t['after']['n']}) | "
                     f"{pct(r['validation_before'])} | {pct(r['validation_after'])} | {r['epochs']} "
                     f"({r['kept_epoch']}) | {r['train_time_s'] or 0:.0f} |")
    lines += ["", f"Data: `{result['data']}` (test split, {rows[0]['test']['before']['n'] if rows else 0} images); "
              f"validation: {rows[0]['val_images'] if rows else '–'} training images. Device: {result['device']}; "
              f"{result['date']}.", "", "Commands:", "",
              "    robustcompress fit ../shared/data/cifar10_jpg --teachers cifar10_resnet18_autoattack "
              "--finetune-teachers 1 --student resnet10t_narrow --epochs 1 --steps 1 --eps 4/255 --step-size 5/255 "
              "--out runs/issue12",
              f"    {result['command']}", ""]
    (args.out / "teacher_finetune.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
