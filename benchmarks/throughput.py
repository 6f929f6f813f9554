"""Training throughput of one adversarial-distillation step, reference mode vs fast mode, and its efficiency.

    python benchmarks/throughput.py --smoke                          # tiny CPU run (< 1 min), writes JSON
    python benchmarks/throughput.py --preset gpu --json docs/results/throughput.json --markdown docs/results/throughput_gpu.md
    python benchmarks/throughput.py --students resnet18 --teachers resnet50 --method ard --batch-size 256 --steps 10

For each student and each mode ("reference": fp32, NCHW, eager, data copied per batch; "fast": bf16 autocast,
channels_last, GPU-resident data; "compile": fast + torch.compile) it times the trainer's own TrainStep (augmentation,
K-step PGD, teacher forwards, loss, backward, SGD step) on synthetic images, and, in the same run and mode, one
student forward+backward and the teachers' forwards in isolation. Then

    ideal      = (K + 1) * t(student forward+backward) + t(teachers' forwards)
    efficiency = ideal / t(measured step)

i.e. how close the step gets to the sum of its unavoidable parts (an attack step's backward skips the weight
gradients, so efficiency can exceed 1). Images/s depend on shapes, not pixel values, so random images suffice.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from robustcompress.methods import create_method
from robustcompress.methods.common import teacher_logits
from robustcompress.methods.teacher_outputs import CleanTeacherOutputs
from robustcompress.models import build_model
from robustcompress.process_exit import exit_process
from robustcompress.trainer import TrainConfig
from robustcompress.trainer.cpu import cpu_info
from robustcompress.trainer.fast import plan_speed, speed_context, to_memory_format
from robustcompress.runtime_env import resolve_device
from robustcompress.trainer.loop import TrainStep
from repo_paths import shown_command  # sibling modules: benchmarks/ is on sys.path
from throughput_table import group_key, run_key, table

PRESETS: dict[str, dict[str, Any]] = {
    # Issue 7's setting: MobileNetV2- and ResNet-18-class students, a ResNet-50 teacher, CIFAR-size images,
    # batch 256, PGD-10.
    "gpu": {"students": ["mobilenetv2_100", "resnet18"], "teachers": ["resnet50"], "method": "ard",
            "batch_size": 256, "steps": 10, "input_size": 32, "iters": 20, "warmup": 5},
    # The CPU-scale CIFAR-10 protocol of benchmarks/cifar10_table.py (defined in table_protocol.py): its student,
    # its teachers and every method, each method with the teachers it gets there, PGD-1 at batch 128 (the per-step
    # cost behind the 3x rule).
    "cpu-scale": {"students": ["resnet10t_narrow"], "method": "all", "batch_size": 128, "steps": 1,
                  "input_size": 32, "iters": 8, "warmup": 2, "device": "cpu"},
    # Small enough for CI on a CPU.
    "smoke": {"students": ["lcnet_050"], "teachers": ["lcnet_050"], "method": "ard", "batch_size": 8, "steps": 2,
              "input_size": 16, "iters": 1, "warmup": 1, "device": "cpu"},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call, GPU work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def time_per_call(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> float:
    """Median seconds per call over ``iters`` timed calls after ``warmup`` untimed ones (GPU work included)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_teachers(names: list[str], args: argparse.Namespace, device: torch.device) -> list[torch.nn.Module]:
    """Teachers by timm name, or by a pre-trained source robustcompress knows (e.g. cifar10_resnet18_autoattack)."""
    from robustcompress.models import is_pretrained_source, resolve_model

    teachers = []
    for name in names:
        classes = None if is_pretrained_source(name) else args.num_classes  # a source predicts its own classes
        model = resolve_model(name, num_classes=classes, input_size=args.input_size)
        teachers.append(model.to(device).eval().requires_grad_(False))
    return teachers


