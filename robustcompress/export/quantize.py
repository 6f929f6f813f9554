"""INT8 static quantization (onnxruntime QDQ, per-channel) and what it costs in accuracy and robustness."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from robustcompress.export.onnx import OnnxSource, load_onnx_file, onnx_logits, onnx_session, torch_logits
from robustcompress.export.verification import accuracy, attack_description, craft_adversarial

WEIGHT_QMAX = 127  # onnxruntime's symmetric int8 range is [-127, 127]
ACTIVATION_QMAX = 255  # activations: asymmetric uint8


def _calibration_reader(images: np.ndarray, input_name: str, batch_size: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration images to onnxruntime's calibrator in batches."""

        def __init__(self) -> None:
            self.batches = iter([{input_name: np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32)}
                                 for i in range(0, len(images), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def quantize_int8(
    source: OnnxSource,
    calibration_images: np.ndarray,
    per_channel: bool = True,
    batch_size: int = 32,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Statically quantize an fp32 model: QDQ format, int8 per-channel weights, uint8 activations, MinMax calibration.

    ``calibration_images`` are float32 NCHW images in [0, 1], ideally from the training split. Returns the
    quantized model (not yet written; metadata of the source is kept) and the settings used.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_images) == 0:
        raise ValueError("INT8 calibration needs at least one image; pass training images")
    if isinstance(source, (bytes, onnx.ModelProto)):
        proto = source if isinstance(source, onnx.ModelProto) else onnx.load_from_string(source)
    else:
        proto = load_onnx_file(source)
    with tempfile.TemporaryDirectory(prefix="rc-int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # Shape inference and graph optimisation (BN folding, fusions) first, as onnxruntime recommends.
        quant_pre_process(proto, str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            _calibration_reader(calibration_images, proto.graph.input[0].name, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,  # U8S8 is the fast path of onnxruntime's x86 kernels
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
    settings = {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "weights": "int8 symmetric" + (", per output channel" if per_channel else ", per tensor"),
        "activations": "uint8 asymmetric, per tensor",
        "calibration": "MinMax",
        "calibration_examples": int(len(calibration_images)),
    }
    return result, settings


def _quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Round-trip a weight through symmetric int8, one scale per output channel (axis 0), as onnxruntime does."""
    absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(torch.finfo(weight.dtype).tiny)
    scale = (absmax / WEIGHT_QMAX).view(-1, *([1] * (weight.dim() - 1)))
    return (weight / scale).round().clamp(-WEIGHT_QMAX, WEIGHT_QMAX) * scale


def _activation_quantizer(low: float, high: float) -> Any:
    """A forward pre-hook rounding a layer's input to uint8 on the calibrated range (straight-through gradient)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / ACTIVATION_QMAX, float(np.finfo(np.float32).tiny))
    zero_point = float(np.clip(round(-low / scale), 0, ACTIVATION_QMAX))

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        rounded = ((x / scale).round() + zero_point).clamp(0, ACTIVATION_QMAX)
        dequantized = (rounded - zero_point) * scale
        return (x + (dequantized - x).detach(), *inputs[1:])

    return hook


def fake_quant_twin(model: nn.Module, calibration_images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """A differentiable PyTorch stand-in for the int8 graph, so white-box attacks can target the quantized model.

    Reconstruction, not a bit-exact copy: every Conv2d/Linear gets its weights rounded to int8 per output channel
    (which equals onnxruntime's rounding of the BN-folded weights, since per-channel symmetric scales follow a
    per-channel BN factor) and its input rounded to uint8 on the MinMax range seen on the calibration images.
    onnxruntime also quantizes the inputs of other ops (Add, Mul, ...), which the twin leaves in float; how close
    the twin is gets measured as its arg-max agreement with the int8 model.
    """
    twin = copy.deepcopy(model).cpu().eval()
    layers = [m for m in twin.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError("the model has no Conv2d or Linear layers to quantize; it cannot have an int8 twin")
    ranges = {id(m): [float("inf"), float("-inf")] for m in layers}

    def observe(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen = ranges[id(module)]
        seen[0] = min(seen[0], inputs[0].min().item())
        seen[1] = max(seen[1], inputs[0].max().item())

    handles = [m.register_forward_pre_hook(observe) for m in layers]
    try:
        with torch.no_grad():
            for start in range(0, len(calibration_images), batch_size):
                twin(calibration_images[start : start + batch_size].cpu().float())
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(_quantize_weight(layer.weight))
            layer.register_forward_pre_hook(_activation_quantizer(*ranges[id(layer)]))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def verify_int8(
    model: nn.Module,
    source: OnnxSource,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    x_adv_float: torch.Tensor,
    fp32_logits: np.ndarray,
    calibration_images: torch.Tensor,
    steps: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Clean accuracy, agreement with fp32, and robust accuracy of the int8 graph under two attacks.

    transfer: the adversarial images crafted on the float PyTorch model (``x_adv_float``);
    twin: the same PGD re-run white-box on fake_quant_twin(model).
    robust_acc counts an image as robust only when it survives both.
    """
    session = onnx_session(source)
    clean_logits = onnx_logits(None, x.numpy(), session=session)
    clean_acc, clean_ok = accuracy(clean_logits, y)
    transfer_acc, transfer_ok = accuracy(onnx_logits(None, x_adv_float.numpy(), session=session), y)
    twin = fake_quant_twin(model, calibration_images)
    twin_agreement = float((torch_logits(twin, x).argmax(1) == clean_logits.argmax(1)).mean())
    x_adv_twin = craft_adversarial(twin, x, y, eps, steps, seed, progress=progress)
    attack = f"pgd{steps}"
    twin_acc, twin_ok = accuracy(onnx_logits(None, x_adv_twin.numpy(), session=session), y)
    return {
        "n_examples": len(x),
        "clean_acc": clean_acc,
        "robust_acc": {attack: float((transfer_ok & twin_ok).mean())},
        "robust_acc_transfer": {attack: transfer_acc},
        "robust_acc_twin": {attack: twin_acc},
        "worst_case_acc": float((clean_ok & transfer_ok & twin_ok).mean()),
        "argmax_agreement_with_fp32": float((clean_logits.argmax(1) == fp32_logits.argmax(1)).mean()),
        "max_abs_logit_diff_vs_fp32": float(np.abs(clean_logits - fp32_logits).max()),
        "twin_argmax_agreement_with_int8": twin_agreement,
        "attack": {
            "transfer": attack_description(steps, eps, seed, "the float PyTorch model, classified by the int8 model"),
            "twin": attack_description(steps, eps, seed, "a fake-quantized PyTorch twin of the int8 model "
                                       "(reconstruction), classified by the int8 model"),
        },
    }
