"""Export, verify, optionally quantize, then write the .onnx files and a report; nothing is written without parity."""
from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from robustcompress.export.onnx import (PARITY_TOLERANCE, onnx_logits, read_metadata, save_onnx, set_metadata,
                                        to_onnx)
from robustcompress.export.quantize import quantize_int8, verify_int8
from robustcompress.export.verification import verify_onnx
from robustcompress.models import ImageClassifier
from robustcompress.io import write_json

REPORT_FORMAT = "robustcompress-export-report/1"
log = logging.getLogger("robustcompress")


def output_paths(path: str | os.PathLike) -> dict[str, Path]:
    """Where export_verified writes: student.onnx -> student.int8.onnx and student.report.json beside it."""
    path = Path(path)
    return {"fp32": path, "int8": path.with_suffix(".int8.onnx"), "report": path.with_suffix(".report.json")}


def measure_latency(path: Path, runs: int) -> dict[str, float]:
    """A short onnxruntime latency measurement (batch 1 and batch 64) for the report."""
    from robustcompress_runtime.benchmark import measure, onnx_runner
    from robustcompress_runtime.runtime import load_model

    model = load_model(path)
    return measure(onnx_runner(path), model.input_size, model.channels, batch1_runs=runs,
                   batch_runs=max(1, runs // 10), warmup=min(10, runs))


def export_verified(
    model: ImageClassifier,
    path: str | os.PathLike,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    metadata: dict[str, Any] | None = None,
    attack_steps: int = 10,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
    int8: bool = False,
    calibration_images: torch.Tensor | None = None,
    latency_runs: int = 20,
    data_description: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Export ``model`` to ``path`` and prove on the labelled images (x, y) that the file is the same model.

    Writes ``path`` (fp32), with ``int8`` also ``<stem>.int8.onnx``, and ``<stem>.report.json``. Parity, clean and
    robust accuracy (PGD with ``attack_steps`` steps at ``eps``, crafted on the PyTorch model, classified by
    onnxruntime) go into both the report and each file's metadata under 'verification'. Raises ParityError, writing
    nothing, when the graph does not reproduce the PyTorch logits within ``tolerance``. Returns the report.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"verification needs labelled images; got {len(x)} images and {len(y)} labels")
    if int8 and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8=True needs calibration_images (training images in [0, 1])")
    paths = output_paths(path)
    if not int8 and paths["int8"].exists():
        log.warning("%s is left over from an earlier export and does not match this one; delete it or pass int8=True",
                    paths["int8"])
    x, y = x.detach().cpu().float(), y.cpu()
    model = model.cpu()  # every step below runs it in eval mode and restores its mode
    channels = x.shape[1]
    base = {**(metadata or {}), "input_size": model.input_size, "channels": channels, "layout": "NCHW",
            "input_range": [0.0, 1.0], "eps": eps, "norm": "Linf"}

    proto = set_metadata(to_onnx(model, model.input_size, channels), {**base, "precision": "fp32"})
    check, x_adv = verify_onnx(model, proto, x, y, eps, attack_steps, seed, tolerance, progress)
    save_onnx(set_metadata(proto, {"verification": check}), paths["fp32"])
    fp32_section = {"path": str(paths["fp32"]), "size_bytes": paths["fp32"].stat().st_size, **check}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "model": {k: base.get(k) for k in ("student", "method", "teachers", "input_size", "channels", "eps", "norm")},
        "classes": base.get("class_labels", []),
        "data": {**(data_description or {}), "eval_examples": len(x),
                 "calibration_examples": 0 if calibration_images is None or not int8 else len(calibration_images)},
        "fp32": fp32_section,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "exporter": read_metadata(proto).get("exporter")},
    }

    if int8:
        assert calibration_images is not None
        quantized, settings = quantize_int8(proto, calibration_images.cpu().numpy())
        fp32_logits = onnx_logits(proto.SerializeToString(), x.numpy())
        int8_check = verify_int8(model, quantized, x, y, eps, x_adv, fp32_logits, calibration_images, attack_steps,
                                 seed, progress)
        set_metadata(quantized, {"precision": "int8", "quantization": settings, "verification": int8_check,
                                 "float_verification": check})
        save_onnx(quantized, paths["int8"])
        size = paths["int8"].stat().st_size
        report["int8"] = {"path": str(paths["int8"]), "size_bytes": size,
                          "size_ratio_vs_fp32": size / fp32_section["size_bytes"], "quantization": settings,
                          **int8_check}

    if latency_runs > 0:
        for key in ("fp32", "int8"):
            if key in report:
                report[key]["latency_cpu"] = measure_latency(paths[key], latency_runs)
        report["latency_note"] = (f"{latency_runs} batch-1 runs per file on {os.cpu_count()} CPU cores while "
                                  "exporting; use python -m robustcompress.apps.latency for careful numbers")
    report["report_path"] = str(paths["report"])
    write_json(paths["report"], report, default=_json_default)
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the export report")
