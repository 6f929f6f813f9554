"""Load an exported robustcompress .onnx and classify images with onnxruntime, numpy and Pillow only (no torch).

    python -m robustcompress_runtime.runtime student.onnx digit.png [more.png ...] [--top-k 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from robustcompress_runtime.images import picture_to_array

#: What classify() and load_images() accept as one image.
ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


@dataclass
class DeployedModel:
    """An onnxruntime session plus what its metadata says about inputs, classes and verified robustness."""

    path: str
    session: ort.InferenceSession
    metadata: dict[str, Any]
    input_name: str
    input_size: int
    channels: int
    class_labels: list[str] = field(default_factory=list)

    def label(self, index: int) -> str:
        return self.class_labels[index] if index < len(self.class_labels) else str(index)

    def describe(self) -> str:
        """One line: architecture, precision, classes, input, the eps it was trained for and its verified accuracy."""
        meta = self.metadata
        parts = [f"{meta.get('student', 'model')} ({meta.get('precision', 'fp32')})",
                 f"{len(self.class_labels) or '?'} classes", f"{self.input_size}x{self.input_size} input"]
        if isinstance(meta.get("eps"), (int, float)):
            parts.append(f"method {meta.get('method', '?')}, L-inf eps {meta['eps']:.4f} ({meta['eps'] * 255:.1f}/255)")
        check = meta.get("verification")
        if isinstance(check, dict) and "clean_acc" in check:
            robust = ", ".join(f"{k} {v:.3f}" for k, v in check.get("robust_acc", {}).items())
            parts.append(f"verified on {check.get('n_examples', '?')} images: clean {check['clean_acc']:.3f}, {robust}")
        return "; ".join(parts)


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """JSON-decode metadata values where they are JSON (plain strings stay strings)."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def unreadable_model_error(path: str | os.PathLike, cause: str) -> ValueError:
    """The one-line error for a file that is not an ONNX model (truncated, empty, another format)."""
    cause = cause.strip().splitlines()[0] if cause.strip() else "empty"
    return ValueError(f"{path} is not a readable ONNX model ({cause}); it may be truncated or another kind of file: "
                      "pass the .onnx 'robustcompress export' wrote, or export it again")


def make_session(source: str | os.PathLike | bytes, threads: int | None = None) -> ort.InferenceSession:
    """The one onnxruntime session factory (runtime, export checks, ``evaluate`` and the demo all use it).

    ``source`` is a path or a serialised model; CPU execution provider; ``threads`` sets the intra-op thread count
    (default: onnxruntime's choice). A file onnxruntime cannot load is a ValueError naming it.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if isinstance(source, bytes):
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    try:
        return ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  onnxruntime raises its own types (InvalidArgument, Fail, ...) for bad files
        if not Path(source).is_file():
            raise FileNotFoundError(f"ONNX file {source} does not exist; check the path") from exc
        raise unreadable_model_error(source, f"onnxruntime: {exc}") from exc


def check_classifier_signature(session: ort.InferenceSession, path: str | os.PathLike, input_size: int, channels: int = 3) -> int:
    """Raise a ValueError, naming the file and what it takes, unless the graph maps [N, C, S, S] float32 images to
    [N, K] logits (S = input_size); return the batch size it needs (0: any, 1: a graph fixed to batch 1).

    robustcompress feeds [0, 1] NCHW float32 images; a foreign graph (NHWC, another size, float16, several inputs)
    would otherwise fail deep inside onnxruntime with a bare INVALID_ARGUMENT.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    first = inputs[0]
    shape = list(first.shape)
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}), not one")
    if first.type != "tensor(float)":
        problems.append(f"input type {first.type}, not float32")
    if len(shape) != 4:
        problems.append(f"a rank-{len(shape)} input, not [N, C, H, W]")
    else:
        fixed = [isinstance(d, int) for d in shape]
        nhwc = fixed[1] and shape[1] != channels and fixed[3] and shape[3] == channels
        if nhwc:
            problems.append("a channels-last (NHWC) input, not NCHW")
        elif fixed[1] and shape[1] != channels:
            problems.append(f"{shape[1]} input channels, not {channels}")
        spatial = shape[1:3] if nhwc else shape[2:4]
        if any(isinstance(d, int) and d != input_size for d in spatial):
            problems.append(f"{spatial[0]}x{spatial[1]} pixel inputs, not the data's {input_size}x{input_size}")
    if isinstance(shape[0], int) and shape[0] != 1:
        problems.append(f"a fixed batch of {shape[0]} (export it with a dynamic batch axis)")
    if len(outputs[0].shape) != 2:
        problems.append(f"a rank-{len(outputs[0].shape)} first output, not [N, classes] logits")
    if problems:
        raise ValueError(
            f"{path} takes {first.name}: {first.type} {shape} and cannot be fed robustcompress's [N, {channels}, "
            f"{input_size}, {input_size}] float32 images in [0, 1]: {'; '.join(dict.fromkeys(problems))}. Pass a "
            "file written by 'robustcompress export', or re-export yours with NCHW float32 input in [0, 1] "
            "(normalisation inside) at the data's size"
        )
    batch = shape[0]
    return batch if isinstance(batch, int) else 0


