"""One verification pass: attack suite, per-sample worst case, eps sweep, sanity checks and the gate, as one result."""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from robustcompress.verify.checks import CheckResult, CheckSettings, checks_passed, run_checks
from robustcompress.verify.evaluate import EvalReport, evaluate, take_examples
from robustcompress.verify.gate import check_requirements_measurable, evaluate_gate, parse_requirement
from robustcompress.attacks.registry import get_attack, resolve_attacks
from robustcompress.verify.sweep import DEFAULT_SWEEP_ATTACK, DEFAULT_SWEEP_EPS
from robustcompress.verify.sweep import eps_sweep as run_eps_sweep

SCHEMA_VERSION = 1
BLACK_BOX_SWEEP_ATTACK = "square1000"


@dataclass
class Verification:
    """Everything one verification pass found; ``to_dict()`` is the report.json schema (docs/verification.md)."""

    report: EvalReport
    checks: list[CheckResult]
    model: dict[str, Any]
    data: dict[str, Any]
    preset: str | None = None
    check_settings: dict[str, Any] = field(default_factory=dict)
    eps_sweep: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    device_name: str = ""
    invocation: dict[str, Any] | None = None

    @property
    def checks_passed(self) -> bool:
        return checks_passed(self.checks)

    @property
    def gate_passed(self) -> bool | None:
        return None if self.gate is None else bool(self.gate["passed"])

    def apply_gate(self, requirements: Sequence[str], fail_on_check_warnings: bool = True) -> dict[str, Any]:
        """Check requirements such as 'autoattack>=0.45' against this result; stored in ``self.gate``."""
        self.gate = evaluate_gate(self.to_dict(), requirements, fail_on_check_warnings)
        return self.gate

    def metrics(self) -> dict[str, Any]:
        """The compact summary stored in a bundle's config.json and the ONNX metadata."""
        return {
            **self.report.to_dict(),
            "preset": self.preset,
            "checks_passed": self.checks_passed,
            "checks": {c.name: c.status for c in self.checks},
        }

    def to_dict(self, per_sample: bool = False) -> dict[str, Any]:
        out = self.report.to_dict(per_sample=per_sample)
        timings = {**out.pop("timings_s"), **self.timings_s}
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "versions": dict(self.versions),
            "model": dict(self.model),
            "data": dict(self.data),
            "device_name": self.device_name,
            **out,
            "eps_255": out["eps"] * 255,
            "preset": self.preset,
            "attacks": list(self.report.robust_acc),
            "checks": [c.to_dict() for c in self.checks],
            "checks_passed": self.checks_passed,
            "check_settings": dict(self.check_settings),
            "eps_sweep": None if self.eps_sweep is None else dict(self.eps_sweep),
            "gate": self.gate,
            "timings_s": timings,
            "invocation": self.invocation,
        }


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for package in ("robustcompress", "pyautoattack", "timm"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _sweep_values(eps_sweep_arg: bool | Sequence[float] | None, eps: float) -> list[float] | None:
    if eps_sweep_arg is None or eps_sweep_arg is False:
        return None
    values = list(DEFAULT_SWEEP_EPS) if eps_sweep_arg is True else [float(e) for e in eps_sweep_arg]
    return sorted({0.0, *values, eps})


def autoattack_state_dir(out_dir: str | Path | None, resume: bool = True) -> Path | None:
    """Where AutoAttack keeps its progress for a report folder (out_dir/autoattack_state); ``resume=False`` clears
    the progress saved there so the attacks start over. None without a folder."""
    if out_dir is None:
        return None
    state_dir = Path(out_dir) / "autoattack_state"
    if not resume and state_dir.is_dir():
        for stale in state_dir.glob("*.json"):
            stale.unlink()
    return state_dir


def verify_model(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    attacks: Sequence[str] | None = None,
    preset: str | None = None,
    eps: float = 8 / 255,
    n_examples: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    *,
    checks: str | CheckSettings = "full",
    eps_sweep: bool | Sequence[float] | None = None,
    sweep_attack: str | None = None,
    references: Mapping[str, nn.Module] | None = None,
    transfer_from: Mapping[str, nn.Module] | None = None,
    scorer: nn.Module | None = None,
    white_box: bool = True,
    state_dir: str | Path | None = None,
    require: Sequence[str] = (),
    fail_on_check_warnings: bool = True,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    progress: bool = False,
    evaluate_fn: Callable[..., EvalReport] = evaluate,
    shard: bool = False,
) -> Verification:
    """Attack ``model`` with a suite, take the per-sample worst case, sweep eps, run the sanity checks, gate.

    ``attacks``/``preset``: attack names and/or 'fast' | 'standard' (default: the 'fast' preset).
    ``checks``: 'full', 'quick', 'none' or a CheckSettings. ``eps_sweep``: True for 0..16/255, or a list of eps.
    ``references``: models to draw in the accuracy-vs-eps plot (teachers, baseline); they are also the
    transfer sources unless ``transfer_from`` says otherwise. ``scorer``/``white_box``: see
    :func:`robustcompress.verify.evaluate.evaluate` (an ONNX model with or without a PyTorch twin).
    ``state_dir`` makes AutoAttack resumable. ``require``: gate requirements such as 'autoattack>=0.45'.
    ``evaluate_fn`` replaces :func:`evaluate` for the attack suite; ``shard=True`` shares its images out among
    torchrun ranks (see :func:`evaluate`).
    """
    t_start = time.perf_counter()
    if attacks is None and preset is None:
        preset = "fast"
    names = resolve_attacks(attacks, preset)
    if not white_box:
        needing = [n for n in names if get_attack(n).needs_gradients]
        if needing:
            raise ValueError(f"attacks {needing} need gradients, which this model does not have (an ONNX file "
                             "without its PyTorch twin); use black-box attacks such as --attacks square, or give "
                             "the bundle the ONNX file was exported from")
    requirements = [parse_requirement(r) for r in require]
    check_requirements_measurable(requirements, names)
    settings = checks if isinstance(checks, CheckSettings) else CheckSettings(level=checks)
    x, y = take_examples(data, n_examples)
    model = model.to(device)
    report = evaluate_fn(model, (x, y), names, eps=eps, batch_size=batch_size, device=device, seed=seed,
                         progress=progress, scorer=scorer, state_dir=state_dir, **({"shard": True} if shard else {}))
    timings: dict[str, float] = {}

    sweep = None
    values = _sweep_values(eps_sweep, eps)
    if values is not None:
        t0 = time.perf_counter()
        attack = sweep_attack or (DEFAULT_SWEEP_ATTACK if white_box else BLACK_BOX_SWEEP_ATTACK)
        known = {eps: torch.tensor(report.per_sample[attack])} if attack in report.per_sample else None
        main = run_eps_sweep(model, x, y, values, attack, batch_size, device, seed, scorer, progress, known)
        info = dict(model_info or {})
        curves = {str(info.get("label") or info.get("name") or "model"): main["accuracy"]}
        for label, ref in (references or {}).items():
            curves[label] = run_eps_sweep(ref.to(device), x, y, values, attack, batch_size, device, seed,
                                          progress=progress)["accuracy"]
        sweep = {"attack": attack, "eps": values, "eps_255": [v * 255 for v in values], "accuracy": curves}
        timings["eps_sweep"] = time.perf_counter() - t0
        sweep_for_checks: dict[str, Any] | None = {"attack": attack, "eps": values, "accuracy": main["accuracy"]}
    else:
        sweep_for_checks = None

    t0 = time.perf_counter()
    sources = dict(references or {}) if transfer_from is None else dict(transfer_from)
    results = run_checks(model, x, y, report, settings=settings, sweep=sweep_for_checks, transfer_from=sources,
                         scorer=scorer, white_box=white_box, batch_size=batch_size, device=device, progress=progress)
    timings["checks"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    verification = Verification(
        report=report,
        checks=results,
        model=dict(model_info or {}),
        data={**dict(data_info or {}), "n_examples": report.n_examples},
        preset=preset,
        check_settings=asdict(settings),
        eps_sweep=sweep,
        timings_s=timings,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
        device_name=_device_name(device),
    )
    if requirements:
        verification.apply_gate([r.text for r in requirements], fail_on_check_warnings)
    return verification

