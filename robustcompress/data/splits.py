"""Held-out validation splits of a training set, and the fingerprint that tells training sets apart."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from robustcompress.data.core import DataBundle, dataset_digest
from robustcompress.data.tensors import subset_tensors


def data_fingerprint(data: DataBundle) -> str:
    """A short hash of the training images and labels, so a cached teacher is only reused on the same data."""
    return dataset_digest(data.train)


def split_validation(ds: Dataset, fraction: float | int, seed: int) -> tuple[Dataset, Dataset]:
    """(train part, validation part): a seeded random ``fraction`` (or, given an int, that many) of the images is
    held out for model selection."""
    n = len(ds)  # type: ignore[arg-type]
    is_count = isinstance(fraction, int) and not isinstance(fraction, bool)
    held_out = fraction if is_count else round(n * fraction)
    if (not is_count and not 0 < fraction < 1) or held_out < 1 or held_out >= n:
        raise ValueError(
            f"a validation split of {fraction} leaves no validation or no training images out of {n}; use e.g. "
            "0.1 or 1000"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:held_out], order[held_out:]
    if isinstance(ds, TensorDataset):  # keep tensors so the trainer's fast in-memory path still applies
        return subset_tensors(ds, train_idx), subset_tensors(ds, val_idx)
    return Subset(ds, train_idx.tolist()), Subset(ds, val_idx.tolist())
