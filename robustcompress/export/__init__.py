"""ONNX export with normalisation baked in, verified parity and robustness in the metadata, and optional INT8.

The names below are imported on first use: importing the package (or PARITY_TOLERANCE) loads neither onnx (about
a second) nor onnxruntime, so code that may export later, such as RobustCompressor, starts without them.
"""
from __future__ import annotations

from robustcompress.lazy import lazy_names

#: The largest |logit difference| between PyTorch and onnxruntime an export may show.
PARITY_TOLERANCE = 1e-4
#: The most a caller may raise it to: a larger difference is no float rounding, the graph computes something else.
MAX_PARITY_TOLERANCE = 1e-2


def check_export_arguments(*, n_parity: int, calibration_examples: int, attack_steps: int, tolerance: float,
                           latency_runs: int) -> None:
    """Raise a ValueError naming the first export argument outside its range (before any data is loaded)."""
    from robustcompress.arguments import require_int, require_number

    for name, value, least in (("n_parity", n_parity, 1), ("calibration_examples", calibration_examples, 1),
                               ("attack_steps", attack_steps, 1), ("latency_runs", latency_runs, 0)):
        require_int(name, value, least=least)
    require_number("tolerance", tolerance, above=0, most=MAX_PARITY_TOLERANCE,
                   hint=f"the default {PARITY_TOLERANCE:g} is float rounding; a graph that needs more is wrong")

#: public name -> the module that defines it
_LAZY = {
    "OnnxClassifier": "robustcompress.export.classifier",
    "ParityError": "robustcompress.export.onnx",
    "check_parity": "robustcompress.export.onnx",
    "craft_adversarial": "robustcompress.export.verification",
    "export_onnx": "robustcompress.export.onnx",
    "export_student": "robustcompress.export.student",
    "export_verified": "robustcompress.export.verified",
    "fake_quant_twin": "robustcompress.export.quantize",
    "onnx_output_path": "robustcompress.export.student",
    "output_paths": "robustcompress.export.verified",
    "quantize_int8": "robustcompress.export.quantize",
    "read_metadata": "robustcompress.export.onnx",
    "verify_int8": "robustcompress.export.quantize",
    "verify_onnx": "robustcompress.export.verification",
}

__all__ = ["PARITY_TOLERANCE", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
