"""Teachers' outputs on the clean training images, computed once and looked up per batch (a cheaper setting).

Methods that query a teacher only on *clean* images (SA-MDRAD's standard teachers, MTARD's clean teacher) pay one
teacher forward per training step. With a large teacher on a CPU that dominates the step: the pre-trained CIFAR-10
ResNet-18 costs about as much per image as 18 forwards of the CPU-scale student. ``teacher_outputs="cached"``
instead runs each such teacher once over the training set, on every image and on its mirror image, and a step
looks its batch up by sample index and flip. The one approximation: the teacher sees the un-cropped image while
the student sees the random crop (a shift of at most ``crop_padding`` pixels); flips match exactly. This is the
"offline" knowledge distillation of soft labels stored per image, labelled as a cheaper setting wherever it is used.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode
from robustcompress.io import cache_dir, save_safetensors, weights_fingerprint
from robustcompress.runtime_env import progress_bar

log = logging.getLogger("robustcompress")
#: Logits are small and kept exactly; feature maps (the bulk: 512 x 4 x 4 per image for a CIFAR ResNet-18) are
#: stored in bfloat16, whose float32 range keeps even tiny activations (float16 would flush them to zero).
LOGITS_DTYPE = torch.float32
FEATURES_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class CleanTeacherPlan:
    """Which teachers a method queries on clean images only, and the feature stage it needs (None: logits only)."""

    teachers: tuple[int, ...]
    feature_stage: int | None = None


@dataclass
class BatchTeacherOutputs:
    """One batch's cached outputs: ``logits[t]`` (N, K) fp32 and ``features[t]`` (N, C, H, W) or None, by teacher."""

    logits: dict[int, torch.Tensor]
    features: dict[int, torch.Tensor | None]


class CleanTeacherOutputs:
    """Per-sample teacher outputs on the un-augmented training images (view 0) and their mirror images (view 1)."""

    def __init__(self, logits: dict[int, torch.Tensor], features: dict[int, torch.Tensor | None]) -> None:
        self.logits = logits  # teacher index -> (N, views, K)
        self.features = features  # teacher index -> (N, views, C, H, W) or None

    def lookup(self, index: torch.Tensor, flipped: torch.Tensor | None, device: torch.device) -> BatchTeacherOutputs:
        """The batch's outputs for samples ``index``, mirrored where ``flipped`` (bool, N) is True."""
        index = index.cpu()
        view = torch.zeros_like(index) if flipped is None else flipped.cpu().long()

        def take(table: torch.Tensor) -> torch.Tensor:
            view_of = view.clamp(max=table.shape[1] - 1)  # a table built without flips has one view
            return table[index, view_of].to(device, torch.float32, non_blocking=True)

        return BatchTeacherOutputs(
            {t: take(z) for t, z in self.logits.items()},
            {t: None if f is None else take(f) for t, f in self.features.items()},
        )

    @classmethod
    def build(
        cls,
        teachers: Sequence[nn.Module],
        plan: CleanTeacherPlan,
        images: torch.Tensor,
        flip: bool,
        device: torch.device,
        batch_size: int = 256,
        progress: bool = True,
        cache: bool = True,
    ) -> "CleanTeacherOutputs":
        """Run the planned teachers over ``images`` (N, C, H, W; uint8 or [0, 1] floats) and their mirror images.

        The result is cached under ``cache_dir()/teacher_outputs``, keyed by the teachers' weights, the images'
        bytes, the views and the feature stage, so every seed and method of a benchmark shares one pass.
        """
        from robustcompress.data.tensors import as_float_images
        from robustcompress.models.features import logits_and_features

        views = 2 if flip else 1
        path = _cache_path(teachers, plan, images, views) if cache else None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            stored = load_file(str(path))
            log.info("teacher outputs: cached in %s", path)
            return cls({t: stored[f"logits.{t}"] for t in plan.teachers},
                       {t: stored.get(f"features.{t}") for t in plan.teachers})
        logits: dict[int, list[torch.Tensor]] = {t: [] for t in plan.teachers}
        features: dict[int, list[torch.Tensor]] = {t: [] for t in plan.teachers}
        chosen = [teachers[t] for t in plan.teachers]
        starts = range(0, len(images), batch_size)
        bar = progress_bar(starts, "teacher outputs on the training images", progress)
        with torch.inference_mode(), eval_mode(*chosen):
            for start in bar:
                x = as_float_images(images[start : start + batch_size]).to(device)
                batch = [x, x.flip(-1)] if flip else [x]
                for t, teacher in zip(plan.teachers, chosen):
                    per_view_logits, per_view_features = [], []
                    for view in batch:
                        if plan.feature_stage is None:
                            z, f = teacher(view), None
                        else:
                            z, f = logits_and_features(teacher, view, plan.feature_stage)
                        per_view_logits.append(z.to("cpu", LOGITS_DTYPE))
                        if f is not None:
                            per_view_features.append(f.to("cpu", FEATURES_DTYPE))
                    logits[t].append(torch.stack(per_view_logits, 1))
                    if per_view_features:
                        features[t].append(torch.stack(per_view_features, 1))
        table = cls({t: torch.cat(v) for t, v in logits.items()},
                    {t: torch.cat(v) if v else None for t, v in features.items()})
        if path is not None:
            tensors = {f"logits.{t}": z for t, z in table.logits.items()}
            tensors.update({f"features.{t}": f for t, f in table.features.items() if f is not None})
            save_safetensors(tensors, path)
        return table


def _cache_path(teachers: Sequence[nn.Module], plan: CleanTeacherPlan, images: torch.Tensor, views: int) -> Path:
    digest = hashlib.sha256()
    for t in plan.teachers:
        digest.update(weights_fingerprint(teachers[t]).encode())
    digest.update(images.cpu().contiguous().numpy().tobytes())
    digest.update(f"{tuple(images.shape)}|{images.dtype}|{plan}|{views}".encode())
    return cache_dir() / "teacher_outputs" / f"{digest.hexdigest()[:16]}.safetensors"