def resident_mb() -> float | None:
    """This process's resident memory (MB) now, from /proc (None where there is none)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    line = next((line for line in status.read_text().splitlines() if line.startswith("VmRSS:")), None)
    return None if line is None else int(line.split()[1]) / 1024


def measure(student_name: str, mode: str, args: argparse.Namespace, device: torch.device,
            method_name: str | None = None, teacher_names: list[str] | None = None,
            teacher_outputs: str = "live", precision: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """Full-step and isolated timings of one student, method and teacher set in one mode and precision.

    The first step is timed on its own (with torch.compile it includes the compilation), then ``warmup`` untimed
    and ``iters`` timed steps."""
    method_name = method_name or args.method
    teacher_names = list(args.teachers if teacher_names is None else teacher_names)
    steps = args.steps[0] if steps is None else steps
    torch.manual_seed(0)
    plan = plan_speed(mode, device, "auto" if mode == "reference" else precision or args.precision,
                      input_px=args.input_size)
    student = build_model(student_name, args.num_classes, args.input_size).to(device)
    teachers = build_teachers(teacher_names, args, device)
    method = create_method(method_name)
    method.setup(student, teachers, args.num_classes, args.input_size)
    method.to(device)
    config = TrainConfig(batch_size=args.batch_size, steps=steps, eps=8 / 255, step_size=2 / 255,
                         crop_padding=4, flip=True, progress=False, speed=mode, teacher_outputs=teacher_outputs)
    generator = torch.Generator().manual_seed(0)
    x_host = torch.rand(args.batch_size, 3, args.input_size, args.input_size, generator=generator)
    y_host = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator)
    index = torch.arange(args.batch_size)
    table_of_outputs = None
    if teacher_outputs == "cached":  # computed once before training, as train() does; not part of the step
        plan_of_method = method.clean_teacher_plan(len(teachers))
        table_of_outputs = CleanTeacherOutputs.build(teachers, plan_of_method, x_host, True, device, progress=False,
                                                     cache=False)
    # The reference trainer copies every batch from host memory; the fast one keeps the data on the GPU.
    x_src, y_src = (x_host.to(device), y_host.to(device)) if plan.data_on_device else (x_host, y_host)
    params = list(student.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    with speed_context(plan, student, teachers) as (student_fwd, teacher_fwds):
        step = TrainStep(student_fwd, teacher_fwds, method, optimizer, scheduler, config, plan, device,
                         args.num_classes, teacher_outputs=table_of_outputs)
        student_fwd.train()
        method.train()

        def full_step() -> None:
            loss, _ = step.forward(x_src.to(device, non_blocking=True), y_src.to(device, non_blocking=True), 0, index)
            step.update(loss)

        x = to_memory_format(x_host.to(device), plan)
        y = y_host.to(device)

        def student_forward_backward() -> None:
            optimizer.zero_grad(set_to_none=True)
            with plan.autocast(device):
                loss = F.cross_entropy(student_fwd(x), y)
            loss.backward()

        def teachers_forward() -> None:
            with plan.autocast(device):
                teacher_logits(teacher_fwds, x)

        first_step = timed(full_step, device)
        t_step = time_per_call(full_step, device, args.iters, args.warmup)
        t_student = time_per_call(student_forward_backward, device, args.iters, args.warmup)
        live_teachers = teachers and teacher_outputs == "live"
        t_teachers = time_per_call(teachers_forward, device, args.iters, args.warmup) if live_teachers else 0.0
    ideal = (steps + 1) * t_student + t_teachers
    return {
        "student": student_name,
        "method": method_name,
        "teachers": teacher_names,
        "teacher_outputs": teacher_outputs,
        "mode": mode,
        "steps": steps,
        "settings": plan.describe(),
        "first_step_s": first_step,
        "rss_mb": resident_mb(),
        "images_per_s": args.batch_size / t_step,
        "step_ms": 1000 * t_step,
        "student_fwd_bwd_ms": 1000 * t_student,
        "teachers_fwd_ms": 1000 * t_teachers,
        "ideal_ms": 1000 * ideal,
        "efficiency": ideal / t_step,
    }


def protocol_runs(args: argparse.Namespace) -> list[tuple[str, list[str], str]]:
    """(method, teachers, teacher outputs) to time: one method, or with --method all every method of the CPU-scale
    CIFAR-10 protocol with its teachers there, plus the live-teacher setting of the methods it caches for."""
    if args.method != "all":
        return [(args.method, list(args.teachers), "live")]
    import table_protocol as protocol  # a sibling module: benchmarks/ is on sys.path when this file runs

    setting = protocol.CPU_SCALE
    teacher1 = "cifar10_resnet18_autoattack"
    robust = setting.teacher2 if setting.robust_source == "teacher2" else teacher1
    architecture = {"teacher1": teacher1, "teacher2": setting.teacher2, "robust": robust}
    runs = []
    for method in args.only or protocol.ISSUE_METHODS:
        names = [architecture[role] for role in protocol.TEACHERS_OF[method]]
        cached = method in setting.cached_teacher_outputs_for
        runs.append((method, names, "cached" if cached else "live"))
        if cached:
            runs.append((method, names, "live"))
    return runs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run for CI (preset 'smoke')")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named setting; explicit flags override it")
    p.add_argument("--students", nargs="+", help="timm names of the students (default mobilenetv2_100)")
    p.add_argument("--teachers", nargs="*", help="timm names of the teachers (default resnet50; none for pgd-at)")
    p.add_argument("--method", help="training method (default ard: K PGD steps + 1 training pass + teachers); 'all': "
                   "every method of the CPU-scale CIFAR-10 protocol with its teachers there (preset cpu-scale)")
    p.add_argument("--only", type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
                   help="with --method all: only these methods of the protocol, e.g. pgd-at,rslad,sa-mdrad,dual-path")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, nargs="+", help="PGD steps K of the training attack (several: each is timed)")
    p.add_argument("--input-size", type=int)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--modes", nargs="+", choices=["reference", "fast", "compile"], default=["reference", "fast"])
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="autocast of the non-reference modes (auto: bf16 on CUDA and on CPUs with native bf16)")
    p.add_argument("--precisions", nargs="+", choices=["auto", "bf16", "fp32"],
                   help="time every non-reference mode in each of these precisions (default: --precision alone)")
    p.add_argument("--iters", type=int, help="timed iterations per measurement (median reported)")
    p.add_argument("--warmup", type=int, help="untimed iterations before each measurement")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--json", default="runs/throughput.json", help="where to write the results (JSON)")
    p.add_argument("--markdown", help="also write the table with its provenance to this Markdown file")
    args = p.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else args.preset] if (args.smoke or args.preset) else {}
    defaults = {"students": ["mobilenetv2_100"], "teachers": ["resnet50"], "method": "ard", "batch_size": 256,
                "steps": 10, "input_size": 32, "iters": 20, "warmup": 5, "device": "auto"}
    for key, value in {**defaults, **preset}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.steps = [args.steps] if isinstance(args.steps, int) else list(args.steps)
    args.precisions = args.precisions or [args.precision]
    return args


def variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(mode, precision) pairs to time: the reference once (fp32 by definition), every other mode per precision."""
    return [(mode, precision) for mode in args.modes
            for precision in (["auto"] if mode == "reference" else args.precisions)]


