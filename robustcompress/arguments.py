"""Argument checks every layer shares: whole numbers, finite numbers within bounds, and the one eps rule."""
from __future__ import annotations

import difflib
from fractions import Fraction
from typing import Any, Sequence

import numpy as np


def parse_eps(value: str | float | int, what: str = "eps") -> float:
    """An L-inf budget in pixel units, by one rule everywhere (flags, config files, the benchmark).

    Accepted: a fraction such as '8/255', or a decimal number in [0, 1] such as '0.0314' or 1.0. Rejected with a
    hint: a bare integer other than 0 ('8' could mean 8 or 8/255) and anything above 1 (images lie in [0, 1]).
    Raises ValueError naming ``what``.
    """
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Fraction)):
        raise ValueError(f"{what} must be a number such as 8/255 or 0.0314; got {value!r}")
    text = str(value).strip()
    try:
        exact = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{what} '{text}' is not a number; write e.g. 8/255 or 0.0314") from exc
    is_bare_integer = isinstance(value, int) or text.lstrip("+-").isdigit()
    hint = f"did you mean {text}/255 = {float(exact) / 255:.4f}?" if exact > 0 else f"{what} cannot be negative"
    if exact < 0 or exact > 1:
        raise ValueError(f"{what} {text} is outside [0, 1]: eps is in pixel units (images lie in [0, 1]); {hint}")
    if is_bare_integer and exact != 0:
        raise ValueError(f"{what} {text} is ambiguous (the whole pixel range or {text}/255?); write {text}/255 for "
                         f"{float(exact) / 255:.4f} or {text}.0 for the whole range")
    return float(exact)


def require_int(name: str, value: Any, least: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless value is a whole number (not a bool) and at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number; got {value!r} ({type(value).__name__})")
    if least is not None and value < least:
        raise ValueError(f"{name}={value} is too small: it must be at least {least}")


def require_number(name: str, value: Any, *, least: float | None = None, above: float | None = None,
                   most: float | None = None, below: float | None = None, hint: str = "") -> None:
    """Raise a ValueError naming ``name`` unless value is a finite real number inside the given bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    bounds = [(least, lambda v, b: v >= b, "at least"), (above, lambda v, b: v > b, "above"),
              (most, lambda v, b: v <= b, "at most"), (below, lambda v, b: v < b, "below")]
    for bound, holds, words in bounds:
        if bound is not None and not holds(value, bound):
            raise ValueError(f"{name}={value} must be {words} {bound:g}" + (f"; {hint}" if hint else ""))


def closest_name_hint(name: str, known: Sequence[str]) -> str:
    """"did you mean 'X'? " for the known name closest to a mistyped ``name`` (empty when none is close)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'? " if close else ""
