"""ONNX export with normalisation baked in, verified parity and robustness in the metadata, and optional INT8."""
from robustcompress.export.classifier import OnnxClassifier
from robustcompress.export.onnx import ParityError, check_parity, export_onnx, read_metadata
from robustcompress.export.quantize import fake_quant_twin, quantize_int8, verify_int8
from robustcompress.export.verification import craft_adversarial, verify_onnx
from robustcompress.export.student import export_student, onnx_output_path
from robustcompress.export.verified import export_verified, output_paths

__all__ = [
    "OnnxClassifier",
    "ParityError",
    "check_parity",
    "craft_adversarial",
    "export_onnx",
    "export_student",
    "export_verified",
    "fake_quant_twin",
    "onnx_output_path",
    "output_paths",
    "quantize_int8",
    "read_metadata",
    "verify_int8",
    "verify_onnx",
]
