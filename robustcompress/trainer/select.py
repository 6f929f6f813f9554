"""The one best-epoch selection driver, for teachers and students alike: keep the last epoch, a given epoch, or the
best by a validation score (robust overfitting is real: the last epoch is rarely best)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch.nn as nn

from robustcompress.io import save_safetensors, write_json

log = logging.getLogger("robustcompress")
SELECT_MODES = ("last", "best_robust")

#: Called after each epoch with the 0-based epoch and its history record (robustcompress.trainer.train's
#: ``on_epoch_end``).
EpochCallback = Callable[[int, dict[str, Any]], None]
#: Runs the epochs, calling the callback after each, and returns the per-epoch history.
RunEpochs = Callable[[EpochCallback], list[dict[str, Any]]]
#: Scores a model on validation data: at least ``{"score": float}``, plus what the curve should record.
Score = Callable[[nn.Module], dict[str, Any]]


def check_select_mode(select: str) -> str:
    """'best-robust' and 'best_robust' are the same; anything but those and 'last' is a clear error."""
    mode = str(select).replace("-", "_")
    if mode not in SELECT_MODES:
        raise ValueError(f"select='{select}' is unknown; use 'last' (final weights) or 'best-robust' (the epoch with "
                         "the best PGD accuracy on a validation split carved out of the training data)")
    return mode


class BestSnapshot:
    """An on_epoch_end callback: score the model after each epoch and keep a copy of the best weights.

    ``score(model) -> dict`` returns at least ``{"score": float}`` plus anything worth recording in the curve. With a
    ``directory`` the best weights and their record are written there (best.safetensors, best.json) so a resumed
    run keeps the best of the epochs before the interruption.
    """

    def __init__(self, model: nn.Module, score: Callable[[nn.Module], dict[str, Any]],
                 directory: str | Path | None = None) -> None:
        self.model, self.score = model, score
        self.directory = Path(directory) if directory is not None else None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best: dict[str, Any] = {"epoch": None, "score": float("-inf")}
        self.curve: list[dict[str, Any]] = []
        if self.directory is not None and (self.directory / "best.json").is_file():
            from safetensors.torch import load_file

            record = json.loads((self.directory / "best.json").read_text())
            self.best, self.curve = record["best"], record["curve"]
            self.best_state = load_file(str(self.directory / "best.safetensors"))

    def __call__(self, epoch: int, record: dict[str, Any]) -> None:
        started = time.perf_counter()
        # 'seconds' (the scoring's own time) is kept in the curve, which outlives a resume, so the whole cost of a
        # run interrupted several times can still be added up (epoch times live in the checkpoint's history)
        point = {"epoch": epoch + 1, **self.score(self.model)}
        point["seconds"] = time.perf_counter() - started
        self.curve.append(point)
        record["validation"] = {k: v for k, v in point.items() if k not in ("epoch", "seconds")}
        if point["score"] > self.best["score"]:
            self.best = dict(point)
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.directory is not None:
                save_safetensors(self.best_state, self.directory / "best.safetensors")
        if self.directory is not None:
            write_json(self.directory / "best.json", {"best": self.best, "curve": self.curve})

    def restore_best(self, epochs: int) -> dict[str, torch.Tensor] | None:
        """Put the best weights back into the model and return the ones it ended with (None: nothing scored)."""
        if self.best_state is None:
            return None
        last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_state)
        log.info("kept epoch %s of %d (validation %s)", self.best["epoch"], epochs,
                 {k: round(v, 4) for k, v in self.best.items() if isinstance(v, float)})
        return last


class _StopAfterSelectedEpoch(Exception):
    """Raised from the epoch callback once the requested epoch's weights exist; nothing after it is needed."""


@dataclass
class Selection:
    """What a run kept: the history, the kept epoch (0: the starting weights), and, when a score chose it, its
    validation point, the validation curve and the final weights it replaced."""

    history: list[dict[str, Any]]
    epoch: int | None
    best: dict[str, Any] | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    last_state: dict[str, torch.Tensor] | None = None

    def seconds(self) -> float:
        """The run's training and validation time, every epoch counted once, also across resumes (the history comes
        back from the checkpoint and the curve from the best snapshot's record)."""
        return sum(h.get("seconds", 0.0) for h in self.history) + sum(p.get("seconds", 0.0) for p in self.curve)

    def summary(self) -> dict[str, Any]:
        """The record of a scored selection: the kept epoch, its validation point and the curve."""
        return {"best_epoch": self.epoch, "best": self.best, "curve": self.curve}


def train_and_select(
    model: nn.Module,
    run_epochs: RunEpochs,
    select: Union[str, int],
    epochs: int,
    *,
    score: Score | None = None,
    checkpoint_dir: str | Path | None = None,
    score_start: bool = False,
) -> Selection:
    """Train ``model`` with ``run_epochs`` and leave the selected epoch's weights in it.

    ``select``: "last" keeps the final weights; an epoch number k (1-based) stops after epoch k of the
    ``epochs``-epoch schedule; any other mode ("best_robust", "best_clean") scores the model with ``score`` after
    every epoch and keeps the best one (ties: the earliest). ``score_start`` also scores the weights before
    training, as epoch 0, so training that only hurts keeps the start. With a ``checkpoint_dir`` the best snapshot
    and the curve are written there, and a resumed run keeps the best of the epochs before its interruption.
    """
    snapshot = None
    if isinstance(select, str) and select != "last":
        if score is None:
            raise ValueError(f"select='{select}' keeps the best epoch by a validation score; pass score=")
        snapshot = BestSnapshot(model, score, checkpoint_dir)
    seen: list[dict[str, Any]] = []

    def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
        seen.append(record)
        if snapshot is not None:
            snapshot(epoch, record)
        elif isinstance(select, int) and epoch + 1 == select:
            raise _StopAfterSelectedEpoch

    if snapshot is not None and score_start:
        snapshot(-1, {})  # the starting weights, scored as epoch 0
    try:
        history = run_epochs(on_epoch_end)
    except _StopAfterSelectedEpoch:
        history = seen
    if snapshot is None:
        return Selection(history, select if isinstance(select, int) else epochs)
    last_state = snapshot.restore_best(epochs)
    return Selection(history, snapshot.best["epoch"], snapshot.best, snapshot.curve, last_state)
