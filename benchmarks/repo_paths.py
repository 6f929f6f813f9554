"""Paths and command lines as docs/results prints them: relative to the repository, never one machine's prefix."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]


def shown(path: str | Path) -> str:
    """``path`` relative to the repository when it lies in it or beside it (``../shared/data/...``), else absolute."""
    resolved = Path(path).resolve()
    try:
        return os.path.relpath(resolved, REPO) if resolved.is_relative_to(REPO.parent) else str(resolved)
    except ValueError:  # another drive on Windows
        return str(resolved)


def shown_argument(argument: str) -> str:
    """One command-line word with its absolute path, if any (``/x`` or ``--out=/x``), shown by :func:`shown`."""
    flag, equals, value = argument.partition("=") if argument.startswith("-") else ("", "", argument)
    return f"{flag}{equals}{shown(value)}" if Path(value).is_absolute() else argument


def shown_argv(argv: Sequence[str]) -> str:
    """A command's words as one shell line, each absolute path in them shown by :func:`shown`."""
    return shlex.join(shown_argument(a) for a in argv)


def shown_command(argv: Sequence[str]) -> str:
    """``python`` and a script's argv (``sys.argv``, or the script's path and its arguments) as one shell line."""
    return "python " + shown_argv(argv)


def shown_command_line(command: str) -> str:
    """A recorded shell line (one written before paths were shown relative, too) with its paths shown relative."""
    return shown_argv(shlex.split(command))
