"""CPU latency (batch 1 p50/p95) and throughput (batch 64 images/s): ORT fp32, ORT int8 (and PyTorch eager).

    python -m robustcompress_runtime.benchmark student.onnx --int8 student.int8.onnx [--json out.json]
    python -m robustcompress.apps.latency student.onnx --int8 student.int8.onnx [--bundle BUNDLE]  # + PyTorch row

This module needs onnxruntime and numpy only; the PyTorch eager row comes from ``robustcompress.apps.latency``,
which runs this same benchmark with a runner for the bundle's PyTorch student.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime as ort

from robustcompress_runtime.runtime import load_model

Runner = Callable[[np.ndarray], Any]


def time_calls(run: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Seconds taken by each of ``runs`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    return times


def measure(
    runner: Runner,
    input_size: int,
    channels: int = 3,
    batch1_runs: int = 200,
    batch_runs: int = 20,
    batch_size: int = 64,
    warmup: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Batch-1 latency percentiles and large-batch throughput of ``runner`` on random [0, 1] images."""
    if batch1_runs < 1 or batch_runs < 1:
        raise ValueError("batch1_runs and batch_runs must be at least 1")
    rng = np.random.default_rng(seed)
    one = rng.random((1, channels, input_size, input_size), dtype=np.float32)
    many = rng.random((batch_size, channels, input_size, input_size), dtype=np.float32)
    single = time_calls(lambda: runner(one), batch1_runs, warmup)
    batched = time_calls(lambda: runner(many), batch_runs, max(1, warmup // 5))
    return {
        "batch1_p50_ms": float(np.percentile(single, 50) * 1e3),
        "batch1_p95_ms": float(np.percentile(single, 95) * 1e3),
        "batch1_mean_ms": float(single.mean() * 1e3),
        f"batch{batch_size}_p50_ms": float(np.percentile(batched, 50) * 1e3),
        f"batch{batch_size}_images_per_s": float(batch_size * batch_runs / batched.sum()),
        "batch1_runs": batch1_runs,
        f"batch{batch_size}_runs": batch_runs,
    }


def onnx_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """A function running the .onnx at ``path`` in onnxruntime on CPU."""
    model = load_model(path, threads)
    return lambda x: model.session.run(None, {model.input_name: x})[0]


#: CPU flags that decide how fast int8 convolutions can be (x86 VNNI/AMX, Arm dot product and int8 matmul).
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def _cpuinfo_field(names: Sequence[str]) -> str | None:
    """The first /proc/cpuinfo value whose key is one of ``names`` (Linux only)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in names:
            return value.strip()
    return None


def _lscpu_model_name() -> str | None:
    """'Model name' from lscpu, or None where lscpu is missing or says nothing."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip():
            return value.strip()
    return None


def machine_info() -> dict[str, Any]:
    """The CPU a measurement ran on: model name (lscpu, else /proc/cpuinfo), platform.processor(), logical cores,
    architecture and which of INT8_CPU_FLAGS it reports (they explain int8 speed-ups, or their absence)."""
    flags = set((_cpuinfo_field(("flags", "Features")) or "").split())
    return {
        "model_name": _lscpu_model_name() or _cpuinfo_field(("model name",)),
        "processor": platform.processor() or None,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "int8_flags": [f for f in INT8_CPU_FLAGS if f in flags],
    }


def describe_machine() -> str:
    """CPU model and core count, e.g. 'AMD EPYC, 2 logical cores, x86_64'."""
    info = machine_info()
    name = info["model_name"] or info["processor"] or "unknown CPU"
    return f"{name}, {info['cpu_count']} logical cores, {info['machine']}"


def load_average_1min() -> float | None:
    """The 1-minute load average (None where the OS has none): other work competing for the cores."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def measure_runtimes(
    candidates: Sequence[tuple[str, Runner, str | os.PathLike | None]],
    input_size: int,
    channels: int = 3,
    batch1_runs: int = 200,
    batch_runs: int = 20,
    batch_size: int = 64,
    warmup: int = 10,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One measure() row per (name, runner, file or None) in turn, each with the file's size and the 1-minute load
    average just before it (a busy machine shows there); ``on_row`` sees each row as soon as it is measured."""
    rows = []
    for name, runner, path in candidates:
        load = load_average_1min()
        numbers = measure(runner, input_size, channels, batch1_runs, batch_runs, batch_size, warmup)
        row = {"runtime": name, "file": str(path) if path else None,
               "size_bytes": os.path.getsize(path) if path else None, "load_average_1min_before": load, **numbers}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


#: Row names of the three runtimes, in the order they are measured.
RUNTIME_NAMES = {"eager": "PyTorch eager fp32", "fp32": "onnxruntime fp32", "int8": "onnxruntime int8 (QDQ)"}


def runtime_candidates(
    fp32: str | os.PathLike,
    int8: str | os.PathLike | None = None,
    eager: Runner | None = None,
    threads: int | None = None,
) -> list[tuple[str, Runner, str | None]]:
    """(name, runner, file) for PyTorch eager (when given), onnxruntime fp32 and int8 (when given), in that order;
    the sessions come from make_session with ``threads`` intra-op threads."""
    candidates: list[tuple[str, Runner, str | None]] = []
    if eager is not None:
        candidates.append((RUNTIME_NAMES["eager"], eager, None))
    candidates.append((RUNTIME_NAMES["fp32"], onnx_runner(fp32, threads), str(fp32)))
    if int8 is not None:
        candidates.append((RUNTIME_NAMES["int8"], onnx_runner(int8, threads), str(int8)))
    return candidates


def run_benchmark(
    fp32: str | os.PathLike,
    int8: str | os.PathLike | None = None,
    eager: Runner | None = None,
    threads: int | None = None,
    batch1_runs: int = 200,
    batch_runs: int = 20,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Measure every available runtime on the same random inputs; returns rows plus machine and versions.

    ``eager`` runs the PyTorch model (from ``robustcompress.apps.latency``, which has torch); without it the
    table holds the onnxruntime rows only.
    """
    threads = threads or os.cpu_count() or 1
    reference = load_model(fp32)
    size, channels = reference.input_size, reference.channels
    candidates = runtime_candidates(fp32, int8, eager, threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = measure_runtimes(candidates, size, channels, batch1_runs, batch_runs, batch_size)
    versions = {"onnxruntime": ort.__version__, "numpy": np.__version__, "python": platform.python_version()}
    versions.update(getattr(eager, "versions", {}))
    return {
        "machine": describe_machine(),
        "threads": threads,
        "model": reference.metadata.get("student", Path(fp32).stem),
        "input": f"{channels}x{size}x{size} float32, random uniform [0, 1]",
        "batch_size": batch_size,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "rows": rows,
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    b = result["batch_size"]
    lines = [
        f"| runtime | file size | batch 1 p50 (ms) | batch 1 p95 (ms) | batch {b} (images/s) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        size = f"{row['size_bytes'] / 1e6:.2f} MB" if row["size_bytes"] else "-"
        lines.append(f"| {row['runtime']} | {size} | {row['batch1_p50_ms']:.2f} | {row['batch1_p95_ms']:.2f} | "
                     f"{row[f'batch{b}_images_per_s']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, eager_for: Callable[[str, int | None], Runner] | None = None,
         prog: str = "python -m robustcompress_runtime.benchmark") -> int:
    """Command line: print a Markdown table and optionally write the JSON.

    ``eager_for(bundle, threads)`` makes the PyTorch eager runner (robustcompress.apps.latency passes one);
    without it a bundle is not measured.
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("model", help="the fp32 .onnx written by 'robustcompress export'")
    parser.add_argument("--int8", help="the int8 .onnx (written by 'robustcompress export --int8')")
    parser.add_argument("--bundle", help="bundle folder for the PyTorch eager row (default: the .onnx's folder when it "
                        "holds config.json); needs torch and robustcompress (python -m robustcompress.apps.latency)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager row")
    parser.add_argument("--threads", type=int, help="threads for every runtime (default: all cores)")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 calls (default 200)")
    parser.add_argument("--batch-runs", type=int, default=20, help="timed batch calls (default 20)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    beside = Path(args.model).parent
    bundle = args.bundle or (str(beside) if (beside / "config.json").is_file() else None)
    eager = None
    if not args.no_torch and bundle is not None:
        if eager_for is not None:
            eager = eager_for(bundle, args.threads)
        else:
            print("the PyTorch student needs torch and robustcompress (python -m robustcompress.apps.latency): "
                  "skipping the PyTorch eager row", file=sys.stderr)
    try:
        result = run_benchmark(args.model, args.int8, eager, args.threads, args.runs, args.batch_runs,
                               args.batch_size)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{prog.split()[-1]}: error: {exc}", file=sys.stderr)
        return 2
    result["date"] = dt.date.today().isoformat()
    result["command"] = f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv)
    threads = f"{result['threads']} thread" + ("s" if result["threads"] != 1 else "")
    print(f"{result['model']} on {result['machine']}, {threads}, input {result['input']}")
    print(render_markdown(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
