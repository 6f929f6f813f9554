"""Create timm classifiers that normalise inside, adapt their stems to small images, and load checkpoints safely."""
from __future__ import annotations

import difflib
import os
from typing import Any, Sequence

import torch
import torch.nn as nn

from robustcompress.models.checkpoints import (
    check_finite_weights,
    checkpoint_num_classes,
    classifier_prefix,
    describe_mismatch,
    layout_mismatch,
    match_layout,
    read_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_INPUT_MAX = 64


class ImageClassifier(nn.Module):
    """A network that takes images in [0, 1]; normalisation lives here so attacks, ONNX and the demo share pixel space."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        input_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "custom",
        adaptations: Sequence[str] = (),
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.num_classes = num_classes
        self.input_size = input_size
        self.name = name
        self.adaptations = list(adaptations)
        self.small_input = small_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def spec(self) -> dict[str, Any]:
        """What is needed to rebuild this architecture (weights are stored separately)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "small_input": self.small_input,
            "adaptations": self.adaptations,
        }


def _unknown_model_error(name: str) -> ValueError:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown model '{name}'.{hint} Any name from timm.list_models() works, e.g. 'resnet18'.")


def adapt_stem_for_small_inputs(net: nn.Module) -> list[str]:
    """Make the stem keep resolution on small images (stride-1 first conv, no max-pool), as CIFAR networks do.

    Returns a human-readable list of what was changed so it can be recorded with the model.
    """
    if getattr(net, "small_input_ready", False):  # e.g. models.zoo.resnet10t_narrow: its stem is chosen already
        return []
    changes: list[str] = []
    conv1 = getattr(net, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and conv1.stride != (1, 1):
        # ResNet-style 7x7/2 stem becomes the classic CIFAR 3x3/1 stem.
        net.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=conv1.bias is not None)
        changes.append(f"conv1: {conv1.kernel_size[0]}x{conv1.kernel_size[0]} stride {conv1.stride[0]} -> 3x3 stride 1")
    else:
        for mod_name, module in net.named_modules():
            if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
                module.stride = (1, 1)
                changes.append(f"{mod_name}: stride -> 1")
                break
    for attr in ("maxpool", "pool", "stem_pool"):
        if isinstance(getattr(net, attr, None), (nn.MaxPool2d, nn.AvgPool2d)):
            setattr(net, attr, nn.Identity())
            changes.append(f"{attr}: removed")
    stem = getattr(net, "stem", None)
    if isinstance(stem, nn.Module):
        for sub_name, sub in list(stem.named_children()):
            if isinstance(sub, nn.MaxPool2d):
                setattr(stem, sub_name, nn.Identity())
                changes.append(f"stem.{sub_name}: removed")
    return changes


def timm_classifier(
    name: str,
    num_classes: int,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    small_input: bool | None = None,
    **timm_kwargs: Any,
) -> ImageClassifier:
    """A freshly initialised timm model (never downloads weights), stem adapted when input_size <= 64.

    The building block of :func:`robustcompress.models.resolve_model`, which callers use."""
    import timm

    if not timm.is_model(name):
        raise _unknown_model_error(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    net = timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
    small = input_size <= SMALL_INPUT_MAX if small_input is None else small_input
    changes = adapt_stem_for_small_inputs(net) if small else []
    return ImageClassifier(net, num_classes, input_size, mean, std, name=name, adaptations=changes, small_input=small)


def load_weights(model: ImageClassifier, path: str | os.PathLike) -> ImageClassifier:
    """Load a weights file into ``model`` (any layout :mod:`robustcompress.models.checkpoints` accepts), strictly."""
    state = match_layout(read_state_dict(path), model.net)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not fit model '{model.name}' with {model.num_classes} classes: "
            f"{describe_mismatch(state, model.net)}. Check the architecture name and num_classes the checkpoint was "
            "trained with"
        ) from exc
    return model


def load_checkpoint_model(
    name: str,
    path: str | os.PathLike,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> ImageClassifier:
    """timm architecture ``name`` with the weights in ``path``, shaped as the checkpoint says.

    The class count is read from the checkpoint's classifier, and the stem (small-input 3x3 stride-1 or timm's
    own) is the one the checkpoint's weights fit, so a CIFAR checkpoint loads whatever ``input_size`` is. Check
    the class count against the data afterwards (see robustcompress.models.sources.fit_classes).
    """
    state = read_state_dict(path)
    small_default = input_size <= SMALL_INPUT_MAX
    probe = timm_classifier(name, 10, input_size, mean, std, small_input=small_default)
    head = classifier_prefix(probe.net)
    ignore = (head,) if head else ()
    state = match_layout(state, probe.net, ignore)
    classes = checkpoint_num_classes(state, probe.net) or 10
    candidates = [timm_classifier(name, classes, input_size, mean, std, small_input=small) for small in
                  (small_default, not small_default)]
    model = min(candidates, key=lambda m: layout_mismatch(match_layout(state, m.net), m.net))
    state = match_layout(state, model.net)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not fit timm '{name}': {describe_mismatch(state, model.net)}. Check that the "
            "checkpoint was trained with this architecture (the name before '=')"
        ) from exc
    return model


def check_classifier(model: nn.Module, num_classes: int | None, input_size: int, channels: int, role: str) -> None:
    """Run one random image through model and explain any input-size or class-count mismatch (``num_classes``
    None: any class count). The image comes from its own seeded generator: checking draws nothing from torch's."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    image = torch.rand(1, channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(image.to(device))
    except Exception as exc:
        raise ValueError(
            f"{role} cannot classify {channels}x{input_size}x{input_size} images ({type(exc).__name__}: {exc}); "
            "pass input_size= matching the model or a model built for this image size"
        ) from exc
    finally:
        model.train(was_training)
    if not bool(torch.isfinite(out).all()):
        check_finite_weights(dict(model.named_parameters()) | dict(model.named_buffers()), role)
        raise ValueError(f"{role} gives NaN or infinite logits on a random image; check its forward (or its weights)")
    if num_classes is not None and (out.dim() != 2 or out.shape[1] != num_classes):
        got = out.shape[-1] if out.dim() >= 1 else "a scalar"
        raise ValueError(
            f"{role} predicts {got} classes but the data has {num_classes}; pass num_classes={num_classes} "
            "or a checkpoint fine-tuned for this dataset"
        )
