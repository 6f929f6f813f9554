"""A model named by the user (bundle folder, NAME=CHECKPOINT, pre-trained source or .onnx) resolved for verification."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from robustcompress.bundle import Bundle, bundle_beside, read_bundle
from robustcompress.data import DataBundle
from robustcompress.export.classifier import OnnxClassifier
from robustcompress.export.onnx import (graph_input_size, is_robustcompress_export, measure_parity, parity_bound,
                                        read_metadata)
from robustcompress.models import is_pretrained_source, resolve_model
from robustcompress.models.factory import checkpoint_spec
from robustcompress.teachers import teacher_references
from robustcompress.verify.evaluate import take_examples

DEFAULT_EPS = 8 / 255
PARITY_IMAGES = 64  # images an .onnx and its PyTorch twin must agree on before the twin crafts its attacks
#: An INT8 export may differ from its fp32 twin by this many times the largest logit difference its export recorded
#: (on its own verification images): other images, and another CPU's int8 kernels, move the logits a little more.
INT8_TWIN_MARGIN = 2.0


@dataclass
class Target:
    """The model to verify, the model that judges it (an .onnx whose twin is attacked), references and defaults."""

    model: nn.Module
    info: dict[str, Any]
    scorer: nn.Module | None = None
    white_box: bool = True
    eps: float = DEFAULT_EPS  # the bundle's or the export's, else 8/255
    seed: int = 0
    references: dict[str, nn.Module] = field(default_factory=dict)


def find_twin(onnx_path: str | os.PathLike, bundle: str | os.PathLike | None = None) -> Bundle | None:
    """The bundle an .onnx was exported from: ``bundle`` when given, else one beside the file (None: none)."""
    folder = bundle if bundle else bundle_beside(onnx_path)
    return read_bundle(folder) if folder else None


def model_input_size(spec: str, bundle: str | None = None, input_size: int | None = None) -> int | None:
    """The image size a model expects, known before the data is loaded (None: the data's own size)."""
    path = Path(spec)
    if path.is_dir():
        return read_bundle(path).input_size
    if path.suffix != ".onnx":
        return input_size
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; pass the .onnx 'robustcompress export' wrote")
    size = read_metadata(path).get("input_size")
    if size is None:
        twin = find_twin(path, bundle)
        size = twin.input_size if twin else input_size
    if size is None:  # a foreign file: the size its graph fixes, if any
        size = graph_input_size(path)
    return int(size) if size is not None else None


def load_pytorch(spec: str, data: DataBundle, device: torch.device | str, role: str = "MODEL",
                 checkpoint: str | None = None) -> tuple[nn.Module, Bundle | None]:
    """A bundle folder's student (and the bundle), or a timm NAME=CHECKPOINT (NAME with ``checkpoint``) or
    pre-trained model (and None), built by the model factory (resolve_model) and checked against the data."""
    if Path(spec).is_dir():
        bundle = read_bundle(spec)
        return bundle.student(device), bundle
    if checkpoint is None and not is_pretrained_source(spec):
        raise ValueError(
            f"{role} '{spec}' is neither a bundle folder, an .onnx file nor NAME=CHECKPOINT; a bare timm name has "
            f"no trained weights, so pass e.g. '{spec}=weights.safetensors' or --checkpoint"
        )
    model = resolve_model(spec, num_classes=data.num_classes, input_size=data.input_size, channels=data.channels,
                          checkpoint_path=checkpoint, role=role)
    return model.to(device).eval(), None


def _teachers(bundle: Bundle, device: torch.device | str, include: bool) -> dict[str, nn.Module]:
    # A student-only bundle has no teacher weights: the student is judged alone (the transfer check says so).
    include = include and bundle.teachers_saved
    return teacher_references(bundle.teachers(device), bundle.teacher_names) if include else {}


def load_onnx_target(path: Path, data: DataBundle, device: torch.device | str, bundle: str | None = None,
                     teachers: bool = True) -> Target:
    """An .onnx judged by onnxruntime; white-box attacks are crafted on its PyTorch twin (the bundle it was exported
    from, after a parity check), black-box ones only when there is none. ``info['note']`` warns about a foreign file."""
    onnx_model = OnnxClassifier(path)
    meta = read_metadata(path)
    onnx_model.check_signature(data.input_size, data.channels)
    twin_bundle = find_twin(path, bundle)
    info = {"name": meta.get("student", path.stem), "label": f"onnx ({path.name})", "source": "onnx",
            "path": str(path), "method": meta.get("method")}
    if not is_robustcompress_export(meta):
        info["note"] = (f"{path.name} has no robustcompress metadata (it was not written by 'robustcompress "
                        "export'): assumed to take [0, 1] NCHW images with any normalisation inside; if it "
                        "expects normalised inputs, these accuracies are wrong")
    if twin_bundle is None:
        info["attacked_via"] = "black-box only (no PyTorch twin found; pass --bundle to add white-box attacks)"
        eps = meta.get("eps")
        return Target(onnx_model, info, None, white_box=False, eps=DEFAULT_EPS if eps is None else eps)
    int8 = meta.get("precision") == "int8"
    recorded = (meta.get("verification") or {}).get("max_abs_logit_diff_vs_fp32") if int8 else None
    if int8 and not isinstance(recorded, (int, float)):
        info["attacked_via"] = "black-box only (an INT8 file whose export recorded no logit difference from fp32)"
        info["note"] = (f"{path.name} is an INT8 export without a recorded difference from its fp32 twin, so no "
                        "tolerance can tell whether the twin is its model: it is evaluated black-box")
        return Target(onnx_model, info, None, white_box=False, eps=meta.get("eps") or DEFAULT_EPS)
    twin = twin_bundle.student(device)
    x, _ = take_examples(data.test if data.test is not None else data.train, PARITY_IMAGES)  # type: ignore[arg-type]
    where = twin_bundle.directory
    parity = measure_parity(twin, path, x)
    tolerance = INT8_TWIN_MARGIN * recorded if int8 else parity_bound(parity)
    if not parity["max_abs_diff"] <= tolerance:  # also catches NaN
        because = f", {INT8_TWIN_MARGIN:g} x the {recorded:.3g} its INT8 export recorded" if int8 else ""
        raise ValueError(
            f"{path} is not an export of the student in {where}: their logits differ by {parity['max_abs_diff']:.3g} "
            f"(> {tolerance:.3g}{because}) on {len(x)} test images; pass --bundle with the bundle it was exported "
            "from, or export this bundle again")
    if int8:
        info["attacked_via"] = (f"INT8 graph judged by onnxruntime; white-box attacks crafted on the fp32 PyTorch twin "
                                f"in {where} reach it as transfer attacks")
        info["note"] = (f"{path.name} is an INT8 export: its logits are checked against the fp32 twin at "
                        f"{INT8_TWIN_MARGIN:g} x the difference its export recorded ({recorded:.3g}), and the "
                        "white-box attacks crafted on the twin are transfer attacks on the int8 graph")
    else:
        info["attacked_via"] = f"white-box attacks crafted on the PyTorch twin in {where}, judged by onnxruntime"
    info.update(twin=str(where), twin_max_abs_logit_diff=parity["max_abs_diff"], twin_parity_tolerance=tolerance)
    config = twin_bundle.train_config
    return Target(twin.to(device), info, onnx_model, True, config.eps, config.seed,
                  _teachers(twin_bundle, device, teachers))


def load_target(spec: str, data: DataBundle, device: torch.device | str, *, checkpoint: str | None = None,
                bundle: str | None = None, teachers: bool = True) -> Target:
    """Resolve ``spec`` (see ``robustcompress evaluate --help``) into a Target. ``bundle``: an .onnx's twin;
    ``teachers=False`` leaves a bundle's teachers out of the references."""
    path = Path(spec)
    if path.suffix == ".onnx":
        return load_onnx_target(path, data, device, bundle, teachers)
    model, found = load_pytorch(spec, data, device, "MODEL", checkpoint)
    if found is not None:
        info = {"name": model.name, "label": f"student ({model.name})", "source": "bundle", "path": str(path),
                "method": found.method}
        config = found.train_config
        return Target(model, info, eps=config.eps, seed=config.seed, references=_teachers(found, device, teachers))
    pair = checkpoint_spec(spec)
    source = pair[1] if pair is not None else checkpoint or spec  # spec: a pre-trained source such as an alias
    return Target(model, {"name": model.name, "label": model.name, "source": "timm", "checkpoint": source})
