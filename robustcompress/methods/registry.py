"""The method registry and the two-halves contract every method follows."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

_REGISTRY: dict[str, type["Method"]] = {}


@dataclass
class StepContext:
    """Everything one training step knows: the batch, the models and the attack budget."""

    x: torch.Tensor
    y: torch.Tensor
    student: nn.Module
    teachers: Sequence[nn.Module]
    teacher_weights: torch.Tensor | None
    num_classes: int
    eps: float
    step_size: float
    steps: int
    epoch: int = 0
    epochs: int = 1
    cache: dict[str, Any] = field(default_factory=dict)  # lets perturb() hand tensors to loss()
    #: the batch's precomputed clean-teacher outputs (teacher_outputs="cached"), None when teachers run live
    teacher_outputs: Any = None


class Method(nn.Module):
    """A method is two things: ``perturb`` (how the training adversarial example is made) and ``loss``.

    Subclasses are nn.Modules so trainable extras (feature adapters) and state (adaptive weights) are saved with
    the checkpoint and optimised with the student.
    """

    name: str = ""
    #: whether the method distils from teachers by design; False for teacher-free ones (PGD-AT, TRADES, standard)
    uses_teachers: bool = True
    #: whether perturb() attacks the batch (so training needs steps >= 1 when eps > 0); False for clean training
    adversarial: bool = True
    #: one-line description for --help and docs
    summary: str = ""

    @property
    def needs_teacher(self) -> bool:
        """Whether training with these hyperparameters needs at least one teacher (AKD/ARD with alpha=0 do not).

        A subclass may still set ``needs_teacher = False`` as a class attribute; that overrides this property.
        """
        return self.uses_teachers

    def clean_teacher_plan(self, num_teachers: int) -> Any:
        """The teachers this method queries on clean images only (a ``CleanTeacherPlan``), whose outputs may be
        precomputed once (``teacher_outputs="cached"``); None when no teacher output can be cached."""
        return None

    def setup(self, student: nn.Module, teachers: Sequence[nn.Module], num_classes: int, input_size: int) -> None:
        """Called once before training, when the models are known (build adapters here)."""

    def perturb(self, ctx: StepContext) -> torch.Tensor:
        """Inner maximisation: the adversarial training input for this batch."""
        raise NotImplementedError

    def loss(self, ctx: StepContext, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outer minimisation: (scalar loss, student logits on x_adv for running accuracy)."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> None:
        """Hook for methods with state that changes per epoch."""

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments, for reports and configs."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that makes a Method available to create_method(name)."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method '{name}' is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    """Names accepted by create_method and RobustCompressor(method=...)."""
    return sorted(_REGISTRY)


def create_method(name: str, **kwargs: Any) -> Method:
    """Instantiate a registered method with its hyperparameters (unspecified ones keep the paper's defaults)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown method '{name}'.{hint} Available: {', '.join(list_methods())}")
    cls = _REGISTRY[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(
            f"method '{name}' has no hyperparameter(s) {sorted(unknown)}; it accepts {sorted(accepted) or 'none'}"
        )
    check_numeric_hyperparameters(name, cls, kwargs)
    return cls(**kwargs)


def check_numeric_hyperparameters(name: str, cls: type[Method], kwargs: dict[str, Any]) -> None:
    """A hyperparameter whose default is a number must be given a finite number (not NaN, inf or a string)."""
    from robustcompress.arguments import require_number

    parameters = inspect.signature(cls.__init__).parameters
    for key, value in kwargs.items():
        default = parameters[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            require_number(f"{key} (method '{name}')", value)