def load_model(path: str | os.PathLike, threads: int | None = None) -> DeployedModel:
    """Open an exported .onnx; input size, channels and labels come from its metadata (or, failing that, its graph)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist; pass the .onnx written by 'robustcompress export'")
    session = make_session(path, threads)
    metadata = decode_metadata(dict(session.get_modelmeta().custom_metadata_map))
    model_input = session.get_inputs()[0]
    shape = model_input.shape  # [batch, C, H, W]; batch is symbolic
    if "input_size" not in metadata:
        # A foreign file: only an NCHW float32 classifier can be fed. Say what it takes instead of misreading an
        # NHWC [N, H, W, 3] input as 'H-channel images of size 3'.
        spatial = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 0
        wanted = shape[1] if len(shape) == 4 and shape[1] in (1, 3) else 3
        check_classifier_signature(session, path, spatial, wanted)
    channels = shape[1] if isinstance(shape[1], int) else 3
    size = metadata.get("input_size") or (shape[-1] if isinstance(shape[-1], int) else None)
    if not isinstance(size, int):
        raise ValueError(f"{path} records no input size (metadata 'input_size' or a fixed input shape); re-export it")
    labels = [str(c) for c in metadata.get("class_labels") or []]
    return DeployedModel(str(path), session, metadata, model_input.name, size, channels, labels)


def image_to_chw(image: ImageLike, size: int, channels: int = 3, what: str = "image") -> np.ndarray:
    """One image (file path, PIL image, HW/HWC array of uint8, uint16 or [0, 1] floats) as float32 CHW in [0, 1].

    Converted by robustcompress_runtime.images.picture_to_array, the rule training data and the demo use too.
    """
    try:
        hwc = picture_to_array(image, size)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    if channels == 1:
        hwc = hwc @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
    elif channels != 3:
        raise ValueError(f"the model takes {channels}-channel images; only 1- and 3-channel models are supported")
    return np.ascontiguousarray(hwc.transpose(2, 0, 1), dtype=np.float32)


def load_images(images: ImageLike | Sequence[ImageLike], size: int, channels: int = 3) -> np.ndarray:
    """A float32 NCHW batch in [0, 1] from image files, PIL images or arrays.

    A 4-D array is a batch: NCHW when its second axis has ``channels`` entries and its last does not
    (used as is, after a range check and resize), otherwise NHWC.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1] == channels and images.shape[-1] != channels:
            images = images.transpose(0, 2, 3, 1)
        return np.stack([image_to_chw(img, size, channels, f"image {i}") for i, img in enumerate(images)])
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    batch = [image_to_chw(img, size, channels, f"image {i}") for i, img in enumerate(images)]
    if not batch:
        raise ValueError("no images given; pass at least one image file or array")
    return np.stack(batch)


def logits(model: DeployedModel, batch: np.ndarray) -> np.ndarray:
    """Raw logits for a preprocessed float32 NCHW batch."""
    return model.session.run(None, {model.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classify(model: DeployedModel, images: ImageLike | Sequence[ImageLike], top_k: int = 1) -> list[dict[str, Any]]:
    """Predictions for image files or arrays: index, label, probability and the top_k (label, probability) pairs."""
    probs = softmax(logits(model, load_images(images, model.input_size, model.channels)))
    results = []
    for row in probs:
        order = np.argsort(-row)[: max(1, top_k)]
        results.append({
            "index": int(order[0]),
            "label": model.label(int(order[0])),
            "probability": float(row[order[0]]),
            "top": [{"label": model.label(int(i)), "probability": float(row[i])} for i in order],
        })
    return results


def _error_line(exc: BaseException) -> str:
    """One line for a failure: our own ValueErrors as written, file errors with their path, others marked."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.strerror:
        text = f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "") + "; check the path and rerun"
    elif isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    lines = [line for line in text.splitlines() if line.strip()] or [text]
    return lines[0] + (" [more with --debug]" if len(lines) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print one prediction per image."""
    parser = argparse.ArgumentParser(
        prog="python -m robustcompress_runtime.runtime",
        description="Classify images with an exported robustcompress ONNX model (onnxruntime, numpy, Pillow only).",
    )
    parser.add_argument("model", help="the .onnx file written by 'robustcompress export'")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...); resized to the model's input size")
    parser.add_argument("--top-k", type=int, default=1, help="also list the k most likely classes")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.threads)
        predictions = classify(model, args.images, top_k=args.top_k)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("robustcompress_runtime: interrupted; rerun the same command", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: one line for any failure, the traceback only with --debug
        if args.debug:
            raise
        print(f"robustcompress_runtime: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"image": str(p), **r} for p, r in zip(args.images, predictions)], indent=2))
        return 0
    print(f"model: {model.describe()}")
    for image, result in zip(args.images, predictions):
        line = f"{image}: {result['label']} (probability {result['probability']:.3f})"
        if args.top_k > 1:
            line += "  top: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top"])
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
