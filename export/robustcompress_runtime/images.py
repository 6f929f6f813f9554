"""The one picture -> model-input conversion and resize, shared by training data, the deploy runtime and the demo.

numpy and Pillow only (no torch), so the deploy runtime can use it. Image folders, .npz arrays, scikit-learn's
digits, CIFAR, the runtime's files and arrays, and the demo's pictures and tensors all go through it
(:func:`picture_to_array` for one image, :func:`pictures_to_array` for a batch), so a model is fed at deploy time
the pixels it was trained on. The rule, for every entry point:

- Pictures (files, Pillow images of any mode, integer arrays) become 8-bit RGB: palette, CMYK, YCbCr, 1-bit and
  greyscale are converted by Pillow; 16-bit and 32-bit greyscale are rescaled from their full range (Pillow's own
  conversion would clip them): 0..65535 for 16-bit values, and 32-bit values beyond 16 bits (and float pictures
  beyond [0, 1]) from 0 to their own maximum, as they have no fixed white point; NaN or infinite pixels are
  refused; transparency is composited onto black; EXIF orientation is applied.
- Non-square pictures lose the edges of their long side (centre square), then are resized to ``size`` x ``size``:
  area-averaged when shrinking (exact for pictures upscaled by an integer factor), bilinear when growing.
  Resizing the short side and centre-cropping gives the same picture.
  A picture already ``size`` x ``size`` is not resampled: its values are exactly its pixels.
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
        check_pixel_count(*image.size, what=str(path))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path} is far too large to decode safely ({exc}); downscale it first") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path} is not an image file Pillow can read ({exc}); it may be truncated, or not a "
                         "PNG, JPEG, WebP, BMP, GIF or TIFF picture") from exc
    return ImageOps.exif_transpose(image) or image


def check_pixel_count(width: int, height: int, what: str) -> None:
    """Refuse an empty picture, or one beyond MAX_PIXELS (checked before decoding it): a ValueError naming ``what``."""
    if width < 1 or height < 1:
        raise ValueError(f"{what} is {width}x{height} pixels, i.e. empty")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); at most "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted. Downscale it first.")


def _centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _refuse_non_finite(values: np.ndarray, what: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{what} holds {int((~finite).sum())} NaN or infinite values; pass a picture whose pixels "
                         "are numbers")


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
    _refuse_non_finite(values, f"{what} (Pillow mode {image.mode})")
    scale = _deep_grey_scale(image, values)
    grey = np.rint(np.clip(values / scale, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _pil_to_rgb8(image: Image.Image, notes: list[str], what: str = "the image") -> Image.Image:
    """Any Pillow mode as an 8-bit RGB image, by the module's rule."""
    mode = image.mode
    if mode == "F" or mode.startswith("I"):
        return _deep_grey_to_rgb8(image, what)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return Image.fromarray(_pixels_to_rgb(np.asarray(image.convert("RGBA")), what, notes), "RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _one_image_to_rgb(array: np.ndarray, what: str, notes: list[str]) -> np.ndarray:
    """An HxW or HxWxC array (uint8, uint16 or float in [0, 1]; C in 1, 3, 4) as HxWx3, uint8 or float32."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} has shape {array.shape}; pass one image as (H, W) or (H, W, C) with C in 1, 3, 4")
    return _pixels_to_rgb(array, what, notes)


def _pixels_to_rgb(array: np.ndarray, what: str, notes: list[str]) -> np.ndarray:
    """Images as (..., H, W, C) arrays (C in 1, 3, 4) as (..., H, W, 3): uint8 for integer pixels (16-bit values
    rounded to 8 bits), float32 for floats in [0, 1]; transparency composited onto black."""
    check_pixel_count(array.shape[-2], array.shape[-3], what)
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 65535.0 * 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        _refuse_non_finite(array, what)
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(f"{what} has values outside [0, 1]; float images must lie in [0, 1] "
                             "(the model normalises internally: divide 8-bit values by 255, do not subtract a mean)")
        array = array.astype(np.float32, copy=False)
    else:
        raise ValueError(f"{what} has dtype {array.dtype}; pass uint8 or uint16 pixels, or floats in [0, 1]")
    if array.shape[-1] == 4:
        alpha = array[..., 3:]
        if array.dtype == np.uint8:
            if alpha.min(initial=255) < 255:
                notes.append("transparent areas were composited onto black")
            wide = array.astype(np.uint16)  # integer rounding of rgb * alpha / 255: the same bytes everywhere
            array = ((wide[..., :3] * wide[..., 3:] + 127) // 255).astype(np.uint8)
        else:
            if alpha.min(initial=1.0) < 1.0:
                notes.append("transparent areas were composited onto black")
            array = array[..., :3] * alpha
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


def _note_crop(width: int, height: int, notes: list[str]) -> None:
    if width != height:
        side = min(width, height)
        notes.append(f"cropped the {width}x{height} image to its central {side}x{side} square")


def _square_rgb8(image: Image.Image, size: int, notes: list[str]) -> np.ndarray:
    """The centre square of an RGB Pillow image at size x size (not resampled when it already is) as uint8 HxWx3."""
    width, height = image.size
    _note_crop(width, height, notes)
    if (width, height) != (size, size):
        resample = BOX if min(width, height) > size else BILINEAR
        image = image.resize((size, size), resample, box=_centre_square(width, height))
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on Pillow's read-only view


def _square_float(image: np.ndarray, size: int, notes: list[str]) -> np.ndarray:
    """The centre square of a float HxWx3 image at size x size, resized channel by channel in Pillow's float mode
    (no quantisation; not resampled when it already is size x size)."""
    height, width = image.shape[:2]
    _note_crop(width, height, notes)
    left, top, right, bottom = _centre_square(width, height)
    image = image[top:bottom, left:right]
    if image.shape[0] == size:
        return np.ascontiguousarray(image, dtype=np.float32)
    resample = BOX if image.shape[0] > size else BILINEAR
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((size, size), resample))
              for c in range(image.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def _square(rgb: np.ndarray, size: int, notes: list[str]) -> np.ndarray:
    """One HxWx3 array from _pixels_to_rgb at size x size: 8-bit pixels by Pillow in 8 bits, floats in float mode."""
    if rgb.dtype == np.uint8:
        return _square_rgb8(Image.fromarray(rgb, "RGB"), size, notes)
    return _square_float(rgb, size, notes)


def _unit_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 k/255; float32 images as they are."""
    return rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb


def picture_to_rgb8(image: Image.Image | np.ndarray | str | os.PathLike, size: int,
                    notes: list[str] | None = None) -> np.ndarray:
    """A picture (file, Pillow image or integer array) as a size x size x 3 uint8 array, by the module's rule."""
    notes = [] if notes is None else notes
    what = "the image"
    if isinstance(image, (str, os.PathLike)):
        what = str(image)
        image = open_picture(image)
    if isinstance(image, np.ndarray):
        array = _one_image_to_rgb(image, "image array", notes)
        if array.dtype != np.uint8:
            raise ValueError("picture_to_rgb8 takes integer pixels; use picture_to_array for float images")
        return _square(array, size, notes)
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected an image file, Pillow image or numpy array, got {type(image).__name__}")
    check_pixel_count(*image.size, what=what)
    try:
        image = _pil_to_rgb8(image, notes, what)
    except OSError as exc:
        raise ValueError(f"the image could not be decoded ({exc}); the file may be truncated or corrupt") from exc
    return _square_rgb8(image, size, notes)


def picture_to_array(image: Any, size: int, notes: list[str] | None = None) -> np.ndarray:
    """Any accepted image as float32 size x size x 3 in [0, 1]: pictures via picture_to_rgb8, float arrays as they are."""
    notes = [] if notes is None else notes
    if isinstance(image, np.ndarray):
        return _unit_float(_square(_one_image_to_rgb(image, "image array", notes), size, notes))
    return _unit_float(picture_to_rgb8(image, size, notes))


def pictures_to_array(images: np.ndarray, size: int, what: str = "images") -> np.ndarray:
    """A batch of images, (N, H, W) or (N, H, W, C) with C in 1, 3, 4, as float32 (N, size, size, 3) in [0, 1]:
    every image exactly as picture_to_array converts it (uint8 or uint16 pixels, or floats in [0, 1]). A batch
    already size x size is converted in one vectorised step, without resampling."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} has shape {images.shape}; pass images as (N, H, W) or (N, H, W, C) with C in 1, "
                         "3, 4")
    rgb = _pixels_to_rgb(images, what, [])
    if rgb.shape[1:3] != (size, size):
        squares = [_square(image, size, []) for image in rgb]
        rgb = np.stack(squares) if squares else np.empty((0, size, size, 3), rgb.dtype)
    return _unit_float(rgb)
