"""Argument helpers shared by sub-commands: config files and eps given as fractions like 8/255 (by the one rule
of robustcompress.trainer.config.parse_eps, which the Python API applies too)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from robustcompress.arguments import closest_name_hint, parse_eps

__all__ = ["parse_eps"]  # re-exported: sub-commands and benchmarks take it from here


def eps_value(text: str) -> float:
    """argparse type for --eps: :func:`parse_eps` with argparse's error type."""
    try:
        return parse_eps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (epochs, steps, batch sizes, image counts)."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for counts that may be 0 (e.g. latency runs: 0 skips them)."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from exc
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is too small: it must be at least {least}")
    return value


def positive_float(text: str) -> float:
    """argparse type for quantities that must be above 0 (learning rates, tolerances)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def parity_tolerance(text: str) -> float:
    """argparse type for --tolerance: above 0 and at most MAX_PARITY_TOLERANCE (more is no rounding error)."""
    from robustcompress.export import MAX_PARITY_TOLERANCE

    value = positive_float(text)
    if value > MAX_PARITY_TOLERANCE:
        raise argparse.ArgumentTypeError(f"{text} must be at most {MAX_PARITY_TOLERANCE:g}: a larger |logit "
                                         "difference| is no rounding error, the graph computes something else")
    return value


def read_config(path: str | None) -> dict[str, Any]:
    """A YAML or JSON file of RobustCompressor arguments (keys as in the Python API)."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read config file {file} ({exc}); pass a readable YAML or JSON text file") from exc
    if file.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"config file {file} is not valid YAML{where}: {problem}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {file} is not valid JSON at line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg} (YAML files must end in .yaml or .yml)") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {file} must hold a mapping of argument names to values")
    return data


def check_config_keys(config: dict[str, Any], path: str | None, known: Sequence[str]) -> None:
    """Refuse a config key that is not one of ``known`` (the API's argument names), naming it and the closest."""
    for key in config:
        if key not in known:
            raise ValueError(f"config file {path} has an unknown key '{key}'; {closest_name_hint(str(key), known)}keys are the Python API's "
                             f"argument names: {', '.join(known)}")
