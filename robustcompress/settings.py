"""RobustCompressor's settings (CompressConfig): every one's default, help text and check, run once before any work.

The Python API builds a CompressConfig from its keyword arguments, the ``fit`` command derives its flags and
config-file keys from the fields (their metadata carries the help text and how a flag's text is read), and a
bundle stores the config whole (``config`` in config.json) so ``RobustCompressor.load`` rebuilds it.
"""
from __future__ import annotations

import copy
import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from robustcompress.arguments import closest_name_hint, require_int, require_number
from robustcompress.attacks import get_attack
from robustcompress.methods import Method, create_method
from robustcompress.methods.common import check_teachers_given
from robustcompress.trainer.config import PRECISIONS, SCHEDULES, SPEEDS, TEACHER_OUTPUTS, TrainConfig
from robustcompress.trainer.loop import check_attack_budget
from robustcompress.trainer.select import check_select_mode

DEFAULT_METHOD = "sa-mdrad"
#: How the fit command reads a flag's text (robustcompress.cli.fit maps each to an argparse reader; a "key=value"
#: flag may be repeated, a "switch" has a --no- form); the value's range is checked by CompressConfig, not the flag.
READS = ("text", "whole number", "number", "eps", "count or fraction", "switch", "key=value")
#: The TrainConfig settings a CompressConfig passes through (TrainConfig checks them).
TRAINING_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "eps", "step_size",
                   "steps", "seed", "augment", "progress", "speed", "precision", "teacher_outputs")


def setting(default: Any, help: str, read: str, *, flag: str | None = None, metavar: str | None = None,
            choices: Sequence[str] | None = None, nargs: str | None = None) -> Any:
    """A CompressConfig field: its default, and for the fit command its help text, how the flag's text is read
    (one of READS), and optionally another flag name than ``--field-name``, a metavar, choices or nargs."""
    if read not in READS:
        raise ValueError(f"read={read!r}; use one of {READS}")
    options = {"flag": flag, "metavar": metavar, "choices": tuple(choices) if choices else None, "nargs": nargs}
    return field(default=default, metadata={"help": help, "read": read, **options})


def choice(choices: Sequence[str], help: str) -> Any:
    """A CompressConfig field that is one of ``choices``, the first being the default."""
    return setting(choices[0], help, "text", choices=choices)


