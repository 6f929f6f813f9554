"""timm models wrapped so they take [0, 1] images: creation by name, small-input stems, checkpoints, features."""
from robustcompress.models.core import (
    ImageClassifier,
    build_model,
    create_model,
    load_weights,
    model_from_spec,
)
from robustcompress.models import zoo  # noqa: F401  (registers the small architectures with timm)
from robustcompress.models.pretrained import load_autoattack_resnet18

__all__ = ["ImageClassifier", "build_model", "create_model", "load_autoattack_resnet18", "load_weights",
           "model_from_spec"]
