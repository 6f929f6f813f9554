"""The robustcompress command line: one sub-command per module in this package."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import NoReturn, Sequence

from robustcompress.cli import demo, evaluate, export, fit, quickstart
from robustcompress.process_exit import exit_process

COMMANDS = (quickstart, fit, evaluate, export, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustcompress",
        description=(
            "Distil a small, adversarially robust student from teacher models, verify its robustness, "
            "and export it to ONNX. Start with 'robustcompress quickstart'."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch and attack")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `robustcompress` console script.

    Every failure ends as one line on stderr and exit status 2 (the traceback only with --debug); Ctrl-C ends as
    one line saying how to pick the work up again, with status 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"robustcompress {args.command}: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: whatever went wrong, the user gets one actionable line
        if args.debug:
            raise
        print(f"robustcompress {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The `robustcompress` console script and `python -m robustcompress`: main(), then the end of the process."""
    exit_process(main(argv))


def _resume_hint(args: argparse.Namespace) -> str:
    if args.command == "fit":
        if args.resume:
            return "rerun the same command to resume from the last finished epoch"
        instead = " instead of --overwrite" if getattr(args, "overwrite", False) else ""
        return f"rerun the same command with --resume{instead} to continue from the last finished epoch"
    if args.command == "evaluate" and getattr(args, "out", None) and not getattr(args, "no_resume", False):
        return "rerun the same command to resume (finished AutoAttack batches are kept in --out)"
    return "rerun the same command to start it again"


def describe_error(exc: BaseException) -> str:
    """One line for a failure: our own errors as written, system errors with a hint, the rest marked unexpected."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        hint = {
            errno.ENOSPC: "free some disk space or pass --out on another disk, then rerun",
            errno.EFBIG: "the file system's or the shell's file size limit (ulimit -f) was reached; raise it or "
                         "pass --out on another disk",
            errno.EACCES: "pass a path you may write to",
            errno.EROFS: "the file system is read-only; pass a writable path",
            errno.EISDIR: "a folder was given where a file was expected; pass a file path",
        }.get(exc.errno, "check the path and rerun")
        return _one_line(f"{exc.strerror or exc}{where}; {hint}")
    if isinstance(exc, (ValueError, FileNotFoundError, FloatingPointError, RuntimeError)):
        return _one_line(str(exc) or type(exc).__name__)
    return _one_line(f"unexpected {type(exc).__name__}: {exc}") + " (rerun with --debug for the traceback and report it)"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return text
    return lines[0] + (" [more with --debug]" if len(lines) > 1 else "")


if __name__ == "__main__":
    entry()
