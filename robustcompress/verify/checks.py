"""Gradient-masking sanity checks: is the robustness measurement itself trustworthy? Each check is pass/warn/skip.

The checks follow the evaluation checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness",
section 5) and the flags AutoAttack raises itself (Croce & Hein 2020):

* ``finite_logits_nonzero_gradients``: logits are finite and the input gradient of the attack losses is non-zero;
* ``accuracy_decreases_with_eps``: accuracy does not increase as the budget grows;
* ``large_eps_breaks_model``: a very large budget drives accuracy near zero;
* ``blackbox_not_stronger``: the black-box Square attack breaks no (noticeably) more samples than white-box ones;
* ``more_iterations_not_weaker``: PGD beats FGSM, more steps and more restarts are not weaker than fewer;
* ``transfer_not_stronger``: adversarial images crafted on another model do not break samples the white-box
  attacks could not;
* ``autoattack_flags``: AutoAttack's own warnings (zero gradients, randomised or dynamic defence, Square success).

Thresholds: differences count only above ``max(tolerance, 1/n)`` so that one sample of noise on a small
evaluation set does not warn.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from robustcompress.attacks.common import eval_mode, project
from robustcompress.attacks.losses import cross_entropy, cw_margin
from robustcompress.arguments import require_int, require_number
from robustcompress.verify.evaluate import EvalReport, attack_flags
from robustcompress.attacks.registry import get_attack
from robustcompress.attacks.square import DEFAULT_SQUARE_QUERIES
from robustcompress.runtime_env import progress_bar

CHECK_LEVELS = ("full", "quick", "none")
PASS, WARN, SKIP = "pass", "warn", "skip"


@dataclass
class CheckSettings:
    """How hard the checks probe. ``level``: 'full' runs extra attacks where a check needs them; 'quick' only
    compares what was measured anyway plus one gradient pass; 'none' runs no checks."""

    level: str = "full"
    tolerance: float = 0.02
    base_attack: str = "pgd20"
    sweep_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    large_eps: float = 0.5
    large_eps_max_acc: float = 0.10
    square_queries: int = 1000
    strong_steps: int = 100
    restarts: int = 5

    def __post_init__(self) -> None:
        if self.level not in CHECK_LEVELS:
            raise ValueError(f"unknown check level '{self.level}'; use one of {', '.join(CHECK_LEVELS)}")
        for name in ("square_queries", "strong_steps", "restarts"):
            require_int(name, getattr(self, name), least=1)
        require_number("tolerance", self.tolerance, least=0, most=1, hint="an accuracy margin, e.g. 0.02")
        require_number("large_eps", self.large_eps, above=0, most=1, hint="pixel units, e.g. 0.5")
        require_number("large_eps_max_acc", self.large_eps_max_acc, least=0, most=1, hint="an accuracy, e.g. 0.1")
        for i, factor in enumerate(self.sweep_factors):
            require_number(f"sweep_factors[{i}]", factor, above=0, hint="multiples of eps, e.g. 0.5,1,2")
        if get_attack(self.base_attack).kind != "white-box" or not self.base_attack.startswith("pgd"):
            raise ValueError(f"base_attack must be a PGD attack such as 'pgd20', got '{self.base_attack}'")

    @classmethod
    def from_items(cls, level: str, items: Sequence[str]) -> "CheckSettings":
        """Settings from 'KEY=VALUE' strings (the CLI's --check-arg), e.g. 'restarts=10', 'sweep_factors=0.5,1,2'."""
        known = [f.name for f in fields(cls) if f.name != "level"]
        values: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise ValueError(f"--check-arg '{item}' must be KEY=VALUE with KEY one of {', '.join(known)}")
            try:
                if key == "base_attack":
                    values[key] = value
                elif key == "sweep_factors":
                    values[key] = tuple(float(v) for v in value.split(","))
                else:
                    number = float(value)
                    values[key] = int(number) if key in ("square_queries", "strong_steps", "restarts") else number
            except ValueError as exc:
                raise ValueError(f"--check-arg '{item}': '{value}' is not a number; e.g. {key}=10") from exc
        return cls(level=level, **values)


@dataclass
class CheckResult:
    """One sanity check: its verdict, a sentence saying why, and the numbers behind it."""

    name: str
    status: str
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _NotMeasured(Exception):
    """A quick-level check needed an attack that was not run."""


class Probe:
    """Per-sample attack results on one model, measured on demand and cached, for the checks to compare."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, report: EvalReport,
                 batch_size: int, device: torch.device | str, seed: int, scorer: nn.Module | None,
                 allow_new: bool, white_box: bool) -> None:
        self.model, self.x, self.y, self.eps = model, x, y, eps
        self.scorer = model if scorer is None else scorer
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.allow_new, self.white_box = allow_new, white_box
        self.report = report
        self.cache: dict[tuple[str, float, int], torch.Tensor] = {
            (name, eps, seed): torch.tensor(flags, dtype=torch.bool) for name, flags in report.per_sample.items()
        }
        self.cache[("clean", 0.0, seed)] = self.cache[("clean", eps, seed)]
        self.n = len(y)

    def flags(self, attack: str, eps: float | None = None, seed: int | None = None) -> torch.Tensor:
        eps = self.eps if eps is None else eps
        seed = self.seed if seed is None else seed
        key = ("clean" if eps == 0 else attack, eps, seed)
        if key not in self.cache:
            if not self.allow_new:
                raise _NotMeasured(f"{attack} at eps {eps:.4f}")
            self.cache[key] = attack_flags(self.model, self.x, self.y, key[0], eps, self.batch_size, self.device,
                                           seed, self.scorer)
        return self.cache[key]

    def acc(self, attack: str, eps: float | None = None, seed: int | None = None) -> float:
        return self.flags(attack, eps, seed).float().mean().item()

    def whitebox_names(self) -> list[str]:
        """White-box attacks of the main run (AutoAttack 'standard' excluded: it contains Square)."""
        gradient_only = ("autoattack-fast", "apgd-ce")
        return [n for n in self.report.robust_acc if get_attack(n).kind == "white-box" or n in gradient_only]

    def whitebox_robust(self, base_attack: str) -> tuple[torch.Tensor, list[str]]:
        names = self.whitebox_names() or [base_attack]
        flags = torch.stack([self.flags(n) for n in names]).all(dim=0)
        return flags, names


def _tolerance(settings: CheckSettings, n: int) -> float:
    return max(settings.tolerance, 1.0 / n) + 1e-9


def check_gradients(probe: Probe, settings: CheckSettings) -> CheckResult:
    """Logits finite on clean and randomly perturbed images; input gradients of CE and CW-margin losses non-zero."""
    name = "finite_logits_nonzero_gradients"
    if not probe.white_box:
        return CheckResult(name, SKIP, "black-box model: no gradients to inspect (give a PyTorch twin)")
    nonfinite = 0
    zero = {"ce_clean": 0, "ce_random": 0, "margin_clean": 0, "margin_random": 0}
    nonfinite_grad = 0
    norms: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(probe.seed)
    with eval_mode(probe.model), torch.enable_grad():
        for start in range(0, probe.n, probe.batch_size):
            xb = probe.x[start : start + probe.batch_size].to(probe.device)
            yb = probe.y[start : start + probe.batch_size].to(probe.device)
            noise = (torch.rand(xb.shape, generator=generator) * 2 - 1).to(xb.device) * probe.eps
            for where, point in (("clean", xb), ("random", project(xb + noise, xb, probe.eps))):
                point = point.detach().requires_grad_(True)
                logits = probe.model(point)
                nonfinite += int((~torch.isfinite(logits).all(dim=1)).sum())
                for loss_name, loss_fn in (("ce", cross_entropy), ("margin", cw_margin)):
                    (grad,) = torch.autograd.grad(loss_fn(logits, yb).sum(), point, retain_graph=True)
                    l1 = grad.flatten(1).abs().sum(dim=1)
                    nonfinite_grad += int((~torch.isfinite(l1)).sum())
                    zero[f"{loss_name}_{where}"] += int((l1 == 0).sum())
                    if loss_name == "ce" and where == "clean":
                        norms.append(l1.detach().cpu())
    if probe.scorer is not probe.model:
        with torch.no_grad():
            scored = probe.scorer(probe.x[: probe.batch_size].to(probe.device))
        nonfinite += int((~torch.isfinite(scored).all(dim=1)).sum())
    numbers: dict[str, Any] = {
        "n": probe.n,
        "nonfinite_logits": nonfinite,
        "nonfinite_gradients": nonfinite_grad,
        **{f"zero_gradient_fraction_{k}": v / probe.n for k, v in zero.items()},
        "median_gradient_l1_ce": torch.cat(norms).median().item(),
    }
    problems = []
    if nonfinite:
        problems.append(f"{nonfinite} images give non-finite logits")
    if nonfinite_grad:
        problems.append(f"{nonfinite_grad} input gradients are NaN or infinite")
    for key, count in zero.items():
        if count:
            loss_name, where = key.split("_")
            problems.append(f"{count} of {probe.n} {where} images have an exactly zero {loss_name.upper()} gradient")
    if problems:
        return CheckResult(name, WARN, "; ".join(problems) + ": gradient-based attacks cannot make progress there, "
                           "so their robust accuracy is an overestimate (masked or saturated gradients).", numbers)
    return CheckResult(name, PASS, "logits finite and every input gradient non-zero", numbers)


def check_eps_monotone(probe: Probe, settings: CheckSettings, sweep: Mapping[str, Any] | None) -> CheckResult:
    """Accuracy must not rise with eps (a bigger ball contains every smaller one)."""
    name = "accuracy_decreases_with_eps"
    if sweep is not None:
        attack, eps_values, accs = sweep["attack"], list(sweep["eps"]), list(sweep["accuracy"])
    else:
        if not probe.white_box:
            return CheckResult(name, SKIP, "black-box model: no white-box sweep")
        attack = settings.base_attack
        eps_values = sorted({0.0, *(f * probe.eps for f in settings.sweep_factors)})
        accs = [probe.acc(attack, e) for e in eps_values]
    tol = _tolerance(settings, probe.n)
    rises = [(eps_values[i], eps_values[i + 1], accs[i + 1] - accs[i]) for i in range(len(accs) - 1)]
    worst = max(rises, key=lambda r: r[2]) if rises else (0.0, 0.0, 0.0)
    numbers = {"attack": attack, "eps": eps_values, "accuracy": accs, "largest_increase": max(worst[2], 0.0),
               "tolerance": tol}
    if worst[2] > tol:
        return CheckResult(name, WARN, f"accuracy rises by {worst[2]:.3f} from eps {worst[0] * 255:.3g}/255 to "
                           f"{worst[1] * 255:.3g}/255 under {attack}: the attack is not finding the worst case "
                           "(masked gradients or a broken attack).", numbers)
    return CheckResult(name, PASS, f"accuracy under {attack} does not rise with eps", numbers)


def check_large_eps(probe: Probe, settings: CheckSettings) -> CheckResult:
    """An unreasonably large budget must break (nearly) everything."""
    name = "large_eps_breaks_model"
    if not probe.white_box:
        return CheckResult(name, SKIP, "black-box model: no white-box attack at large eps")
    acc = probe.acc(settings.base_attack, settings.large_eps)
    numbers = {"attack": settings.base_attack, "eps": settings.large_eps, "accuracy": acc,
               "max_accuracy": settings.large_eps_max_acc}
    if acc > settings.large_eps_max_acc + 1e-9:
        return CheckResult(name, WARN, f"{acc:.3f} of images survive {settings.base_attack} at eps "
                           f"{settings.large_eps:.2f} ({settings.large_eps * 255:.0f}/255), where any image can be "
                           f"pushed to mid-grey; expected <= {settings.large_eps_max_acc:.2f}. The attack is not "
                           "working on this model.", numbers)
    return CheckResult(name, PASS, f"accuracy {acc:.3f} at eps {settings.large_eps:.2f}", numbers)


def check_blackbox(probe: Probe, settings: CheckSettings) -> CheckResult:
    """The query-only Square attack must not break samples every white-box attack missed."""
    name = "blackbox_not_stronger"
    ran = [n for n in probe.report.robust_acc if get_attack(n).kind == "black-box"]
    square = ran[0] if ran else (
        "square" if settings.square_queries == DEFAULT_SQUARE_QUERIES else f"square{settings.square_queries}")
    if not probe.white_box:
        return CheckResult(name, SKIP, "black-box model: nothing white-box to compare Square with")
    square_flags = probe.flags(square)
    white, names = probe.whitebox_robust(settings.base_attack)
    only = (~square_flags & white).float().mean().item()
    tol = _tolerance(settings, probe.n)
    numbers = {"square_attack": square, "square_accuracy": square_flags.float().mean().item(),
               "whitebox_attacks": names, "whitebox_worst_case_accuracy": white.float().mean().item(),
               "broken_only_by_square": only, "tolerance": tol}
    if only > tol:
        return CheckResult(name, WARN, f"Square (black-box) breaks {only:.3f} of samples that survive every white-box "
                           f"attack ({', '.join(names)}): the gradients mislead the white-box attacks.", numbers)
    return CheckResult(name, PASS, f"Square breaks {only:.3f} of samples the white-box attacks missed", numbers)


def _pgd_family(name: str) -> tuple[int, int] | None:
    """(steps, restarts) of FGSM and cross-entropy PGD attacks; None for anything else."""
    attack = get_attack(name)
    if attack.kind != "white-box" or attack.settings["loss"] != "ce":
        return None
    return int(attack.settings["steps"]), int(attack.settings.get("restarts", 1))


def check_iterations(probe: Probe, settings: CheckSettings) -> CheckResult:
    """PGD beats FGSM; more steps and fresh random restarts are not weaker than fewer."""
    name = "more_iterations_not_weaker"
    if not probe.white_box:
        return CheckResult(name, SKIP, "black-box model: no iterative white-box attacks")
    # label -> (steps, restarts, seed); at level 'full' FGSM, the base PGD, a long PGD and fresh restarts join in.
    family = {n: (*f, probe.seed) for n in probe.report.robust_acc if (f := _pgd_family(n)) is not None}
    if probe.allow_new:
        base_steps = int(get_attack(settings.base_attack).settings["steps"])
        family.setdefault("fgsm", (1, 1, probe.seed))
        family.setdefault(settings.base_attack, (base_steps, 1, probe.seed))
        if settings.strong_steps > base_steps:
            family.setdefault(f"pgd{settings.strong_steps}", (settings.strong_steps, 1, probe.seed))
        if settings.restarts > 1:
            # Fresh seeds, so the restarts are a real second opinion and not a superset of the base run.
            family[f"{settings.base_attack}x{settings.restarts} (fresh seeds)"] = (
                base_steps, settings.restarts, probe.seed + 10_000)
    pairs = [(w, s) for w in family for s in family
             if w != s and family[s][:2] != family[w][:2] and family[s][0] >= family[w][0]
             and family[s][1] >= family[w][1]]
    if not pairs:
        raise _NotMeasured("two attacks of the FGSM / PGD family, e.g. fgsm and pgd20")
    acc = {}
    for label, (steps, restarts, seed) in family.items():
        attack = "fgsm" if label == "fgsm" else (f"pgd{steps}" + (f"x{restarts}" if restarts > 1 else ""))
        acc[label] = probe.acc(attack, seed=seed)
    tol = _tolerance(settings, probe.n)
    problems = [f"{s} leaves {acc[s]:.3f} accuracy, more than {w} ({acc[w]:.3f})"
                for w, s in pairs if acc[s] > acc[w] + tol]
    numbers = {"accuracy": acc, "comparisons": [f"{s} <= {w}" for w, s in pairs], "tolerance": tol}
    if problems:
        return CheckResult(name, WARN, "; ".join(problems) + ": the iterative attack is not converging (masked or "
                           "noisy gradients, or too large a step).", numbers)
    return CheckResult(name, PASS, "more steps and restarts are at least as strong as fewer", numbers)


def check_transfer(probe: Probe, settings: CheckSettings, sources: Mapping[str, nn.Module]) -> CheckResult:
    """Images crafted on other models must not break samples the white-box attacks could not."""
    name = "transfer_not_stronger"
    if not sources:
        return CheckResult(name, SKIP, "no other model to transfer from; pass transfer_from=... (CLI "
                           "--transfer-from) or verify a bundle with teachers")
    if not probe.white_box:
        return CheckResult(name, SKIP, "black-box model: nothing white-box to compare transfer with")
    if not probe.allow_new:
        raise _NotMeasured("transfer attacks")
    white, names = probe.whitebox_robust(settings.base_attack)
    tol = _tolerance(settings, probe.n)
    per_source: dict[str, dict[str, float]] = {}
    for source_name, source in sources.items():
        flags = attack_flags(source.to(probe.device), probe.x, probe.y, settings.base_attack, probe.eps,
                             probe.batch_size, probe.device, probe.seed, probe.scorer)
        per_source[source_name] = {"accuracy": flags.float().mean().item(),
                                   "broken_only_by_transfer": (~flags & white).float().mean().item()}
    worst_name = max(per_source, key=lambda k: per_source[k]["broken_only_by_transfer"])
    only = per_source[worst_name]["broken_only_by_transfer"]
    numbers = {"attack": settings.base_attack, "sources": per_source, "whitebox_attacks": names,
               "whitebox_worst_case_accuracy": white.float().mean().item(), "tolerance": tol}
    if only > tol:
        return CheckResult(name, WARN, f"{settings.base_attack} transferred from {worst_name} breaks {only:.3f} of "
                           "samples that survive every white-box attack: the model's own gradients are "
                           "uninformative (gradient masking).", numbers)
    return CheckResult(name, PASS, f"transfer from {', '.join(per_source)} breaks nothing the white-box attacks "
                       "missed (beyond tolerance)", numbers)


def check_autoattack_flags(probe: Probe, settings: CheckSettings) -> CheckResult:
    """Surface the warnings AutoAttack printed while it ran."""
    name = "autoattack_flags"
    ran = [n for n in probe.report.robust_acc if get_attack(n).kind == "autoattack"]
    if not ran:
        return CheckResult(name, SKIP, "AutoAttack was not run")
    flags = {n: probe.report.attack_warnings.get(n, []) for n in ran}
    raised = [f"{n}: {m}" for n, messages in flags.items() for m in messages]
    if raised:
        return CheckResult(name, WARN, "AutoAttack flagged the evaluation: " + " | ".join(raised),
                           {"flags": flags})
    return CheckResult(name, PASS, f"AutoAttack ({', '.join(ran)}) raised no flags", {"flags": flags})


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    report: EvalReport,
    *,
    settings: CheckSettings | None = None,
    sweep: Mapping[str, Any] | None = None,
    transfer_from: Mapping[str, nn.Module] | None = None,
    scorer: nn.Module | None = None,
    white_box: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[CheckResult]:
    """Run every sanity check on the images (x, y) that ``report`` was measured on and return their verdicts.

    ``sweep`` (from :func:`robustcompress.verify.sweep.eps_sweep`) replaces the small built-in one;
    ``transfer_from`` names the models to craft transfer attacks on; ``white_box=False`` means ``model`` has no
    usable gradients (an ONNX session), so only black-box checks run.
    """
    settings = settings or CheckSettings()
    if settings.level == "none":
        return []
    if len(y) != report.n_examples:
        raise ValueError(f"the checks got {len(y)} images but the report was measured on {report.n_examples}")
    probe = Probe(model, x, y, report.eps, report, batch_size, device, report.seed, scorer,
                  allow_new=settings.level == "full", white_box=white_box)
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        ("finite_logits_nonzero_gradients", lambda: check_gradients(probe, settings)),
        ("accuracy_decreases_with_eps", lambda: check_eps_monotone(probe, settings, sweep)),
        ("large_eps_breaks_model", lambda: check_large_eps(probe, settings)),
        ("blackbox_not_stronger", lambda: check_blackbox(probe, settings)),
        ("more_iterations_not_weaker", lambda: check_iterations(probe, settings)),
        ("transfer_not_stronger", lambda: check_transfer(probe, settings, dict(transfer_from or {}))),
        ("autoattack_flags", lambda: check_autoattack_flags(probe, settings)),
    ]
    results = []
    for name, run in progress_bar(checks, "sanity checks", progress):
        t0 = time.perf_counter()
        try:
            result = run()
        except _NotMeasured as exc:
            result = CheckResult(name, SKIP, f"not run at check level 'quick' (needs {exc}); use checks='full'")
        result.numbers["time_s"] = time.perf_counter() - t0
        results.append(result)
    return results


def checks_passed(results: Sequence[CheckResult | Mapping[str, Any]]) -> bool:
    """True when no check warned (skipped checks do not count against the model)."""
    return all((r.status if isinstance(r, CheckResult) else r["status"]) != WARN for r in results)
