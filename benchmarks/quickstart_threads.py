"""Thread scaling and memory layout of the quickstart's workloads on this CPU (docs/results/quickstart_profile.md).

    python benchmarks/quickstart_threads.py --threads 2          # one process
    python benchmarks/quickstart_threads.py --threads 1 & python benchmarks/quickstart_threads.py --threads 1; wait

Workloads, at the quickstart's shapes (8x8 grey digits, 10 classes), median milliseconds per call:
  attack   APGD-like step: test_efficientnet forward + gradient w.r.t. 200 input images (eval mode)
  distill  ARD-like training step: 5 PGD steps, one resnet10t teacher forward, the student's update (batch 64)
  teacher  one resnet10t training step (batch 64)
each in NCHW and in channels_last. Random inputs suffice: the time depends on shapes, not on pixel values.
"""
from __future__ import annotations

import argparse
import json
from typing import Callable

import timm
import torch
import torch.nn.functional as F

from throughput import time_per_call  # a sibling module: benchmarks/ is on sys.path when this file runs


def workloads(memory_format: torch.memory_format) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    student = timm.create_model("test_efficientnet", num_classes=10, in_chans=1).to(memory_format=memory_format)
    teacher = timm.create_model("resnet10t", num_classes=10, in_chans=1).to(memory_format=memory_format)
    opt_s = torch.optim.SGD(student.parameters(), lr=0.1)
    opt_t = torch.optim.SGD(teacher.parameters(), lr=0.1)
    x200 = torch.rand(200, 1, 8, 8).contiguous(memory_format=memory_format)
    y200 = torch.randint(0, 10, (200,))
    x, y = x200[:64], y200[:64]

    def attack() -> None:
        student.eval()
        xa = x200.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(student(xa), y200), xa)

    def distill() -> None:
        xa = x.clone().requires_grad_(True)
        student.eval()
        for _ in range(5):
            grad, = torch.autograd.grad(F.cross_entropy(student(xa), y), xa)
            xa = (xa + 0.01 * grad.sign()).clamp(0, 1).detach().requires_grad_(True)
        with torch.no_grad():
            teacher.eval()
            teacher(x)
        student.train()
        opt_s.zero_grad()
        F.cross_entropy(student(xa.detach()), y).backward()
        opt_s.step()

    def teacher_step() -> None:
        teacher.train()
        opt_t.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt_t.step()

    return {"attack": attack, "distill": distill, "teacher": teacher_step}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--calls", type=int, default=20, help="timed calls per workload (default 20)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, float] = {}
    for layout, memory_format in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        for name, fn in workloads(memory_format).items():
            result[f"{name} {layout}"] = round(1000 * time_per_call(fn, torch.device("cpu"), args.calls, 2), 1)
    print(json.dumps({"threads": args.threads, "ms": result}))
    return result


if __name__ == "__main__":
    main()
