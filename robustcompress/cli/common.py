"""Argument helpers shared by sub-commands: config files and eps given as fractions like 8/255."""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path
from typing import Any


def parse_eps(value: str | float | int, what: str = "eps") -> float:
    """An L-inf budget in pixel units, by one rule everywhere (flags, config files, the benchmark).

    Accepted: a fraction such as '8/255', or a decimal number in [0, 1] such as '0.0314' or 1.0. Rejected with a
    hint: a bare integer other than 0 ('8' could mean 8 or 8/255) and anything above 1 (images lie in [0, 1]).
    Raises ValueError naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Fraction)):
        raise ValueError(f"{what} must be a number such as 8/255 or 0.0314; got {value!r}")
    text = str(value).strip()
    try:
        exact = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{what} '{text}' is not a number; write e.g. 8/255 or 0.0314") from exc
    is_bare_integer = isinstance(value, int) or text.lstrip("+-").isdigit()
    hint = f"did you mean {text}/255 = {float(exact) / 255:.4f}?" if exact > 0 else "eps cannot be negative"
    if exact < 0 or exact > 1:
        raise ValueError(f"{what} {text} is outside [0, 1]: eps is in pixel units (images lie in [0, 1]); {hint}")
    if is_bare_integer and exact != 0:
        raise ValueError(f"{what} {text} is ambiguous (the whole pixel range or {text}/255?); write {text}/255 for "
                         f"{float(exact) / 255:.4f} or {text}.0 for the whole range")
    return float(exact)


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


def non_negative_float(text: str) -> float:
    """argparse type for quantities that may be 0 but not negative (teacher weights)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from exc
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number of at least 0")
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
