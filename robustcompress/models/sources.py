"""Pre-trained models from anywhere, without touching the network (built through
:func:`robustcompress.models.resolve_model`, the one factory).

A model source is one of:

- ``"NAME:pretrained"``: timm architecture NAME (a tag such as ``resnet18.a1_in1k`` picks the weights) with timm's
  pre-trained weights from the Hugging Face cache;
- ``"hf-hub:ORG/REPO"``: a timm model on the Hugging Face hub, from the cache;
- ``(NAME, PATH)``: timm architecture NAME with a local checkpoint (any layout
  :mod:`robustcompress.models.checkpoints` reads: plain, wrapped, ``module.``-prefixed, safetensors, classic CIFAR
  ResNet), or ``"NAME=PATH"`` (as on the command line);
- an alias from :data:`PRETRAINED_ALIASES`, e.g. ``"cifar10_resnet18_autoattack"``.

Nothing is ever downloaded: hub look-ups run with ``HF_HUB_OFFLINE=1``, and weights that are not cached give a
one-line error saying how to point at a local file instead. A bare timm name (``"resnet18"``) is not a source of
weights: the SDK trains such a teacher from scratch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from robustcompress.models.core import ImageClassifier, _unknown_model_error
from robustcompress.models.pretrained import CIFAR10_CLASSES, load_autoattack_resnet18

PRETRAINED_SUFFIX = ":pretrained"
HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class PretrainedAlias:
    """A pre-trained model known by a short name: how to load it and which classes it predicts, in order."""

    load: Callable[[], ImageClassifier]
    class_names: tuple[str, ...]
    summary: str


#: Short names for pre-trained models that need no download.
PRETRAINED_ALIASES: dict[str, PretrainedAlias] = {
    "cifar10_resnet18_autoattack": PretrainedAlias(
        load_autoattack_resnet18, CIFAR10_CLASSES,
        "pyautoattack's standard (not robust) CIFAR-10 ResNet-18: [0, 1] 32x32 images, 94% clean on CIFAR-10 test",
    ),
}


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Hugging Face hub calls inside this block read the local cache only (HF_HUB_OFFLINE=1) and never download."""
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants: Any = None
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    saved_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read at import time; the environment variable alone is too late
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def _offline_error(name: str, where: str, arch: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"pre-trained weights for '{name}' are not available offline ({where}); fetch them once with network "
        f"access (python -c \"import timm; timm.create_model('{name}', pretrained=True)\") or point at a local "
        f"file: teachers=[('{arch}', 'weights.safetensors')] (CLI: --teachers {arch}=weights.safetensors)"
    )


def _check_cached_url_weights(name: str, arch: str) -> None:
    """For timm weights hosted at a plain URL (no hub id): fail unless torch.hub already cached the file."""
    from timm.models import get_pretrained_cfg
    from timm.models._builder import _resolve_pretrained_source

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pre-trained weights for '{name}'; pass a local checkpoint instead: "
                         f"teachers=[('{arch}', 'weights.safetensors')] (CLI: --teachers {arch}=weights.safetensors)")
    source, location = _resolve_pretrained_source(cfg.to_dict())
    if source == "url":
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(str(location)).name
        if not cached.is_file():
            raise _offline_error(name, f"{location} is not in the torch hub cache {cached.parent}", arch)
    elif source not in ("hf-hub", "file", "local-dir", "state_dict"):
        raise ValueError(f"timm has no pre-trained weights for '{name}'; pass a local checkpoint instead: "
                         f"teachers=[('{arch}', 'weights.safetensors')] (CLI: --teachers {arch}=weights.safetensors)")


def timm_pretrained(name: str, input_size: int, *, file: str | os.PathLike | None = None) -> ImageClassifier:
    """timm model ``name`` (``resnet18``, ``resnet18.a1_in1k`` or ``hf-hub:ORG/REPO``) with its pre-trained weights.

    The weights come from the Hugging Face cache (offline: nothing is downloaded) or, with ``file``, from that local
    file through timm's own loader (``pretrained_cfg_overlay=dict(file=...)``, which applies timm's checkpoint
    filters). The model keeps timm's stem, its class count and its normalisation (mean/std from the weights' config).
    """
    import timm

    hub = name.startswith(HF_HUB_PREFIX)
    # The architecture to name in a hint: 'resnet18' for 'resnet18.a1_in1k' and for 'hf-hub:timm/resnet18.a1_in1k'.
    arch = name.removeprefix(HF_HUB_PREFIX).rsplit("/", 1)[-1].split(".", 1)[0]
    if not hub and not timm.is_model(name):
        raise _unknown_model_error(name)
    if file is not None and not Path(file).is_file():
        raise FileNotFoundError(f"pre-trained weights file {file} does not exist; check the path")
    if file is None and not hub:
        _check_cached_url_weights(name, arch)
    overlay = {"file": str(file)} if file is not None else None
    try:
        with offline_hub():
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:
        if file is not None:
            raise ValueError(f"{file} could not be loaded as timm's pre-trained weights for '{name}' "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        repo = name.removeprefix(HF_HUB_PREFIX) if hub else getattr(
            timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or name
        raise _offline_error(name, f"{repo} is not in the Hugging Face cache {_hub_cache()}", arch) from exc
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return ImageClassifier(
        net, int(getattr(net, "num_classes", cfg.get("num_classes", 0))), input_size,
        cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)),
        name=cfg.get("architecture") or arch, small_input=False,
    )


def output_classes(model: nn.Module, input_size: int, channels: int = 3) -> int:
    """How many classes ``model`` predicts, found by classifying one blank image."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(model(torch.zeros(1, channels, input_size, input_size, device=device)).shape[-1])
    finally:
        model.train(was_training)


def replace_classifier(model: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """Give ``model`` a freshly initialised (seeded) classifier head for ``num_classes`` classes, via timm's
    ``reset_classifier``; raises ValueError for a model without one."""
    net = model.net if isinstance(model, ImageClassifier) else model
    reset = getattr(net, "reset_classifier", None)
    if reset is None:
        raise ValueError(f"cannot replace the classifier head of {type(net).__name__}: it has no reset_classifier(); "
                         f"pass a timm model or one that predicts {num_classes} classes")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset(num_classes)
    model.to(device)
    if isinstance(model, ImageClassifier):
        model.num_classes = num_classes
    return model
