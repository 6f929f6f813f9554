"""Real pre-trained weights we may ship without downloading: pyautoattack's CIFAR-10 ResNet-18 as a timm resnet18."""
from __future__ import annotations

import importlib.resources

import torch

from robustcompress.models.checkpoints import classic_resnet_to_timm
from robustcompress.models.core import ImageClassifier, timm_classifier

__all__ = ["CIFAR10_CLASSES", "classic_resnet_to_timm", "load_autoattack_resnet18", "read_autoattack_resnet18_state"]

#: Where the checkpoint lives inside the installed pyautoattack package (it ships with the authors' eval example).
AUTOATTACK_PACKAGE = "pyautoattack"
AUTOATTACK_RESNET18_RESOURCE = ("examples", "model_test.pt")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# pyautoattack's examples/eval.py feeds transforms.ToTensor() output straight into the network, so the checkpoint
# was trained on unnormalised [0, 1] pixels: the wrapper's normalisation must be the identity.
AUTOATTACK_RESNET18_MEAN = (0.0, 0.0, 0.0)
AUTOATTACK_RESNET18_STD = (1.0, 1.0, 1.0)


def read_autoattack_resnet18_state() -> dict[str, torch.Tensor]:
    """The raw state dict of pyautoattack's ``examples/model_test.pt``, found through importlib.resources."""
    try:
        package = importlib.resources.files(AUTOATTACK_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the CIFAR-10 ResNet-18 teacher ships inside the pyautoattack package; install it with "
            "`pip install 'pyautoattack>=0.2'`"
        ) from exc
    resource = package.joinpath(*AUTOATTACK_RESNET18_RESOURCE)
    if not resource.is_file():
        raise FileNotFoundError(
            f"{AUTOATTACK_PACKAGE} is installed but has no {'/'.join(AUTOATTACK_RESNET18_RESOURCE)}; this loader "
            "needs pyautoattack 0.2, which bundles that checkpoint (`pip install 'pyautoattack==0.2.*'`)"
        )
    with importlib.resources.as_file(resource) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict; the pyautoattack install is odd")
    return state


def load_autoattack_resnet18(device: torch.device | str = "cpu") -> ImageClassifier:
    """pyautoattack's standard (non-robust) CIFAR-10 ResNet-18 in the SDK's small-input timm ``resnet18``, in eval mode.

    The wrapper takes [0, 1] RGB 32x32 images (the checkpoint expects unnormalised pixels) and predicts the ten
    CIFAR-10 classes in the usual order (:data:`CIFAR10_CLASSES`). It scores about 94% clean on CIFAR-10 test images
    and 0% under PGD at eps 8/255. The architectures agree exactly: both have a 3x3 stride-1 stem without max-pool,
    the same BasicBlocks, and a global average pool (timm's adaptive pool equals the original ``avg_pool2d(out, 4)``
    on 32x32 inputs).
    """
    model = timm_classifier(
        "resnet18", len(CIFAR10_CLASSES), 32, mean=AUTOATTACK_RESNET18_MEAN, std=AUTOATTACK_RESNET18_STD,
        small_input=True,
    )
    state = classic_resnet_to_timm(read_autoattack_resnet18_state())
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            "pyautoattack's model_test.pt does not fit timm's resnet18 after renaming shortcut->downsample and "
            f"linear->fc ({str(exc).splitlines()[0]}); a different timm or pyautoattack version may have changed "
            "the layer names"
        ) from exc
    return model.to(device).eval()
