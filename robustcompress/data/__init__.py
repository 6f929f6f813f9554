"""Datasets as image tensors in [0, 1]: embedded digits, .npz files, torchvision CIFAR folders, any torch Dataset."""
from robustcompress.data.core import (
    DataBundle,
    as_loader,
    check_images,
    load_data,
    random_crop_flip,
)
from robustcompress.data.splits import data_fingerprint, split_validation

__all__ = ["DataBundle", "as_loader", "check_images", "data_fingerprint", "load_data", "random_crop_flip",
           "split_validation"]
