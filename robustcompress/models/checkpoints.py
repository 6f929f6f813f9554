"""Read weights files from anywhere and fit their key layout to a timm network.

Accepted: safetensors files and weights-only ``torch.save`` files holding a state dict, bare or wrapped in a dict
under ``state_dict``, ``model``, ``model_state_dict``, ``net`` or ``student`` (training scripts' checkpoints), with
``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) prefixes, or one prefix shared by every key (e.g.
``net.`` from this SDK's wrapper, ``model.`` from Lightning). The classic CIFAR ResNet layout (kuangliu/pytorch-cifar,
RobustBench, pyautoattack: ``shortcut`` and ``linear``) is renamed to timm's ResNet names when that fits better.
Pickled whole models are refused: unpickling runs arbitrary code.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

#: Dict keys under which training scripts store the weights, looked into in this order (repeatedly).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "student")
#: Per-key prefixes left by wrappers: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# The classic CIFAR ResNet (kuangliu/pytorch-cifar style) and timm's ResNet differ only in two module names.
_CLASSIC_TO_TIMM = ((re.compile(r"\.shortcut\."), ".downsample."), (re.compile(r"^linear\."), "fc."))


def classic_resnet_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a classic CIFAR ResNet state dict (``shortcut``, ``linear``) to timm ResNet names (``downsample``, ``fc``).

    A ``module.`` prefix left by DataParallel is dropped; every other name (conv1, bn1, layerN.M.convK/bnK) is
    already shared by both implementations.
    """
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = name.removeprefix("module.")
        for pattern, replacement in _CLASSIC_TO_TIMM:
            new = pattern.sub(replacement, new)
        renamed[new] = tensor
    return renamed


def is_classic_resnet(state: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys follow the classic CIFAR ResNet layout (a ``linear`` head or ``shortcut`` branches)."""
    return any(k.startswith("linear.") or ".shortcut." in k for k in state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (see the module docstring); never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {path} could not be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "It may be truncated, not a weights file, or a pickled model; re-save it with safetensors or "
            "torch.save(model.state_dict())."
        ) from exc
    unwrapped = True
    while unwrapped and isinstance(state, dict):
        unwrapped = False
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state, unwrapped = state[key], True
                break
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict; save "
                         "model.state_dict() instead")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key.removeprefix(prefix), True
        tensors[key] = value
    if not tensors:
        raise ValueError(f"checkpoint {path} holds no tensors; save model.state_dict()")
    check_finite_weights(tensors, f"checkpoint {path}")
    return tensors


#: How many key names a one-line error lists before "...".
SHOWN_KEYS = 3


def _some(names: list[str], quote: bool = True) -> str:
    shown = ", ".join(f"'{n}'" if quote else n for n in names[:SHOWN_KEYS])
    return shown + (", ..." if len(names) > SHOWN_KEYS else "")


def check_finite_weights(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged or damaged run): they would turn every logit into NaN."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{what} holds NaN or infinite values in {len(bad)} of {len(state)} tensors ({_some(bad)}), "
                         "as a diverged or damaged training run leaves; use an earlier checkpoint or train again")


def describe_mismatch(state: Mapping[str, torch.Tensor], net: nn.Module, ignore: tuple[str, ...] = ()) -> str:
    """What keeps ``state`` from loading into ``net``: the missing, unexpected and wrongly shaped keys, a few named
    (the counts of layout_mismatch)."""
    target = net.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [f"'{k}' {tuple(v.shape)} in the file, {tuple(target[k].shape)} in the model" for k, v in state.items()
             if k in target and tuple(v.shape) != tuple(target[k].shape) and not k.startswith(ignore)]
    parts = [f"{len(missing)} missing ({_some(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({_some(unexpected)})"] if unexpected else []
    parts += [f"{len(wrong)} of the wrong shape ({_some(wrong, quote=False)})"] if wrong else []
    return ", ".join(parts) or "the keys match"


def _shared_prefix(state: Mapping[str, torch.Tensor]) -> str | None:
    """The first dotted component when every key starts with the same one (e.g. 'net.'), else None."""
    heads = {k.split(".", 1)[0] for k in state if "." in k}
    if len(heads) == 1 and all("." in k for k in state):
        return heads.pop() + "."
    return None


def layout_mismatch(state: Mapping[str, torch.Tensor], net: nn.Module, ignore: tuple[str, ...] = ()) -> int:
    """How many keys are missing, unexpected or of the wrong shape when loading ``state`` into ``net``.

    Keys starting with a prefix in ``ignore`` (e.g. the classifier, whose size may legitimately differ) count only
    when missing or unexpected.
    """
    target = net.state_dict()
    missing = sum(1 for k in target if k not in state)
    unexpected = sum(1 for k in state if k not in target)
    wrong = sum(1 for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)
                and not k.startswith(ignore))
    return missing + unexpected + wrong


def match_layout(state: Mapping[str, torch.Tensor], net: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``state`` renamed to fit ``net`` best: as it is, without a prefix shared by every key, or from the classic
    CIFAR ResNet layout (both, when needed)."""
    candidates = [dict(state)]
    prefix = _shared_prefix(state)
    if prefix is not None:
        candidates.append({k.removeprefix(prefix): v for k, v in state.items()})
    for candidate in list(candidates):
        if is_classic_resnet(candidate):
            candidates.append(classic_resnet_to_timm(candidate))
    return min(candidates, key=lambda c: layout_mismatch(c, net, ignore))


def classifier_prefix(net: nn.Module) -> str | None:
    """The module path of a timm network's classifier (e.g. 'fc' or 'head.fc'), None when it has none."""
    get = getattr(net, "get_classifier", None)
    if get is None:
        return None
    head = get()
    for name, module in net.named_modules():
        if module is head and name:
            return name
    return None


def checkpoint_num_classes(state: Mapping[str, torch.Tensor], net: nn.Module) -> int | None:
    """How many classes the checkpoint's classifier predicts (read from its weight), None when unknown."""
    prefix = classifier_prefix(net)
    weight = state.get(f"{prefix}.weight") if prefix else None
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None
