"""A run's output folder: which files a run owns there, the rule for a folder that holds an earlier run, the lock.

One place decides what ``fit`` may do with ``out_dir`` (docs/reliability.md, "Output folders"):

* a folder is **locked** for the whole run (:func:`folder_lock`): a second run into it stops at once, naming the
  holder's PID and host; the kernel drops the lock when its process dies, so a dead run never blocks a new one;
* the outputs of an earlier run (:func:`earlier_run_outputs`, an exact list) are never replaced silently: a new run
  needs ``overwrite=True`` (CLI ``--overwrite``), which removes them before training; ``resume=True`` continues the
  checkpoint there and removes the earlier bundle's other outputs (exports, report) once training has finished,
  as they describe a student that no longer exists.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator

log = logging.getLogger("robustcompress")

LOCK_NAME = ".robustcompress.lock"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILE = "last.pt"
VERIFICATION = "verification"
#: Per-epoch metrics of the run (robustcompress.trainer.epoch_log): one JSON line per epoch, TensorBoard events.
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
#: The bundle's files (robustcompress.bundle): config.json, student.safetensors, student_last.safetensors and
#: teacher_<N>.safetensors.
_BUNDLE_FILE = re.compile(r"config\.json|student(_last)?\.safetensors|teacher_\d+\.safetensors")
#: Exports (robustcompress.export): <stem>.onnx, <stem>.int8.onnx and their <stem>.report.json. The demo and
#: onnx_beside take any .onnx in a bundle folder as its student, so every one of them belongs to the bundle.
_EXPORT_SUFFIX = ".onnx"
_EXPORT_REPORT = ".report.json"


def earlier_run_outputs(folder: str | os.PathLike) -> list[Path]:
    """What an earlier run (fit, save, export) left in ``folder``, sorted: the bundle's files, checkpoints/,
    verification/, metrics.jsonl, tensorboard/, every .onnx file and the <stem>.report.json of each. Anything else
    is not a run's and is kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    onnx_stems = {p.name[: -len(_EXPORT_SUFFIX)] for p in folder.glob(f"*{_EXPORT_SUFFIX}")}
    onnx_stems |= {stem[: -len(".int8")] for stem in onnx_stems if stem.endswith(".int8")}
    for path in folder.iterdir():
        name = path.name
        if path.is_dir():
            owned = name in (CHECKPOINTS, VERIFICATION, TENSORBOARD_DIR)
        else:
            owned = bool(_BUNDLE_FILE.fullmatch(name)) or name == METRICS_FILE or name.endswith(_EXPORT_SUFFIX) or (
                name.endswith(_EXPORT_REPORT) and name[: -len(_EXPORT_REPORT)] in onnx_stems)
        if owned:
            found.append(path)
    return sorted(found)


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a training checkpoint that ``resume=True`` continues."""
    return (Path(folder) / CHECKPOINTS / CHECKPOINT_FILE).is_file()


def _listed(paths: list[Path], most: int = 4) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_output_folder(folder: str | os.PathLike, *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse a folder a run must not write to; return the earlier run's outputs the run will remove.

    ``resume`` with a checkpoint continues it (the bundle's other outputs are removed after training: see
    :func:`stale_after_resume`); otherwise the folder must hold no earlier run's outputs unless ``overwrite``.
    """
    if resume and overwrite:
        raise ValueError("resume=True continues the run in out_dir and overwrite=True replaces it: pass one of them "
                         "(CLI: --resume or --overwrite)")
    outputs = earlier_run_outputs(folder)
    if resume and has_checkpoint(folder):
        return []
    if outputs and not overwrite:
        why = " but no checkpoint to resume from (checkpoints/last.pt)" if resume else ""
        raise ValueError(f"{folder} holds the outputs of an earlier run ({_listed(outputs)}){why}; pass "
                         "overwrite=True (CLI: --overwrite) to replace them, or another output folder (--out)")
    return outputs


def stale_after_resume(folder: str | os.PathLike) -> list[Path]:
    """The earlier bundle's outputs a resumed run replaces: all but checkpoints/ and the per-epoch metrics, which
    the resumed run continues (exports of the old student)."""
    return [p for p in earlier_run_outputs(folder) if p.name not in (CHECKPOINTS, METRICS_FILE, TENSORBOARD_DIR)]


def remove_outputs(paths: list[Path]) -> None:
    """Delete an earlier run's outputs (files and folders), saying which."""
    if paths:
        log.warning("removing the outputs of an earlier run in %s: %s", paths[0].parent, _listed(paths, most=20))
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class FolderInUseError(RuntimeError):
    """Another process holds the lock of an output folder."""


def _holder_text() -> str:
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on host {holder['host']}, since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def _try_lock(fd: int) -> bool:
    """Take the kernel lock on ``fd`` without waiting; False when another open file holds it."""
    try:
        import fcntl  # POSIX; released by the kernel when the holder exits, however it exits
    except ImportError:  # Windows: no advisory locks here, so concurrent runs are not detected
        log.warning("this platform has no fcntl: the output folder is not locked against a second run")
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _acquire(path: Path) -> int:
    """Open and lock ``path``; write this process's PID and host into it. Raises FolderInUseError when held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        if not _try_lock(fd):
            with os.fdopen(fd, "r") as held:
                holder = _describe_holder(held.read())
            raise FolderInUseError(f"{path.parent} is in use by another robustcompress run ({holder}); wait for it "
                                   "to finish or pass another output folder (--out)")
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    # A lock file left by a dead process is unlocked, so it was just taken over: its old holder is replaced.
    os.ftruncate(fd, 0)
    os.write(fd, _holder_text().encode())
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock (its .robustcompress.lock) for the block; the folder is created when missing and
    removed again if the block left it empty, so a refused run leaves no folder behind."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = _acquire(path)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        yield folder
    finally:
        path.unlink(missing_ok=True)  # while still locked: the next run then locks a fresh file (see _acquire)
        os.close(fd)
        _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders this run created (innermost first) that hold nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): what is outside it stays too
            return
