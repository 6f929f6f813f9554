"""The bundle format (bundle_version 2), read and written here only: config.json plus safetensors weights."""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from robustcompress.io import save_safetensors, writable_dir, write_json
from robustcompress.trainer.config import TrainConfig

if TYPE_CHECKING:  # the record is read without torch (benchmarks/gpu_check_summary.py); weights need it
    import torch

    from robustcompress.models import ImageClassifier

BUNDLE_VERSION = 2
CONFIG_NAME = "config.json"
#: Keys every bundle's config.json has (bundle_version 1 lacked the ones in BUNDLE_KEYS_SINCE_2).
BUNDLE_KEYS = ("bundle_version", "method", "method_hparams", "student", "teachers", "train_config")
BUNDLE_KEYS_SINCE_2 = ("method_kwargs", "teacher_epochs", "verify_attacks", "verify_examples")
#: TrainConfig settings added after bundle_version 2 was defined, with the value older bundles were trained with.
TRAIN_CONFIG_ADDED = {"teacher_outputs": "live"}
#: Weight files: student.safetensors, teacher_0.safetensors, ... and, when selection kept an earlier epoch, the
#: final weights as student_last.safetensors. A student-only bundle (``teachers_saved: false``) keeps its teachers'
#: specs in the record but not their weights: enough to evaluate, export and deploy the student, small to share.
STUDENT, STUDENT_LAST = "student", "student_last"
_TEACHER_FILE = re.compile(r"teacher_\d+\.safetensors")
#: ``config`` (every RobustCompressor setting, robustcompress.settings.CompressConfig) is optional: bundles written
#: before it existed lack it, and their settings are gathered from the keys below and train_config.
#: What an optional key means when a record lacks it (or holds null): older bundles did not write all of them.
DEFAULTS: dict[str, Any] = {
    "method_kwargs": {}, "method_hparams": {}, "teacher_epochs": 10, "verify_attacks": ["pgd20"],
    "verify_examples": 500, "teacher_names": [], "teacher_weights": None, "teacher_finetune_epochs": 0,
    "teachers_info": [], "data": {}, "metrics": {}, "history": [], "timings_s": {}, "select": "last",
    "val_size": 1000, "selection": {}, "teachers_saved": True, "training_speed": {},
}
_WHO_WRITES = "the folder 'robustcompress fit' / 'quickstart' (its bundle/) or RobustCompressor.save wrote"


def teacher_stem(index: int) -> str:
    """The weight file stem of teacher ``index``: teacher_0, teacher_1, ..."""
    return f"teacher_{index}"


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle folder (it holds a config.json)."""
    return (Path(path) / CONFIG_NAME).is_file()


def check_record(record: Any, where: str | os.PathLike) -> None:
    """Raise a ValueError that names what is wrong with a bundle record (version, missing or unknown keys)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} does not hold a bundle description (a JSON object); re-save the bundle")
    version = record.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{where} has no valid 'bundle_version' ({version!r}); it is not a robustcompress "
                         "bundle or it was edited by hand: re-save it")
    if version > BUNDLE_VERSION:
        raise ValueError(f"{where} has bundle_version {version}, newer than this robustcompress reads "
                         f"(up to {BUNDLE_VERSION}); upgrade robustcompress: pip install -U robustcompress")
    required = BUNDLE_KEYS + (BUNDLE_KEYS_SINCE_2 if version >= 2 else ())
    missing = [key for key in required if key not in record]
    if not isinstance(record.get("train_config"), dict):
        missing += [] if "train_config" in missing else ["train_config (not a mapping)"]
    else:
        known = {f.name for f in fields(TrainConfig)}
        absent = known - set(record["train_config"]) - set(TRAIN_CONFIG_ADDED)
        missing += [f"train_config.{key}" for key in sorted(absent)]
        unknown = sorted(set(record["train_config"]) - known)
        if unknown:
            raise ValueError(f"{where} has train_config settings this robustcompress does not know: {unknown}; "
                             "upgrade robustcompress or re-save the bundle")
    if "config" in record and not isinstance(record["config"], dict):
        missing.append("config (not a mapping)")
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; the bundle is incomplete or was edited: "
                         "re-save it (RobustCompressor.save) or re-run fit")


