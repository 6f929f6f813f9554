"""Export a trained student from its data: where the file goes, the held-out images, the int8 calibration sample."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import Subset

from robustcompress.data import DataBundle, load_data
from robustcompress.data.core import reload_data
from robustcompress.export.onnx import PARITY_TOLERANCE
from robustcompress.export.verified import export_verified
from robustcompress.io import check_writable
from robustcompress.models import ImageClassifier
from robustcompress.verify.evaluate import take_examples


def onnx_output_path(path: str | os.PathLike) -> Path:
    """Where an export goes: ``path`` itself, or ``path/student.onnx`` when it is an existing folder (or ends in /)."""
    text = os.fspath(path)
    if Path(text).is_dir() or text.endswith(("/", os.sep)):
        return Path(text) / "student.onnx"
    return Path(text)


def labelled_data(given: Any, fitted: DataBundle | None, info: Mapping[str, Any], input_size: int | None,
                  progress: bool = False) -> DataBundle:
    """Labelled images to verify an export on: ``given`` data, else the data the student was fitted on (in memory),
    else the data its bundle names (DataBundle.describe()'s ``info``) loaded again."""
    if given is not None:
        return load_data(given, input_size)
    if fitted is not None and (fitted.test is not None or fitted.train is not None):
        return fitted
    reloaded = reload_data(info, input_size, progress=progress)
    if reloaded is None:
        raise ValueError(
            f"no labelled images to verify the export on (the bundle was trained on "
            f"'{info.get('name') or 'unknown data'}', which cannot be reloaded by name or path); pass "
            "parity_data=... (CLI: --data) with an image folder, .npz file or dataset name")
    return reloaded


def calibration_images(data: DataBundle, n: int, seed: int) -> torch.Tensor:
    """A seeded random sample of ``n`` training images (a sorted dataset's first rows may be one class); the
    evaluation split only when there is no training split."""
    split = data.train if data.train is not None else data.test
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    x, _ = take_examples(Subset(split, order[:n].tolist()), None)
    return x


def onnx_metadata(record: Mapping[str, Any], data: DataBundle) -> dict[str, Any]:
    """What an exported student carries from its bundle record (RobustCompressor.describe()): classes, mean/std,
    method, teachers, architecture and the training-time metrics."""
    student = record["student"]
    return {"class_labels": (record.get("data") or {}).get("class_names") or data.class_names,
            "mean": student["mean"], "std": student["std"], "method": record["method"],
            "teachers": record["teacher_names"], "student": student["name"], "metrics": record.get("metrics", {})}


def export_student(
    student: ImageClassifier,
    path: str | os.PathLike,
    data: DataBundle,
    record: Mapping[str, Any],
    *,
    n_parity: int = 100,
    int8: bool = False,
    calibration_examples: int = 256,
    attack_steps: int = 10,
    tolerance: float = PARITY_TOLERANCE,
    latency_runs: int = 20,
    progress: bool = False,
) -> dict[str, Any]:
    """Export ``student`` with :func:`export_verified`, checked on the first ``n_parity`` held-out images of ``data``
    at the eps and seed of its bundle ``record`` (RobustCompressor.describe()), which also supplies the metadata.

    Returns path, max_abs_diff, argmax_agreement, clean_acc, robust_acc, report_path (plus int8_path with ``int8``)
    and the full report. The student is left on the CPU.
    """
    eps, seed = record["eps"], record["train_config"]["seed"]
    path = onnx_output_path(path)
    check_writable(path.parent, "export folder")  # before the verification attacks, not after them
    eval_split = data.test if data.test is not None else data.train
    x, y = take_examples(eval_split, n_parity)  # type: ignore[arg-type]
    calibration = calibration_images(data, calibration_examples, seed) if int8 else None
    description = {"name": data.name, "eval_split": "test" if data.test is not None else "train",
                   "calibration_split": None if calibration is None else
                   ("train" if data.train is not None else "test")}
    report = export_verified(
        student, path, x, y, eps, onnx_metadata(record, data), attack_steps=attack_steps, seed=seed,
        tolerance=tolerance, int8=int8, calibration_images=calibration, latency_runs=latency_runs,
        data_description=description, progress=progress,
    )
    fp32 = report["fp32"]
    result = {"path": fp32["path"], "max_abs_diff": fp32["parity"]["max_abs_diff"],
              "argmax_agreement": fp32["parity"]["argmax_agreement"], "clean_acc": fp32["clean_acc"],
              "robust_acc": fp32["robust_acc"], "report_path": report["report_path"], "report": report}
    if int8:
        result["int8_path"] = report["int8"]["path"]
    return result
