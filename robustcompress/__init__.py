"""robustcompress: robust small models from big teachers by adversarial knowledge distillation, verified and exported.

    from robustcompress import RobustCompressor
    rc = RobustCompressor(teachers=["resnet18", "vgg11"], student="mobilenetv3_small_050", method="sa-mdrad")
    rc.fit("digits")                       # or an .npz path, a torch Dataset, a DataLoader
    report = rc.evaluate(attacks=("pgd20", "autoattack"))
    rc.export_onnx("student.onnx")         # normalisation inside, verified numbers in the metadata

The names below are imported on first use, so ``from robustcompress.attacks import pgd`` loads the attack layer
alone (not onnx, onnxruntime or the training code).
"""
from __future__ import annotations

from robustcompress.lazy import lazy_names

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "CompressConfig": "robustcompress.settings",
    "DataBundle": "robustcompress.data",
    "EvalReport": "robustcompress.verify",
    "ImageClassifier": "robustcompress.models",
    "Method": "robustcompress.methods",
    "RobustCompressor": "robustcompress.compressor",
    "StepContext": "robustcompress.methods",
    "create_method": "robustcompress.methods",
    "create_model": "robustcompress.models",
    "evaluate": "robustcompress.verify",
    "fgsm": "robustcompress.attacks",
    "get_attack": "robustcompress.attacks",
    "list_attacks": "robustcompress.attacks",
    "list_methods": "robustcompress.methods",
    "load_data": "robustcompress.data",
    "load_weights": "robustcompress.models",
    "pgd": "robustcompress.attacks",
    "register_attack": "robustcompress.attacks",
    "register_method": "robustcompress.methods",
    "resolve_model": "robustcompress.models",
    "run_autoattack": "robustcompress.attacks",
    "train_teacher": "robustcompress.teachers",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
