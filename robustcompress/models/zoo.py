"""Small CPU-friendly architectures, registered in timm's registry so timm.create_model and bundles name them."""
from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn
from timm.models import register_model


@register_model
def resnet10t_narrow(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's ResNet-10-T at half width (32-64-128-256 channels, 16-wide tiered stem; 1.2M parameters).

    Built for small images as it is: its stride-2 stem keeps 16x16 feature maps for a 32x32 input and the max-pool
    is dropped, so robustcompress does not apply its stride-1 small-input stem (which would cost 3.7x more per
    step on a CPU). The student of the CPU-scale CIFAR-10 protocol (benchmarks/cifar10_table.py). No pre-trained
    weights exist; ``pretrained`` must stay False.
    """
    if pretrained:
        raise ValueError("resnet10t_narrow has no pre-trained weights; create it with pretrained=False")
    kwargs.setdefault("channels", (32, 64, 128, 256))
    kwargs.setdefault("stem_width", 16)
    net = timm.create_model("resnet10t", pretrained=False, **kwargs)
    net.maxpool = nn.Identity()
    net.small_input_ready = True  # read by robustcompress.models.core.adapt_stem_for_small_inputs
    return net
