"""The deployment gate: requirements like 'autoattack>=0.45' checked against a report, plus the sanity checks."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Mapping, Sequence

from robustcompress.attacks.registry import get_attack

_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
_REQUIREMENT = re.compile(r"^\s*(?P<metric>[A-Za-z][\w\-]*)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[0-9.]+)\s*(?P<pct>%?)\s*$")
#: Metric names besides attack names: clean accuracy and the per-sample worst case over every attack.
SPECIAL_METRICS = {"clean": "clean_acc", "worst_case": "worst_case_acc", "worst-case": "worst_case_acc",
                   "worst": "worst_case_acc"}


@dataclass(frozen=True)
class Requirement:
    """One gate condition, e.g. metric 'autoattack', op '>=', threshold 0.45.

    ``exact_threshold`` is the threshold as written ('0.45' is exactly 9/20), which the gate compares with.
    """

    text: str
    metric: str
    op: str
    threshold: float
    exact_threshold: Fraction = field(default=Fraction(0), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.exact_threshold == 0 and self.threshold != 0:
            object.__setattr__(self, "exact_threshold", Fraction(repr(self.threshold)))


def parse_requirement(text: str) -> Requirement:
    """Read 'autoattack>=0.45', 'clean >= 80%' or 'worst_case>0.4' (accuracies are fractions in [0, 1])."""
    match = _REQUIREMENT.match(text)
    if not match:
        raise ValueError(f"requirement '{text}' is not of the form METRIC>=VALUE, e.g. 'autoattack>=0.45' or "
                         "'clean>=0.80'")
    try:
        exact = Fraction(match["value"]) / (100 if match["pct"] else 1)
    except ValueError as exc:
        raise ValueError(f"requirement '{text}': '{match['value']}' is not a number; write e.g. 0.45 or 45%") from exc
    value = float(exact)
    if not 0 <= exact <= 1:
        raise ValueError(f"requirement '{text}': accuracies are fractions in [0, 1]; write 0.45 or 45%")
    metric = match["metric"].lower()
    if metric not in SPECIAL_METRICS:
        get_attack(metric)  # a readable error for typos such as 'autoatack'
    return Requirement(text.strip(), metric, match["op"], value, exact)


def check_requirements_measurable(requirements: Sequence[Requirement], attacks: Sequence[str]) -> None:
    """Fail before any attack runs when a requirement names an attack that is not going to be run."""
    for req in requirements:
        if req.metric not in SPECIAL_METRICS and req.metric not in attacks:
            raise ValueError(
                f"requirement '{req.text}' needs the attack '{req.metric}', which is not among the attacks to run "
                f"({', '.join(attacks) or 'none'}); add it with --attacks {req.metric}"
                + (" or use --preset standard" if req.metric == "autoattack" else "")
            )


def metric_value(report: Mapping[str, Any], metric: str) -> float:
    """The accuracy a requirement refers to, read from a report dict (EvalReport.to_dict() or report.json)."""
    if metric in SPECIAL_METRICS:
        return float(report[SPECIAL_METRICS[metric]])
    robust = report.get("robust_acc", {})
    if metric not in robust:
        raise ValueError(f"the report has no result for '{metric}' (it has: clean, worst_case, "
                         f"{', '.join(robust)})")
    return float(robust[metric])


def metric_count(report: Mapping[str, Any], metric: str) -> tuple[int, int] | None:
    """(correct, total) for the accuracy a requirement refers to, or None when the report has no n_examples.

    Reads the report's ``correct`` counts; a report written before counts were stored gives its rounded accuracy
    times ``n_examples``, which recovers the count exactly (float rounding is far below 1 / n).
    """
    key = SPECIAL_METRICS.get(metric, metric)
    count_key = {"clean_acc": "clean", "worst_case_acc": "worst_case"}.get(key, key)
    value = metric_value(report, metric)  # also the readable error for a metric the report lacks
    total = int(report.get("n_examples") or 0)
    if total <= 0:
        return None
    counts = report.get("correct") or {}
    if count_key in counts:
        return int(counts[count_key]), total
    return round(value * total), total


def metric_fraction(report: Mapping[str, Any], metric: str) -> Fraction:
    """The accuracy as an exact fraction: correct / total, or the decimal as written when there are no counts."""
    count = metric_count(report, metric)
    return Fraction(*count) if count is not None else Fraction(repr(metric_value(report, metric)))


def evaluate_gate(report: Mapping[str, Any], requirements: Sequence[Requirement | str],
                  fail_on_check_warnings: bool = True) -> dict[str, Any]:
    """Check the requirements (and, by default, that no sanity check warned) against a report dict.

    Returns ``{"passed", "requirements": [{text, metric, op, threshold, value, met}], "failures": [sentences],
    "fail_on_check_warnings"}``.
    """
    parsed = [parse_requirement(r) if isinstance(r, str) else r for r in requirements]
    rows, failures = [], []
    for req in parsed:
        count = metric_count(report, req.metric)
        exact = metric_fraction(report, req.metric)
        value = float(exact)
        met = bool(_OPS[req.op](exact, req.exact_threshold))
        row = {k: v for k, v in asdict(req).items() if k != "exact_threshold"}
        correct, total = count if count is not None else (None, None)
        rows.append({**row, "value": value, "correct": correct, "total": total, "met": met})
        if not met:
            counted = f" ({correct}/{total})" if count is not None else ""
            failures.append(f"{req.metric} accuracy is {value:.4f}{counted}, but the requirement is {req.metric} {req.op} "
                            f"{req.threshold:g} ('{req.text}')")
    if fail_on_check_warnings:
        for check in report.get("checks", []):
            if check["status"] == "warn":
                failures.append(f"sanity check '{check['name']}' warns: {check['message']}")
    return {"passed": not failures, "requirements": rows, "failures": failures,
            "fail_on_check_warnings": fail_on_check_warnings}


def format_gate(gate: Mapping[str, Any]) -> str:
    """A few readable lines for a terminal or CI log."""
    if gate["passed"]:
        met = ", ".join(f"{r['metric']} {r['value']:.4f} {r['op']} {r['threshold']:g}" for r in gate["requirements"])
        return "GATE PASSED" + (f": {met}" if met else " (no sanity check warned)")
    lines = [f"GATE FAILED ({len(gate['failures'])} problem{'s' if len(gate['failures']) != 1 else ''}):"]
    lines += [f"  - {f}" for f in gate["failures"]]
    return "\n".join(lines)
