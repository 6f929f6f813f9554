"""The one picture -> model-input conversion, shared by training data, the deploy runtime and the demo.

numpy and Pillow only (no torch), so the deploy runtime can use it. The rule, for every entry point:

- Pictures (files, Pillow images of any mode, integer arrays) become 8-bit RGB: palette, CMYK, YCbCr, 1-bit and
  greyscale are converted by Pillow; 16-bit and 32-bit greyscale are rescaled from their full range (Pillow's own
  conversion would clip them): 0..65535 for 16-bit values, and 32-bit values beyond 16 bits (and float pictures
  beyond [0, 1]) from 0 to their own maximum, as they have no fixed white point; NaN or infinite pixels are
  refused; transparency is composited onto black; EXIF orientation is applied.
- Non-square pictures lose the edges of their long side (centre square), then are resized to ``size`` x ``size``:
  area-averaged when shrinking (exact for pictures upscaled by an integer factor), bilinear when growing.
  Resizing the short side and centre-cropping gives the same picture.
- Float arrays in [0, 1] are taken as they are (not quantised: they may be adversarial examples), only resized.

The result is float32 HWC in [0, 1] with 3 channels; for pictures every value is an exact k/255.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Files an image folder may hold (others, e.g. README.txt, are ignored).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: Refuse before decoding: far more than a small classifier can use, and a decompression bomb beyond.
MAX_PIXELS = 36_000_000
BILINEAR = Image.Resampling.BILINEAR
BOX = Image.Resampling.BOX
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def open_picture(path: str | os.PathLike) -> Image.Image:
    """Open an image file with Pillow (EXIF orientation applied); a ValueError naming the file when it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        image = Image.open(path)
        _check_pixels(*image.size, what=str(path))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path} is far too large to decode safely ({exc}); downscale it first") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path} is not an image file Pillow can read ({exc}); it may be truncated, or not a "
                         "PNG, JPEG, WebP, BMP, GIF or TIFF picture") from exc
    return ImageOps.exif_transpose(image) or image


def _check_pixels(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"{what} is {width}x{height} pixels, i.e. empty")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); at most "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted. Downscale it first.")


def _centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _deep_grey_scale(image: Image.Image, values: np.ndarray) -> float:
    """The value that becomes white for a float (F) or integer (I, I;16) greyscale picture: floats beyond [0, 1]
    and 32-bit values beyond 16 bits have no fixed white point, so their own maximum is white."""
    top = float(values.max(initial=0.0))
    if image.mode == "F":
        return max(1.0, top)
    if image.mode.startswith("I;16") or 255 < top <= 65535:
        return 65535.0
    return top if top > 65535 else 255.0


