"""The one model factory: every way to name a model (timm name, pre-trained source, checkpoint, spec record, module)
becomes a checked ImageClassifier through :func:`resolve_model`, as ``timm.create_model`` does for timm's names.

Teachers, students, bundles, verification targets and the CLI all build their models here; the building blocks
(:mod:`robustcompress.models.core`, :mod:`robustcompress.models.sources`) are not called from anywhere else.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

import torch.nn as nn

from robustcompress.models.core import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageClassifier,
    _unknown_model_error,
    check_classifier,
    load_checkpoint_model,
    load_weights,
    timm_classifier,
)
from robustcompress.models.sources import (
    HF_HUB_PREFIX,
    PRETRAINED_ALIASES,
    PRETRAINED_SUFFIX,
    output_classes,
    timm_pretrained,
)

#: What names a model: a timm name, 'NAME:pretrained', 'hf-hub:ORG/REPO', an alias, 'NAME=CHECKPOINT' or
#: (NAME, CHECKPOINT), a spec record (ImageClassifier.spec(), as a bundle stores it) or an nn.Module.
ModelSpec = Union[str, Sequence[Any], dict, nn.Module]

#: The specs that bring weights, in words for error messages.
SOURCES = ("'NAME:pretrained', 'hf-hub:ORG/REPO', NAME=CHECKPOINT, a (NAME, CHECKPOINT) pair, an alias "
           f"({', '.join(PRETRAINED_ALIASES)})")
FORMS = f"a timm name, {SOURCES}, a bundle's spec record or an nn.Module"


def checkpoint_spec(spec: Any) -> tuple[str, str] | None:
    """(NAME, PATH) when ``spec`` is a timm architecture with a local checkpoint: 'NAME=PATH' or a (NAME, PATH)
    pair; None for anything else."""
    if isinstance(spec, str):
        name, sep, path = spec.partition("=")
        return (name, path) if sep else None
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], os.fspath(spec[1])
    return None


def is_pretrained_source(spec: Any) -> bool:
    """True when ``spec`` brings its own weights (a module, a checkpoint, ':pretrained', 'hf-hub:' or an alias).

    A bare timm name is not: it is an architecture to train from scratch.
    """
    if isinstance(spec, nn.Module) or checkpoint_spec(spec) is not None:
        return True
    if isinstance(spec, str):
        return spec in PRETRAINED_ALIASES or spec.endswith(PRETRAINED_SUFFIX) or spec.startswith(HF_HUB_PREFIX)
    return False


def _required(value: int | None, what: str, spec: Any, role: str) -> int:
    if value is None:
        raise ValueError(f"{role} {spec!r} needs {what}= to be built")
    return value


def _wrapped_module(module: nn.Module, num_classes: int | None, input_size: int | None,
                    channels: int, role: str) -> ImageClassifier:
    """A plain nn.Module taken to read [0, 1] images already (identity normalisation), recorded as its class."""
    size = _required(input_size, "input_size", type(module).__name__, role)
    classes = num_classes if num_classes is not None else output_classes(module, size, channels)
    return ImageClassifier(module, classes, size, (0.0,) * channels, (1.0,) * channels, name=type(module).__name__)


def _from_record(record: dict[str, Any], checkpoint_path: str | os.PathLike | None) -> ImageClassifier:
    """The architecture a spec record (ImageClassifier.spec()) describes, with ``checkpoint_path``'s weights strictly."""
    model = timm_classifier(record["name"], record["num_classes"], record["input_size"], record["mean"],
                            record["std"], small_input=record["small_input"])
    return load_weights(model, checkpoint_path).eval() if checkpoint_path is not None else model


def _from_name(name: str, num_classes: int | None, input_size: int | None, checkpoint_path: str | os.PathLike | None,
               mean: Sequence[float], std: Sequence[float], small_input: bool | None, role: str,
               timm_kwargs: dict[str, Any]) -> ImageClassifier:
    """A string spec: an alias, timm's pre-trained weights (offline), or a fresh timm architecture."""
    if name in PRETRAINED_ALIASES:
        if checkpoint_path is not None:
            raise ValueError(f"{role} '{name}' brings its own weights; pass NAME=CHECKPOINT for other weights")
        return PRETRAINED_ALIASES[name].load().eval()
    if name.endswith(PRETRAINED_SUFFIX) or name.startswith(HF_HUB_PREFIX):
        size = _required(input_size, "input_size", name, role)
        return timm_pretrained(name.removesuffix(PRETRAINED_SUFFIX), size, file=checkpoint_path).eval()
    import timm

    if not timm.is_model(name):
        raise ValueError(f"{_unknown_model_error(name)} Models with weights are named {SOURCES}.")
    if checkpoint_path is not None:
        return load_checkpoint_model(name, checkpoint_path, _required(input_size, "input_size", name, role)).eval()
    return timm_classifier(name, _required(num_classes, "num_classes", name, role),
                           _required(input_size, "input_size", name, role), mean, std, small_input, **timm_kwargs)