def write_bundle(directory: str | os.PathLike, record: Mapping[str, Any],
                 weights: Mapping[str, Mapping[str, torch.Tensor]]) -> Path:
    """Write ``weights`` (file stem -> state dict) as safetensors, then the record as config.json; return the folder.

    The record is checked first, so nothing unreadable is written, and config.json comes last and atomically:
    a folder with a config.json is a complete bundle. Weight files of an earlier bundle in the same folder that
    this one does not have (student_last, teacher_N) are removed, so they cannot be read as this bundle's.
    """
    directory = writable_dir(directory)
    check_record(dict(record), directory / CONFIG_NAME)
    json.dumps(record)  # before any file: a record that is not JSON writes nothing
    stale = [path for path in (directory / f"{STUDENT_LAST}.safetensors", *directory.glob("teacher_*.safetensors"))
             if path.is_file() and path.stem not in weights
             and (path.stem == STUDENT_LAST or _TEACHER_FILE.fullmatch(path.name))]
    for path in stale:
        path.unlink()
    for stem, state in weights.items():
        save_safetensors(dict(state), directory / f"{stem}.safetensors")
    write_json(directory / CONFIG_NAME, record)
    return directory


@dataclass
class Bundle:
    """A bundle folder and its checked record; weights are read on demand."""

    directory: Path
    record: dict[str, Any]

    def get(self, key: str) -> Any:
        """A record value, or the format's default (DEFAULTS) when the record lacks it."""
        value = self.record.get(key)
        return copy.deepcopy(DEFAULTS.get(key)) if value is None else value  # a copy: callers may change it

    @property
    def input_size(self) -> int:
        return int(self.record["student"]["input_size"])

    @property
    def num_classes(self) -> int:
        return int(self.record["student"]["num_classes"])

    @property
    def method(self) -> str:
        return str(self.record["method"])

    @property
    def train_config(self) -> TrainConfig:
        """The exact training settings (eps, seed, steps, ...) the student was trained with."""
        return TrainConfig(**self.record["train_config"])

    @property
    def teacher_names(self) -> list[str]:
        """The teachers as the user named them (empty for bundles that did not record names)."""
        return [str(n) for n in self.get("teacher_names")]

    def _load(self, spec: dict[str, Any], stem: str, device: torch.device | str) -> ImageClassifier:
        from robustcompress.models import resolve_model

        path = self.directory / f"{stem}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"bundle {self.directory} lacks {path.name}; the bundle is incomplete: re-save "
                                    "it (RobustCompressor.save) or re-run fit")
        return resolve_model(spec, checkpoint_path=path).to(device).eval()

    def student(self, device: torch.device | str = "cpu") -> ImageClassifier:
        """The student with its weights, in eval mode on ``device``."""
        return self._load(self.record["student"], STUDENT, device)

    @property
    def teachers_saved(self) -> bool:
        """Whether the teachers' weights are in the bundle (False: a student-only bundle; see STUDENT)."""
        return bool(self.get("teachers_saved"))

    def teachers(self, device: torch.device | str = "cpu") -> list[ImageClassifier]:
        """The teachers with their weights, in eval mode on ``device``."""
        if not self.teachers_saved and self.record["teachers"]:
            raise ValueError(f"bundle {self.directory} was saved student-only (save(..., teachers=False)), so its "
                             f"teachers {self.teacher_names or ''} are not in it; use the bundle fit wrote, which "
                             "keeps them")
        return [self._load(spec, teacher_stem(i), device) for i, spec in enumerate(self.record["teachers"])]

    def last_state(self) -> dict[str, torch.Tensor] | None:
        """The student's final-epoch weights when selection kept an earlier epoch (else None)."""
        path = self.directory / f"{STUDENT_LAST}.safetensors"
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        return load_file(str(path))


def read_bundle(directory: str | os.PathLike) -> Bundle:
    """Open a bundle folder: its config.json read and checked (one-line errors say what is wrong and what to do)."""
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"bundle folder {directory} does not exist; pass {_WHO_WRITES}")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} is not a robustcompress bundle (no {CONFIG_NAME}); pass {_WHO_WRITES}")
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path} is corrupt ({exc}); re-save the bundle") from exc
    check_record(record, config_path)
    return Bundle(directory, record)


def bundle_beside(onnx_path: str | os.PathLike) -> Path | None:
    """The bundle an exported .onnx came from when it lies beside it: the file's folder or its bundle/ subfolder."""
    parent = Path(onnx_path).parent
    return next((folder for folder in (parent, parent / "bundle") if is_bundle(folder)), None)


def onnx_beside(directory: str | os.PathLike) -> Path | None:
    """The bundle's exported student: student.onnx in the bundle or next to it (the quickstart writes
    quickstart_out/student.onnx beside bundle/), else any .onnx in the bundle."""
    directory = Path(directory)
    candidates = (directory / "student.onnx", directory.parent / "student.onnx", *sorted(directory.glob("*.onnx")))
    return next((c for c in candidates if c.is_file()), None)
