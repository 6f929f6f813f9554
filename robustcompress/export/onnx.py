"""Export an ImageClassifier to one self-contained .onnx file and prove it computes the same logits."""
from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode
from robustcompress.export import PARITY_TOLERANCE
from robustcompress.io import atomic_write
from robustcompress_runtime.runtime import check_classifier_signature  # noqa: F401  (the one signature check)
from robustcompress_runtime.runtime import unreadable_model_error

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# fp32 itself is only this precise relative to the logits' size: on an untrained model with logits near 300,
# PyTorch's own fp32 result is 1.4e-3 away from its fp64 result. So the bound grows with max |logit| above 10.
PARITY_RELATIVE = 1e-5
#: to_onnx's exporters. "auto" uses torch's TorchScript exporter while torch still ships it (it traces one of our
#: CNNs in 0.2-0.7 s on a 2-core CPU, the torch.export-based "dynamo" exporter in 4-6 s: most of an export's time)
#: and the dynamo exporter where TorchScript is gone or cannot trace the model. Parity is checked either way.
EXPORTERS = ("auto", "torchscript", "dynamo")

log = logging.getLogger("robustcompress")
MAX_BATCH = 4096

#: An ONNX model given as a file path, serialised bytes or an in-memory proto.
OnnxSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model's outputs."""


def to_onnx(model: nn.Module, input_size: int, channels: int = 3, opset: int = 18,
            exporter: str = "auto") -> onnx.ModelProto:
    """Trace ``model`` (taking [0, 1] NCHW float32 images) to ONNX with a dynamic batch dimension.

    ``exporter`` is one of EXPORTERS; the one used is recorded in the 'exporter' metadata prop.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r} is not one of {', '.join(EXPORTERS)}")
    model = model.cpu()
    dummy = torch.rand(2, channels, input_size, input_size)
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both exporters are chatty (deprecation, internal decompositions)
        if exporter != "dynamo":
            try:
                return set_metadata(_torchscript_export(model, dummy, opset), {"exporter": "torchscript"})
            except Exception as exc:  # noqa: BLE001  any failure gives the dynamo exporter its turn (its errors raise)
                if exporter == "torchscript":
                    raise
                log.info("the TorchScript ONNX exporter failed (%s: %s); using the dynamo exporter",
                         type(exc).__name__, exc)
        return set_metadata(_dynamo_export(model, dummy, opset), {"exporter": "dynamo"})


def _torchscript_export(model: nn.Module, dummy: torch.Tensor, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(model, (dummy,), buffer, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset)
    return onnx.load_from_string(buffer.getvalue())


def _dynamo_export(model: nn.Module, dummy: torch.Tensor, opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(
        model,
        (dummy,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}},
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Add or replace metadata props in place; values that are not strings are stored as JSON."""
    updates = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    kept = [(e.key, e.value) for e in proto.metadata_props if e.key not in updates]
    del proto.metadata_props[:]
    for key, value in [*kept, *updates.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Run the full ONNX checker and write one self-contained file atomically (no external-data side files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create output folder {path.parent} ({exc}); choose a writable path") from exc
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp, save_as_external_data=False))
    return path


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: int,
    metadata: dict[str, Any] | None = None,
    channels: int = 3,
    opset: int = 18,
) -> Path:
    """Write ``model`` (taking [0, 1] NCHW float32 images, dynamic batch) to ``path`` with metadata props.

    This does not check parity; robustcompress.export.export_verified does, before anything is written.
    """
    return save_onnx(set_metadata(to_onnx(model, input_size, channels, opset), metadata or {}), path)


