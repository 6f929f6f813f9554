"""Per-epoch training metrics in the run folder: metrics.jsonl (one JSON line per epoch) and, when the tensorboard
package is installed, TensorBoard scalars in run_folder/tensorboard."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustcompress.output_folder import METRICS_FILE, TENSORBOARD_DIR


def tensorboard_writer(folder: Path) -> Any | None:
    """A torch.utils.tensorboard.SummaryWriter logging to ``folder``, or None when tensorboard is not installed."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ModuleNotFoundError as exc:
        if exc.name != "tensorboard":
            raise
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def epoch_line(record: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the trainer's history as metrics.jsonl holds it: epoch (1-based), train loss and accuracy,
    learning rate, seconds, and the validation metrics when the run selects by them."""
    line = {"epoch": record["epoch"] + 1, "train_loss": record["loss"], "train_acc": record["train_acc"],
            "lr": record["lr"], "seconds": record["seconds"]}
    if "validation" in record:
        line["validation"] = record["validation"]
    return line


class EpochLog:
    """Appends each finished epoch to ``folder``/metrics.jsonl and to TensorBoard; a context manager.

    ``finished`` epochs are already trained (a resumed run): lines of later epochs an interrupted run left are
    dropped, so every epoch has exactly one line. Nothing is created before the first epoch ends, so a run that
    fails in its first epoch leaves no folder behind.
    """

    def __init__(self, folder: str | Path, finished: int = 0) -> None:
        self.folder = Path(folder)
        self.path = self.folder / METRICS_FILE
        self.kept: list[str] | None = []
        if finished and self.path.is_file():
            self.kept = [line for line in self.path.read_text().splitlines()
                         if line.strip() and json.loads(line)["epoch"] <= finished]
        self.writer: Any | None = None

    def add(self, record: dict[str, Any]) -> None:
        """Log one epoch of the trainer's history."""
        line = epoch_line(record)
        if self.kept is not None:  # the first epoch of this process: start the file from the kept lines
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(f"{kept}\n" for kept in self.kept))
            self.kept = None
            self.writer = tensorboard_writer(self.folder / TENSORBOARD_DIR)
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        if self.writer is not None:
            step = line["epoch"]
            scalars = {"train/loss": line["train_loss"], "train/acc": line["train_acc"], "train/lr": line["lr"],
                       "time/epoch_seconds": line["seconds"]}
            scalars.update({f"val/{k}": v for k, v in line.get("validation", {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
