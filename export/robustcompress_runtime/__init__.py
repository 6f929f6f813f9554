"""The deploy side of robustcompress: run exported .onnx classifiers with onnxruntime, numpy and Pillow only.

It never imports torch or robustcompress, so it installs and runs where neither is present:

    from robustcompress_runtime import load_model, classify
    model = load_model("student.onnx")
    print(model.describe())                      # input size, classes, eps and the verified accuracies
    print(classify(model, ["digit.png"])[0]["label"])

``python -m robustcompress_runtime student.onnx digit.png`` (or ``.runtime``) classifies from the command line,
``python -m robustcompress_runtime.benchmark`` measures latency, and ``robustcompress_runtime.images`` holds the one
picture -> model-input conversion that training data, this runtime and the demo share.
"""
from typing import Any

__all__ = ["DeployedModel", "classify", "load_images", "load_model", "logits", "make_session"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m robustcompress_runtime.runtime` does not find the module already loaded.
    if name in __all__:
        from robustcompress_runtime import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'robustcompress_runtime' has no attribute '{name}'")
