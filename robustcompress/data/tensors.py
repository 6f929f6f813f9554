"""In-memory image tensors: uint8 storage (4x smaller than float32) that reads out as floats in [0, 1]."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]; float images are returned unchanged."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class PixelDataset(TensorDataset):
    """(uint8 NCHW images, int64 labels) whose items come out as float images in [0, 1].

    Code that indexes ``.tensors`` directly (the trainer's fast path, evaluation) converts whole batches with
    :func:`as_float_images`, so a 50,000-image CIFAR-10 takes 150 MB instead of 600 MB.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"PixelDataset takes uint8 NCHW images; got {images.dtype} {tuple(images.shape)}")
        super().__init__(images.contiguous(), labels.long())

    def __getitem__(self, index):  # type: ignore[override]
        return as_float_images(self.tensors[0][index]), self.tensors[1][index]


def subset_tensors(ds: TensorDataset, index: torch.Tensor | slice) -> TensorDataset:
    """The rows ``index`` of a TensorDataset, keeping its class (a PixelDataset stays uint8)."""
    return type(ds)(*(t[index] for t in ds.tensors))