def summarise(args: argparse.Namespace, argv: list[str] | None, device: torch.device,
              rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON result for the rows measured so far ("complete" is False until every student and mode ran)."""
    return {
        "command": shown_command(sys.argv if argv is None else ["benchmarks/throughput.py", *argv]),
        "date": datetime.date.today().isoformat(),
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "setting": {k: getattr(args, k) for k in ("teachers", "method", "batch_size", "steps", "input_size",
                                                   "num_classes", "iters", "warmup", "precision", "precisions")},
        "cpu": None if device.type == "cuda" else cpu_info().describe(),
        "rows": rows,
        "complete": len(rows) == len(args.students) * len(variants(args)) * len(protocol_runs(args)) * len(args.steps),
        "speedup_fast_vs_reference": speedups(rows),
    }


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Fast over reference images/s for every student (and method and steps, when several were timed) that has
    both; a fast row in another precision than the first one timed is keyed '<key> <precision>'."""
    key = group_key(rows)
    first_precision = next((r["settings"]["precision"] for r in rows if r["mode"] == "fast"), None)
    by_mode: dict[str, dict[str, float]] = {}
    for r in rows:
        precision = r["settings"]["precision"]
        name = key(r) if r["mode"] == "reference" or precision == first_precision else f"{key(r)} {precision}"
        by_mode.setdefault(name, {})[r["mode"]] = r["images_per_s"]
    reference = {k: m["reference"] for k, m in by_mode.items() if "reference" in m}
    return {name: m["fast"] / reference[base] for name, m in by_mode.items() if "fast" in m
            for base in [next((k for k in reference if name == k or name.startswith(k + " ")), None)] if base}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for student in args.students:
        for steps in args.steps:
            for method, teachers, outputs in protocol_runs(args):
                for mode, precision in variants(args):
                    row = measure(student, mode, args, device, method, teachers, outputs, precision, steps)
                    rows.append(row)
                    print(f"{run_key(row)} PGD-{steps} {mode} {row['settings']['precision']}: "
                          f"{row['images_per_s']:.1f} images/s, efficiency {row['efficiency']:.2f}, first step "
                          f"{row['first_step_s']:.1f} s", file=sys.stderr, flush=True)
                # After every row, so a run stopped by a timeout (benchmarks/gpu_check.sh) keeps what it measured.
                out.write_text(json.dumps(summarise(args, argv, device, rows), indent=2))
    result = summarise(args, argv, device, rows)
    text = table(rows)
    print(text)
    out.write_text(json.dumps(result, indent=2))
    if args.markdown:
        md = Path(args.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        cpu = cpu_info() if result["cpu"] else None  # the CpuInfo result["cpu"] describes
        flags = f" ({cpu.model}; flags {cpu.flags_text()})" if cpu else ""
        md.write_text(
            f"Device: {result['device']}{flags}; torch {result['torch']}; date {result['date']}; seed 0 (synthetic "
            f"data).\n\n"
            f"Command: `{result['command']}`\n\n{text}\n"
        )
    return result


if __name__ == "__main__":
    main()
    exit_process(0)
