"""timm models wrapped so they take [0, 1] images: one factory (resolve_model) for names, pre-trained sources,
checkpoints, spec records and modules; small-input stems, checkpoints, features."""
from robustcompress.models.core import ImageClassifier, load_weights
from robustcompress.models import zoo  # noqa: F401  (registers the small architectures with timm)
from robustcompress.models.factory import build_model, create_model, is_pretrained_source, resolve_model
from robustcompress.models.pretrained import load_autoattack_resnet18

__all__ = ["ImageClassifier", "build_model", "create_model", "is_pretrained_source", "load_autoattack_resnet18",
           "load_weights", "resolve_model"]