def load_onnx_file(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """onnx.load, with a file that holds no ONNX model (truncated, empty, another format) a one-line ValueError."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; check the path")
    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001  protobuf's DecodeError and friends: the bytes are not a ModelProto
        raise unreadable_model_error(path, f"{type(exc).__name__}: {exc}") from exc
    if not proto.HasField("graph") or not proto.graph.node:
        raise unreadable_model_error(path, "it holds no graph")
    return proto


def read_metadata(source: OnnxSource) -> dict[str, Any]:
    """The metadata props of an exported model, JSON values decoded (the same decoding as the deploy runtime)."""
    from robustcompress_runtime.runtime import decode_metadata

    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, bytes):
        proto = onnx.load_from_string(source)
    else:
        proto = load_onnx_file(source, load_external_data=False)
    return decode_metadata({e.key: e.value for e in proto.metadata_props})


#: Metadata every file written by 'robustcompress export' carries (what a foreign .onnx lacks).
EXPORT_MARKERS = ("input_size", "layout", "input_range")


def is_robustcompress_export(metadata: dict[str, Any]) -> bool:
    """Whether decoded ONNX metadata comes from 'robustcompress export' (input size, NCHW layout, [0, 1] range)."""
    return all(key in metadata for key in EXPORT_MARKERS)


def graph_input_size(source: str | os.PathLike) -> int | None:
    """The fixed, square spatial size of a graph's first input ([N, C, S, S]), or None when it has none."""
    proto = load_onnx_file(source, load_external_data=False)
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if not inputs:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) == 4 and dims[2] and dims[2] == dims[3]:
        return int(dims[2])
    return None


def onnx_session(source: OnnxSource, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a path, serialised bytes or proto (robustcompress_runtime.make_session)."""
    from robustcompress_runtime.runtime import make_session

    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    return make_session(source if isinstance(source, bytes) else str(source), threads)


def onnx_logits(source: OnnxSource | None, x: np.ndarray, session: Any = None, batch_size: int = 256) -> np.ndarray:
    """Logits from onnxruntime on CPU for a float32 NCHW batch (run in chunks of batch_size)."""
    sess = session or onnx_session(source)  # type: ignore[arg-type]
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    chunks = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks)


def torch_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Logits of the PyTorch model on CPU in eval mode."""
    model = model.cpu()
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(x[i : i + batch_size].cpu().float()) for i in range(0, len(x), batch_size)]).numpy()


def measure_parity(model: nn.Module, source: OnnxSource, x: torch.Tensor, session: Any = None) -> dict[str, float]:
    """How far onnxruntime's logits on x are from the PyTorch model's: max |difference|, arg-max agreement, the
    number of images and the largest |logit| (the scale of fp32 rounding)."""
    ref = torch_logits(model, x)
    got = onnx_logits(source, x.cpu().numpy(), session=session)
    if ref.shape != got.shape:
        raise ParityError(f"exported model gives logits of shape {got.shape}, PyTorch {ref.shape}")
    return {"max_abs_diff": float(np.abs(ref - got).max()),
            "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "n_examples": len(x), "max_abs_logit": float(np.abs(ref).max())}


def parity_bound(parity: dict[str, float], tolerance: float = PARITY_TOLERANCE) -> float:
    """max(tolerance, 1e-5 * max |logit|): absolute for ordinary logits, relative for huge ones."""
    return max(tolerance, PARITY_RELATIVE * parity["max_abs_logit"])


def check_parity(
    model: nn.Module,
    source: OnnxSource,
    x: torch.Tensor,
    tolerance: float = PARITY_TOLERANCE,
    session: Any = None,
) -> dict[str, float]:
    """Compare PyTorch and onnxruntime logits on x; raise ParityError when they differ by more than the bound.

    The bound is max(tolerance, 1e-5 * max |logit|): absolute for ordinary logits, relative for huge ones.
    """
    parity = measure_parity(model, source, x, session)
    diff, agree = parity["max_abs_diff"], parity["argmax_agreement"]
    tolerance = parity_bound(parity, tolerance)
    if not diff <= tolerance:  # also catches NaN
        where = source if isinstance(source, (str, os.PathLike)) else "the exported graph"
        raise ParityError(
            f"{where} differs from PyTorch by {diff:.3g} (> tolerance {tolerance:g}) on {len(x)} images "
            f"(arg-max agreement {agree:.3f}); the export is not the same model and was not written. "
            "Report this with your torch/onnx/onnxruntime versions."
        )
    return {"max_abs_diff": diff, "argmax_agreement": agree, "n_examples": len(x), "tolerance": tolerance}