@dataclass(frozen=True)
class CompressConfig:
    """Every setting of a RobustCompressor run except its models (teachers and student), checked on construction.

    A bad value raises a one-line ValueError naming the field before any data is read or teacher trained. Values
    are normalised as they are checked: eps '8/255' becomes a float, select 'best-robust' becomes 'best_robust',
    sequences become tuples. ``dataclasses.replace(config, epochs=5)`` makes a checked copy.
    """

    method: str = setting(DEFAULT_METHOD, "training method; see 'robustcompress fit --list-methods'", "text")
    method_kwargs: Mapping[str, Any] | None = setting(
        None, "method hyperparameter, e.g. --method-arg alpha=0.9 (repeatable)", "key=value", flag="--method-arg",
        metavar="KEY=VALUE")
    eps: float = setting(8 / 255, "L-inf budget, e.g. 8/255", "eps")
    step_size: float | None = setting(None, "step of the training attack, e.g. 2/255 (default eps/4)", "eps")
    steps: int = setting(10, "PGD steps of the training attack", "whole number")
    epochs: int = setting(10, "training epochs of the student", "whole number")
    batch_size: int = setting(128, "global batch size (split across processes under torchrun)", "whole number")
    lr: float = setting(0.1, "learning rate (SGD)", "number")
    momentum: float = setting(0.9, "SGD momentum, in [0, 1)", "number")
    weight_decay: float = setting(5e-4, "SGD weight decay", "number")
    schedule: str = choice(SCHEDULES, "learning-rate schedule: cosine, or step (x0.1 at half and at three quarters "
                           "of training)")
    augment: bool = setting(True, "random crop and flip of the training images", "switch")
    device: str = setting("auto", "auto (default), cpu or cuda", "text")
    seed: int = setting(0, "seed of the student's initial weights, data order and attacks", "whole number")
    num_classes: int | None = setting(None, "class count (default: the data's)", "whole number")
    input_size: int | None = setting(None, "resize images to this size (default: the data's)", "whole number")
    teacher_weights: Sequence[float] | None = setting(
        None, "one weight per teacher (at least 0; normalised to sum to 1), e.g. --teacher-weights 2 1", "number",
        metavar="W", nargs="+")
    teacher_epochs: int = setting(10, "epochs for teachers given by bare name", "whole number")
    teacher_finetune_epochs: int = setting(
        0, "fine-tune each pre-trained teacher on the data for up to N epochs first (clean training, early-stopped "
        "on validation accuracy, cached); replaces a head with another class count", "whole number",
        flag="--finetune-teachers", metavar="N")
    out_dir: str | None = setting(None, "bundle directory (default: 'out_dir' in --config, else runs/fit)", "text",
                                  flag="--out")
    verify_attacks: Sequence[str] = setting(
        ("pgd20",), "attacks of the verification after training (none: skip it)", "text", metavar="ATTACK",
        nargs="*")
    verify_examples: int = setting(500, "test images the verification after training attacks", "whole number")
    progress: bool = setting(True, "show progress bars", "switch")
    speed: str = choice(SPEEDS, "fast (default: channels_last, with --precision auto), compile (fast + torch.compile) "
                        "or reference (fp32, NCHW, eager). Multi-GPU: torchrun --nproc_per_node N -m robustcompress "
                        "fit ...")
    precision: str = choice(PRECISIONS, "training precision of --speed fast: auto (default) is bf16 autocast on GPUs "
                            "with bf16 and on CPUs with AMX-BF16 or AVX512-BF16 (images of 16 px and more; smaller "
                            "ones were not bit-reproducible in bf16), fp32 elsewhere; bf16 or fp32 force it; "
                            "evaluation always runs in fp32")
    teacher_outputs: str = choice(TEACHER_OUTPUTS, "live (default): teachers run on every batch; cached: teachers "
                                  "that see only clean images (sa-mdrad's, mtard's clean one) run once over the "
                                  "training set, a cheaper setting")
    select: str = choice(("last", "best-robust"), "keep the last epoch (default) or the one with the best PGD-10 "
                         "accuracy on a validation split carved out of the training data (--val-size images)")
    val_size: int | float = setting(
        1000, "validation images for --select best-robust: a count such as 1000 or a fraction such as 0.1",
        "count or fraction")

    def __post_init__(self) -> None:
        normalised = {
            "method_kwargs": dict(self.method_kwargs or {}),
            "teacher_weights": _teacher_weights(self.teacher_weights),
            "verify_attacks": _attack_names(self.verify_attacks),
            "select": check_select_mode(self.select),
            "out_dir": _folder_name(self.out_dir),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
        training = TrainConfig(**{name: getattr(self, name) for name in TRAINING_FIELDS})  # checks those settings
        object.__setattr__(self, "eps", training.eps)  # the eps rule (parse_eps) read '8/255' into a number
        if self.step_size is not None:
            object.__setattr__(self, "step_size", training.step_size)
        object.__setattr__(self, "_training", training)
        require_int("teacher_epochs", self.teacher_epochs, least=1)
        require_int("teacher_finetune_epochs", self.teacher_finetune_epochs, least=0)
        require_int("verify_examples", self.verify_examples, least=1)
        if self.num_classes is not None:
            require_int("num_classes", self.num_classes, least=2)
        if self.input_size is not None:
            require_int("input_size", self.input_size, least=1)
        _check_val_size(self.val_size)
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a name such as 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        check_attack_budget(self.create_method(), training)  # also refuses an unknown method or hyperparameter

    def create_method(self) -> Method:
        """A fresh instance of the configured method with its hyperparameters."""
        return create_method(self.method, **self.method_kwargs)  # type: ignore[arg-type]

    def train_config(self) -> TrainConfig:
        """The training loop's settings (a copy: fit() fills in the data's crop padding and flip)."""
        return copy.copy(self._training)  # type: ignore[attr-defined]

    def to_record(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples as lists), stored whole as the bundle's ``config``."""
        return {f.name: _json_ready(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], base: "CompressConfig | None" = None) -> "CompressConfig":
        """A checked config from a mapping of field names to values (over ``base``'s when given); an unknown name is
        refused as a TypeError naming the closest field."""
        names = setting_names()
        for key in settings:
            if key not in names:
                raise TypeError(f"RobustCompressor has no setting '{key}'; {closest_name_hint(str(key), names)}"
                                f"settings are CompressConfig's fields: {', '.join(names)}")
        return cls(**settings) if base is None else dataclasses.replace(base, **settings)


def setting_names() -> list[str]:
    """The names of CompressConfig's fields: the API's keyword settings and the fit command's config-file keys."""
    return [f.name for f in dataclasses.fields(CompressConfig)]


def _folder_name(folder: Any) -> str | None:
    """out_dir as text (a Path is accepted), so the config is stored as JSON."""
    if folder is None:
        return None
    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a folder path; got {folder!r}")
    return os.fspath(folder)


def _json_ready(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else copy.deepcopy(value)


def _attack_names(attacks: Any) -> tuple[str, ...]:
    """The verification's attack names, each one known to the attack registry (a typo fails before training)."""
    if isinstance(attacks, str) or not isinstance(attacks, Sequence):
        raise ValueError(f"verify_attacks must be a list of attack names such as ['pgd20']; got {attacks!r}")
    for name in attacks:
        get_attack(name)
    return tuple(attacks)


def _teacher_weights(weights: Any) -> tuple[float, ...] | None:
    """The teachers' shares as given (checked: numbers of at least 0, not all 0); check_teachers normalises them."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise ValueError(f"teacher_weights must be a list of numbers, one per teacher; got {weights!r}")
    for i, weight in enumerate(weights):
        require_number(f"teacher_weights[{i}]", weight, least=0,
                       hint="a weight is a teacher's share of the distillation target (they are normalised to sum "
                            "to 1); negative shares are meaningless, 0 leaves a teacher out")
    if sum(weights) <= 0:
        raise ValueError(f"teacher_weights {list(weights)} sum to 0; give at least one teacher a positive weight")
    return tuple(float(w) for w in weights)


def _check_val_size(val_size: Any) -> None:
    """val_size: a count of at least 1 or a fraction strictly between 0 and 1 of the training images."""
    if isinstance(val_size, numbers.Real) and not isinstance(val_size, numbers.Integral):
        require_number("val_size", val_size, above=0, below=1,
                       hint="a fraction of the training images such as 0.1, or a count such as 1000")
    else:
        require_int("val_size", val_size, least=1)


def teacher_list(teachers: Any) -> list[Any]:
    """One teacher given alone (a name or a module) becomes a list of one."""
    return [teachers] if isinstance(teachers, (str, nn.Module)) else list(teachers)


def check_teachers(method: Method, teachers: Sequence[Any], teacher_weights: Sequence[float] | None
                   ) -> torch.Tensor | None:
    """Refuse a distillation method without teachers or weights for another number of teachers; return the
    weights normalised to sum to 1 (None: equal shares)."""
    check_teachers_given(method, teachers)
    if teacher_weights is None:
        return None
    if len(teacher_weights) != len(teachers):
        raise ValueError(f"teacher_weights has {len(teacher_weights)} entries for {len(teachers)} teachers")
    weights = torch.tensor(teacher_weights, dtype=torch.float32)
    return weights / weights.sum()
