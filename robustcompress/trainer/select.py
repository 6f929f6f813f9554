"""Keep the best snapshot of a run by a validation score (robust overfitting is real: the last epoch is rarely best)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from robustcompress.io import save_safetensors, write_json

log = logging.getLogger("robustcompress")
SELECT_MODES = ("last", "best_robust")


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
        point = {"epoch": epoch + 1, **self.score(self.model)}
        self.curve.append(point)
        record["validation"] = {k: v for k, v in point.items() if k != "epoch"}
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

    def summary(self) -> dict[str, Any]:
        return {"best_epoch": self.best["epoch"], "best": self.best, "curve": self.curve}
