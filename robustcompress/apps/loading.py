"""What the demo loads: a bundle's robust student and undefended teacher, its checked ONNX export, gallery images."""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from robustcompress.bundle import onnx_beside, read_bundle
from robustcompress.data import load_data
from robustcompress.data.core import DATASET_NAMES
from robustcompress.data.tensors import as_float_images
from robustcompress.export.classifier import OnnxClassifier
from robustcompress.export.onnx import is_robustcompress_export, read_metadata
from robustcompress.models import ImageClassifier

log = logging.getLogger("robustcompress")

#: student.onnx in the bundle or next to it (the quickstart writes quickstart_out/student.onnx beside bundle/).
find_onnx = onnx_beside


@dataclass
class DemoModels:
    """Everything the demo needs from a bundle: both models, the exported student and the bundle's own numbers."""

    student: ImageClassifier
    undefended: ImageClassifier
    undefended_name: str
    class_names: list[str]
    input_size: int
    onnx_path: Path
    onnx: OnnxClassifier
    bundle_dir: Path
    method: str = ""
    dataset: str = ""
    #: Where the bundle's data can be reloaded from (an image folder or .npz), as DataBundle.describe() recorded it.
    data_source: str | None = None
    eps: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    plot_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    @property
    def onnx_session(self) -> Any:
        """The exported student's onnxruntime session."""
        return self.onnx.session


def find_plot(bundle_dir: Path) -> Path | None:
    """The report's accuracy-vs-eps PNG in the bundle or its parent folder, preferring names that mention eps."""
    pngs = sorted(bundle_dir.glob("*.png")) + sorted(bundle_dir.parent.glob("*.png"))
    preferred = [p for p in pngs if "eps" in p.stem.lower()]
    return (preferred or pngs or [None])[0]


def _read_report(bundle_dir: Path) -> dict[str, Any] | None:
    """The quickstart's report.json when this bundle is the one it describes (it holds the teachers' numbers)."""
    path = bundle_dir.parent / "report.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        log.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return None
    if not isinstance(report, dict) or Path(str(report.get("bundle", ""))).name != bundle_dir.name:
        return None
    return report


def _exported_student(bundle_dir: Path, onnx_path: str | Path | None, device: str) -> Path:
    """The ONNX file to compare: the one given, else the one beside the bundle, else the student exported now."""
    if onnx_path is not None:
        if not Path(onnx_path).is_file():
            raise FileNotFoundError(f"ONNX file {onnx_path} does not exist; export one with 'robustcompress export "
                                    f"{bundle_dir}'")
        return Path(onnx_path)
    found = find_onnx(bundle_dir)
    if found is None:
        from robustcompress.compressor import RobustCompressor

        found = Path(tempfile.mkdtemp(prefix="robustcompress-demo-")) / "student.onnx"
        log.warning("no student.onnx in or next to %s; exporting the student to %s", bundle_dir, found)
        RobustCompressor.load(bundle_dir, device=device).export_onnx(found)
    return found


def load_demo_models(bundle_dir: str | Path, onnx_path: str | Path | None = None, device: str = "cpu") -> DemoModels:
    """Load a bundle written by RobustCompressor.save and the ONNX export of its student (exported now if missing).

    The undefended model is the bundle's first teacher: teachers are trained with plain cross-entropy.
    """
    bundle = read_bundle(bundle_dir)
    directory = bundle.directory
    if not bundle.record["teachers"]:
        raise ValueError(
            f"bundle {directory} holds no teacher, so the demo has no undefended model to compare the student with; "
            "use a bundle distilled from standard teachers, such as the quickstart's"
        )
    if not bundle.teachers_saved:
        raise ValueError(
            f"bundle {directory} was saved student-only (without its teachers' weights), so the demo has no "
            "undefended model to compare the student with; use the bundle fit or quickstart wrote, which keeps them"
        )
    student, teachers = bundle.student(device), bundle.teachers(device)
    names = bundle.teacher_names or [t.name for t in teachers]
    data = bundle.get("data")
    class_names = [str(c) for c in data.get("class_names") or []]
    if len(class_names) != bundle.num_classes:
        class_names = [str(i) for i in range(bundle.num_classes)]
    onnx_file = _exported_student(directory, onnx_path, device)
    if not is_robustcompress_export(read_metadata(onnx_file)):
        raise ValueError(
            f"{onnx_file} has no robustcompress metadata, so it was not written by 'robustcompress export' and is not "
            f"this bundle's student; export the student with 'robustcompress export {directory}' (or leave --onnx out)"
        )
    onnx = OnnxClassifier(onnx_file)
    onnx.check_signature(bundle.input_size)
    classes = onnx(torch.zeros(1, 3, bundle.input_size, bundle.input_size)).shape[1]
    if classes != bundle.num_classes:
        raise ValueError(
            f"{onnx_file} predicts {classes} classes but the bundle's student predicts {bundle.num_classes}; "
            f"it was exported from another model. Re-export with 'robustcompress export {directory}'"
        )
    return DemoModels(
        student=student, undefended=teachers[0], undefended_name=str(names[0]), class_names=class_names,
        input_size=bundle.input_size, onnx_path=onnx_file, onnx=onnx, bundle_dir=directory, method=bundle.method,
        dataset=str(data.get("name", "")), data_source=data.get("source"), eps=bundle.train_config.eps,
        metrics=dict(bundle.get("metrics")), report=_read_report(directory), plot_path=find_plot(directory),
    )


def gallery_images(dataset: str, input_size: int, per_class: int = 1, limit: int = 20,
                   source: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of each class (for the gallery), at most ``limit``.

    ``dataset`` is a named dataset ('digits', ...); ``source``, when given, is the image folder or .npz the bundle
    was trained on (DataBundle.describe()'s 'source'), read from disk instead.
    """
    if source and Path(source).is_dir():
        from robustcompress.data.folders import folder_examples

        x, y, _ = folder_examples(source, input_size, per_class, limit)
        return x, y
    if source and Path(source).is_file():
        split = load_data(source, input_size).test
    elif dataset in DATASET_NAMES:
        split = load_data(dataset, input_size).test
    else:
        where = f" from {source}, which no longer exists" if source else ""
        raise ValueError(f"the bundle was trained on '{dataset}'{where}, which the demo cannot reload; upload images "
                         "instead")
    assert split is not None
    if isinstance(split, TensorDataset):
        x, y = as_float_images(split.tensors[0]), split.tensors[1]
    else:
        x = torch.stack([torch.as_tensor(split[i][0]) for i in range(len(split))])
        y = torch.as_tensor([int(split[i][1]) for i in range(len(split))])
    picked: list[int] = []
    for cls in y.unique(sorted=True).tolist():
        picked += (y == cls).nonzero().flatten()[:per_class].tolist()
    picked = sorted(picked)[:limit]
    return x[picked], y[picked]
