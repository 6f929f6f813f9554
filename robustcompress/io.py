"""Files: atomic writes (JSON included), safetensors, weights-only torch checkpoints, weight fingerprints and the
cache folder (the bottom layer)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
    import torch.nn as nn


def cache_dir() -> Path:
    """Where trained teachers and decoded image folders are cached: $ROBUSTCOMPRESS_CACHE or ~/.cache/robustcompress."""
    return Path(os.environ.get("ROBUSTCOMPRESS_CACHE", Path.home() / ".cache" / "robustcompress"))


def check_writable(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise a ValueError now, before hours of work, when ``path`` (a folder, existing or not) cannot be written.

    Probes the folder, or its nearest existing ancestor, with a temporary file that is removed at once: nothing is
    created or left behind, so a run refused later for another reason leaves no empty folders.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {path} is not writable: {existing} is a file, not a folder; pass another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"{what} {path} is not writable ({reason} in {existing}); pass a folder you can write "
                         "to") from exc
    return path


def writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and its parents) and prove it can be written, or raise a ValueError saying so."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}"  # per process: torchrun ranks probe the same folder at once
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"output folder {path} is not writable ({exc.strerror}); pass a folder you can write to") from exc
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) then rename over path, so readers never see a half-written file.

    An OSError on the way (a full disk, a file size limit, a read-only folder) is raised again naming ``path``, not
    the temporary file, with the system's reason: ``[Errno 28] No space left on device: 'OUT/checkpoints/last.pt'``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the final file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Bytes through atomic_write. Serialisers that write files themselves (torch.save, safetensors) fill the
    bytes in memory first, so a failed write is an OSError with its cause, not a library's own message."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2,
               default: Callable[[Any], Any] | None = None) -> None:
    """``data`` as JSON at ``path``, atomically; it is serialised before the file is touched, so data that is not
    JSON raises and leaves any earlier file as it was. ``default`` converts values json cannot (as in json.dumps)."""
    text = json.dumps(data, indent=indent, default=default)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through atomic_write; obj must hold only tensors and plain Python values."""
    import io

    import torch  # here, not at the top: this bottom layer is also imported where torch is not (a bundle's record)

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """A state dict as .safetensors, atomically."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write_bytes(path, save(state))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with weights_only=True and explain a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first or pass resume=False")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {path} is corrupt or not a robustcompress checkpoint ({type(exc).__name__}: {exc}); "
            "delete it to start over"
        ) from exc


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names and raw bytes, any dtype): a cached teacher, a
    fine-tuned copy or a saved attack state is only reused for the very same weights."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
