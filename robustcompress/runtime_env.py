"""Where and how this process runs: its device, its seeds, its rank under torchrun and its progress bars (the
bottom layer every other one may use)."""
from __future__ import annotations

import atexit
import logging
import os
import random
import sys
from typing import Iterable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

log = logging.getLogger("robustcompress")
T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes training together (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that logs, writes checkpoints and saves bundles."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (once) and return this process's device.

    CUDA uses NCCL and the GPU numbered LOCAL_RANK; CPU uses gloo. Without torchrun's environment this returns
    ``device`` unchanged.
    """
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "start torchrun with --nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
        if dist.get_rank() == 0:
            log.info("distributed training on %d processes (%s)", dist.get_world_size(), dist.get_backend())
    return device


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU.

    Under torchrun (WORLD_SIZE > 1) this also joins the process group and returns this process's device
    (cuda:LOCAL_RANK on GPUs).
    """
    if str(device) == "auto":
        return init_from_env(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return init_from_env(device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress_bar(iterable: Iterable[T] | None = None, desc: str = "", enabled: bool = True, *,
                 total: int | None = None, unit: str = "it") -> tqdm:
    """The one progress bar: shown on stderr only when ``enabled`` and on the main process, gone when done.

    Wrap an iterable (``for x in progress_bar(items, "attacks", progress)``) or count by hand with ``total`` and
    ``bar.update(n)``.
    """
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled or not is_main_process(),
                leave=False)


def progress_note(text: str, enabled: bool = True) -> None:
    """A line on stderr beside the progress bars (without breaking one), when ``enabled`` and on the main process."""
    if enabled and is_main_process():
        tqdm.write(text, file=sys.stderr)