def _deep_grey_to_rgb8(image: Image.Image, what: str) -> Image.Image:
    """A float (F) or 16/32-bit integer (I) greyscale picture as 8-bit RGB, rescaled from its full range (Pillow's
    own conversion would clip it); NaN or infinite values are refused, as for float arrays."""
    values = np.asarray(image).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{what} holds {int((~finite).sum())} NaN or infinite values (Pillow mode {image.mode}); "
                         "pass a picture whose pixels are numbers")
    scale = _deep_grey_scale(image, values)
    grey = np.rint(np.clip(values / scale, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _pil_to_rgb8(image: Image.Image, notes: list[str], what: str = "the image") -> Image.Image:
    """Any Pillow mode as an 8-bit RGB image, by the module's rule."""
    mode = image.mode
    if mode == "F" or mode.startswith("I"):
        return _deep_grey_to_rgb8(image, what)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:]
        if alpha.min(initial=255) < 255:
            notes.append("transparent areas were composited onto black")
        # Integer rounding of rgb * alpha / 255, so every entry point gets exactly the same bytes.
        rgb = (rgba[..., :3] * alpha + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _array_to_rgb(array: np.ndarray, what: str, notes: list[str]) -> np.ndarray:
    """An HxW or HxWxC array (uint8, uint16 or float in [0, 1]; C in 1, 3, 4) as HxWx3, uint8 or float32."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} has shape {array.shape}; pass one image as (H, W) or (H, W, C) with C in 1, 3, 4")
    _check_pixels(array.shape[1], array.shape[0], what)
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 65535.0 * 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any() or (array.size and (array.min() < 0 or array.max() > 1)):
            raise ValueError(f"{what} has values outside [0, 1] (or NaN); float images must lie in [0, 1] "
                             "(the model normalises internally: divide 8-bit values by 255, do not subtract a mean)")
        array = array.astype(np.float32)
    else:
        raise ValueError(f"{what} has dtype {array.dtype}; pass uint8 or uint16 pixels, or floats in [0, 1]")
    if array.shape[-1] == 4:
        alpha = array[..., 3:]
        if array.dtype == np.uint8:
            if alpha.min(initial=255) < 255:
                notes.append("transparent areas were composited onto black")
            wide = array.astype(np.uint16)
            array = ((wide[..., :3] * wide[..., 3:] + 127) // 255).astype(np.uint8)
        else:
            if alpha.min(initial=1.0) < 1.0:
                notes.append("transparent areas were composited onto black")
            array = array[..., :3] * alpha
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def _resize_float(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square of a float HWC image, resized channel by channel in Pillow's float mode (no quantisation)."""
    height, width = image.shape[:2]
    left, top, right, bottom = _centre_square(width, height)
    image = image[top:bottom, left:right]
    if image.shape[0] == size:
        return np.ascontiguousarray(image, dtype=np.float32)
    resample = BOX if image.shape[0] > size else BILINEAR
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((size, size), resample))
              for c in range(image.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def picture_to_rgb8(image: Image.Image | np.ndarray | str | os.PathLike, size: int,
                    notes: list[str] | None = None) -> np.ndarray:
    """A picture (file, Pillow image or integer array) as a size x size x 3 uint8 array, by the module's rule."""
    notes = [] if notes is None else notes
    what = "the image"
    if isinstance(image, (str, os.PathLike)):
        what = str(image)
        image = open_picture(image)
    if isinstance(image, np.ndarray):
        array = _array_to_rgb(image, "image array", notes)
        if array.dtype != np.uint8:
            raise ValueError("picture_to_rgb8 takes integer pixels; use picture_to_array for float images")
        image = Image.fromarray(array, "RGB")
    elif not isinstance(image, Image.Image):
        raise ValueError(f"expected an image file, Pillow image or numpy array, got {type(image).__name__}")
    else:
        _check_pixels(*image.size, what=what)
        try:
            image = _pil_to_rgb8(image, notes, what)
        except OSError as exc:
            raise ValueError(f"the image could not be decoded ({exc}); the file may be truncated or corrupt") from exc
    width, height = image.size
    side = min(width, height)
    if width != height:
        notes.append(f"cropped the {width}x{height} image to its central {side}x{side} square")
    if (width, height) != (size, size):
        image = image.resize((size, size), BOX if side > size else BILINEAR, box=_centre_square(width, height))
    return np.asarray(image, dtype=np.uint8)


def picture_to_array(image: Any, size: int, notes: list[str] | None = None) -> np.ndarray:
    """Any accepted image as float32 size x size x 3 in [0, 1]: pictures via picture_to_rgb8, float arrays as they are."""
    notes = [] if notes is None else notes
    if isinstance(image, np.ndarray):
        array = _array_to_rgb(image, "image array", notes)
        if array.dtype != np.uint8:
            if array.shape[0] != array.shape[1]:
                side = min(array.shape[:2])
                notes.append(f"cropped the {array.shape[1]}x{array.shape[0]} image to its central {side}x{side} square")
            return _resize_float(array, size)
        image = array
    return picture_to_rgb8(image, size, notes).astype(np.float32) / 255.0
