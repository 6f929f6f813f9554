"""Pictures for the demo: any picture -> the model's (1, 3, S, S) input, and tensors -> pictures people can see."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from robustcompress_runtime.images import MAX_PIXELS, open_picture, picture_to_array  # noqa: F401 (MAX_PIXELS: API)

#: Open a picture file with Pillow, explaining files that are not images or are absurdly large (the runtime's rule).
open_image = open_picture


def check_image_values(x: torch.Tensor) -> None:
    """Raise a ValueError unless every value of an image tensor is a number in [0, 1] (NaN compares false)."""
    if not torch.isfinite(x).all():
        raise ValueError(f"the image tensor holds {int((~torch.isfinite(x)).sum())} NaN or infinite values; pass "
                         "pixels in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"an image tensor must lie in [0, 1]; got [{x.min().item():.3g}, {x.max().item():.3g}]")


def image_to_tensor(image: Any, input_size: int) -> tuple[torch.Tensor, list[str]]:
    """Any picture -> a (1, 3, S, S) float tensor in [0, 1], plus notes on what was changed to get there.

    Accepts a Pillow image of any mode (greyscale, palette, RGBA, 16-bit, float), a numpy array, a file path, or a
    (3, H, W) or (1, 3, H, W) tensor in [0, 1]. Non-square pictures are centre-cropped; transparency is composited
    onto black, the background of the digits data (robustcompress_runtime.images.picture_to_array, the rule training
    data and the deploy runtime use too).
    """
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"an image tensor must be (3, H, W) or (1, 3, H, W); got {tuple(image.shape)}")
        image = x[0].permute(1, 2, 0).numpy()
    if image is None:
        raise ValueError("no image: upload a picture or pick one from the gallery first")
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise ValueError(f"expected a picture (Pillow image, numpy array, tensor or file path), got {type(image).__name__}")
    notes: list[str] = []
    arr = picture_to_array(image, input_size, notes)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float(), notes


def upscale(x: torch.Tensor, display_side: int = 256) -> np.ndarray:
    """A (1, 3, S, S) image in [0, 1] as uint8 HxWx3, blown up with nearest neighbour so every pixel stays sharp."""
    factor = max(1, display_side // x.shape[-1])
    arr = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return arr.repeat(factor, axis=0).repeat(factor, axis=1)


def perturbation_image(x_clean: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation stretched to full contrast: -eps -> black, 0 -> mid grey, +eps -> white."""
    if eps <= 0:
        return torch.full_like(x_clean, 0.5)
    return ((x_adv - x_clean) / (2 * eps) + 0.5).clamp(0, 1)
