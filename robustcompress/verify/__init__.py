"""Measure robustness the careful way: several attacks, per-sample worst case, masking checks, reports, a gate."""
from robustcompress.verify.checks import CheckResult, CheckSettings, run_checks
from robustcompress.verify.evaluate import EvalReport, evaluate
from robustcompress.verify.gate import evaluate_gate, format_gate, parse_requirement
from robustcompress.verify.report import render_markdown, write_report
from robustcompress.verify.runner import Verification, verify_model
from robustcompress.attacks import PRESETS, get_attack, list_attacks, resolve_attacks
from robustcompress.verify.sweep import DEFAULT_SWEEP_EPS, eps_sweep

__all__ = [
    "CheckResult",
    "CheckSettings",
    "DEFAULT_SWEEP_EPS",
    "EvalReport",
    "PRESETS",
    "Verification",
    "eps_sweep",
    "evaluate",
    "evaluate_gate",
    "format_gate",
    "get_attack",
    "list_attacks",
    "parse_requirement",
    "render_markdown",
    "resolve_attacks",
    "run_checks",
    "verify_model",
    "write_report",
]