def _construct(spec: Any, num_classes: int | None, input_size: int | None, channels: int,
               checkpoint_path: str | os.PathLike | None, mean: Sequence[float], std: Sequence[float],
               small_input: bool | None, role: str, timm_kwargs: dict[str, Any]) -> ImageClassifier:
    """The model ``spec`` names (see resolve_model), before any check."""
    if isinstance(spec, ImageClassifier):
        return spec
    if isinstance(spec, nn.Module):
        return _wrapped_module(spec, num_classes, input_size, channels, role)
    if isinstance(spec, dict):
        return _from_record(spec, checkpoint_path)
    pair = checkpoint_spec(spec)
    if pair is not None:
        if checkpoint_path is not None:
            raise ValueError(f"{role} {spec!r} names its checkpoint already; drop checkpoint_path (CLI: --checkpoint)")
        spec, checkpoint_path = pair
    if isinstance(spec, str):
        return _from_name(spec, num_classes, input_size, checkpoint_path, mean, std, small_input, role, timm_kwargs)
    raise ValueError(f"{role} must be {FORMS}; got {spec!r}")


def resolve_model(
    spec: ModelSpec,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    channels: int = 3,
    checkpoint_path: str | os.PathLike | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    small_input: bool | None = None,
    role: str = "model",
    **timm_kwargs: Any,
) -> ImageClassifier:
    """The model ``spec`` names, as an ImageClassifier that takes [0, 1] images (its normalisation inside).

    ``spec`` is one of:

    - a timm name (``"resnet18"``): freshly initialised for ``num_classes`` and ``input_size`` (its stem adapted to
      images up to 64 px; ``mean``/``std`` its normalisation, ``small_input`` and ``timm_kwargs`` go to timm), or,
      with ``checkpoint_path``, shaped and filled by that checkpoint;
    - ``"NAME=PATH"`` or ``(NAME, PATH)``: timm architecture NAME with a local checkpoint (safetensors, or
      ``torch.load(weights_only=True)``; class count and stem read from the weights);
    - ``"NAME:pretrained"`` or ``"hf-hub:ORG/REPO"``: timm's pre-trained weights from the local cache (nothing is
      downloaded; ``checkpoint_path`` points timm's own loader at a local file instead);
    - an alias from :data:`robustcompress.models.sources.PRETRAINED_ALIASES`;
    - a spec record (:meth:`ImageClassifier.spec`, as a bundle stores it): that exact architecture, with
      ``checkpoint_path``'s weights loaded strictly;
    - an nn.Module: an ImageClassifier is used as it is; another module is taken to read [0, 1] images already.

    Loaded weights (a checkpoint, a pre-trained source) come back in eval mode; a module keeps its own. With
    ``input_size`` the result is checked on one random ``channels`` x ``input_size`` image (and against
    ``num_classes`` when given): a mismatch is a one-line ValueError naming ``role``. The check draws nothing from
    torch's random generator.
    """
    model = _construct(spec, num_classes, input_size, channels, checkpoint_path, mean, std, small_input, role,
                       timm_kwargs)
    if input_size is not None:
        check_classifier(model, num_classes, input_size, channels, f"{role} '{model.name}'")
    return model


def build_model(name: str, num_classes: int, input_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD, small_input: bool | None = None,
                **timm_kwargs: Any) -> ImageClassifier:
    """A freshly initialised timm model: ``resolve_model(name, num_classes=..., input_size=...)`` by its older name."""
    return resolve_model(name, num_classes=num_classes, input_size=input_size, mean=mean, std=std,
                         small_input=small_input, channels=timm_kwargs.get("in_chans", 3), **timm_kwargs)


def create_model(model: ModelSpec, num_classes: int, input_size: int, channels: int = 3,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 role: str = "model") -> ImageClassifier:
    """``resolve_model(model, num_classes=..., input_size=..., ...)`` by its older name: checked against the data's
    classes and image size."""
    return resolve_model(model, num_classes=num_classes, input_size=input_size, channels=channels, mean=mean,
                         std=std, role=role)
