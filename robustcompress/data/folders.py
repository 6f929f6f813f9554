"""Image folders as data: class folders (or train/ and test/ or val/ of them), decoded once and cached, or streamed.

Layouts (class names come from folder names, sorted, as torchvision's ImageFolder does):

- ``root/train/<class>/...`` and ``root/test/<class>/...`` (or ``val/``): split by the folders.
- ``root/<class>/...``: a seeded, stratified hold-out split (``holdout`` images or fraction go to test).

Every file is converted by ``robustcompress_runtime.images.picture_to_rgb8`` (the rule the deploy runtime and the
demo use) at ``input_size``. A folder whose decoded images fit in ``max_memory_mb`` is decoded once, in parallel,
into a uint8 tensor and cached on disk; a bigger one is streamed (decoded per item, at the target size, by DataLoader
workers).

The cache key (``_fingerprint``) covers the decoding rule, the size, the classes and, per file, its name, label, size,
modification time, inode change time (ctime) and a digest of its bytes: the whole file up to 12 KiB (most pictures
a small classifier trains on), else its first, middle and last 4 KiB. A file replaced by another of the same name,
size and modification time (``cp -p``, ``rsync -t``, ``os.utime``) still gets a new ctime, which no user call can set
back (a chmod or touch changes it too: the folder is then decoded once more), and the digest covers file systems
whose ctime is coarse or missing. Computing the key reads at most 12 KiB of each file, a fraction of what decoding
reads (1 s for the 50,000 CIFAR-10 JPEGs, against 0.25 s for names and times alone). A cache that cannot be read is
decoded again and replaced, one that cannot be written is skipped; both with a one-line warning naming the file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from robustcompress.data.tensors import PixelDataset
from robustcompress.io import atomic_write, cache_dir
from robustcompress.runtime_env import progress_bar
from robustcompress_runtime.images import IMAGE_SUFFIXES, picture_to_rgb8

if TYPE_CHECKING:
    from robustcompress.data.core import DataBundle

log = logging.getLogger("robustcompress")
TEST_NAMES = ("test", "val")
#: Bump when the decoding rule changes, so stale caches are not reused.
DECODE_VERSION = 1
DEFAULT_MAX_MEMORY_MB = 4096
_CHUNK = 512
#: The cache key digests a file's bytes in samples of this size: all of a file up to three samples long, else its
#: first, middle and last sample.
KEY_SAMPLE_BYTES = 4096


@dataclass(frozen=True)
class ImageFiles:
    """A list of image files with integer labels and the class names they index."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]


def is_image_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory of class folders, or holds train/ and test/ (or val/) of them."""
    root = Path(path)
    return root.is_dir() and any(p.is_dir() for p in root.iterdir())


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_image_files(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> ImageFiles:
    """Every image under ``root/<class>/`` (nested folders inside a class count for that class).

    ``class_names``: the classes to expect (a test split must use the training split's); a folder outside them
    is an error. Empty class folders and fewer than two classes are errors too.
    """
    root = Path(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = found
        if len(class_names) < 2:
            raise ValueError(f"{root} has {len(class_names)} class folder(s) ({', '.join(found) or 'none'}); a "
                             "classifier needs at least two: put each class's images in a folder of its own")
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise ValueError(f"{root} has class folders {unknown} that the training split lacks; the train and test "
                         "splits must use the same class folder names")
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(class_names):
        folder = root / name
        files = _images_under(folder) if folder.is_dir() else []
        if not files and folder.is_dir():
            empty.append(name)
        paths += [str(f) for f in files]
        labels += [label] * len(files)
    if empty and len(empty) == len(class_names):
        raise ValueError(f"{root} has no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    if empty and found == list(class_names):
        raise ValueError(f"class folder(s) {empty} under {root} hold no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "add images or remove the folder")
    return ImageFiles(paths, labels, list(class_names))


def folder_splits(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """(train folder, test folder or None) for an image-folder dataset root."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; check the path")
    test = next((root / n for n in TEST_NAMES if (root / n).is_dir()), None)
    if (root / "train").is_dir():
        return root / "train", test
    if test is not None:
        raise ValueError(f"{root} has a {test.name}/ folder but no train/; add train/<class>/ folders or pass a "
                         "folder of class folders")
    return root, None


def stratified_holdout(labels: Sequence[int], holdout: float | int, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): ``holdout`` (a fraction < 1 or a count) of each class, seeded."""
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    count = int(round(holdout * n)) if isinstance(holdout, float) and holdout < 1 else int(holdout)
    if not 0 < count < n:
        raise ValueError(f"holdout={holdout} leaves no test or no training images out of {n}; use e.g. 0.2 or 1000")
    rng = np.random.default_rng(seed)
    held: list[int] = []
    classes = np.unique(labels_arr)
    for c in classes:
        idx = np.flatnonzero(labels_arr == c)
        take = int(round(count * len(idx) / n))
        held += rng.permutation(idx)[:take].tolist()
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], sorted(held)


def _decode_chunk(args: tuple[list[str], int, bool]) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode files into (N, S, S, 3) uint8; with skip=True undecodable files are left out and reported."""
    paths, size, skip = args
    out = np.empty((len(paths), size, size, 3), np.uint8)
    kept: list[int] = []
    errors: list[str] = []
    for i, path in enumerate(paths):
        try:
            out[len(kept)] = picture_to_rgb8(path, size)
        except (ValueError, OSError) as exc:
            if not skip:
                raise ValueError(str(exc)) from None
            errors.append(f"{path}: {exc}")
            continue
        kept.append(i)
    return out[: len(kept)], kept, errors


def decode_files(paths: Sequence[str], size: int, skip_bad: bool = False, workers: int | None = None,
                 progress: bool = True, desc: str = "decoding images") -> tuple[np.ndarray, list[int], list[str]]:
    """Decode image files in parallel into (N, 3, S, S) uint8; returns (images, kept indices, skip messages)."""
    chunks = [list(paths[i : i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    workers = workers or min(len(chunks), os.cpu_count() or 1)
    images = np.empty((len(paths), 3, size, size), np.uint8)
    kept: list[int] = []
    errors: list[str] = []
    bar = progress_bar(desc=desc, enabled=progress, total=len(paths), unit="img")

    def collect(start: int, result: tuple[np.ndarray, list[int], list[str]]) -> None:
        arr, idx, errs = result
        images[len(kept) : len(kept) + len(idx)] = arr.transpose(0, 3, 1, 2)
        kept.extend(start + i for i in idx)
        errors.extend(errs)
        bar.update(len(arr) + len(errs))

    try:
        if workers <= 1 or len(chunks) == 1:
            for k, chunk in enumerate(chunks):
                collect(k * _CHUNK, _decode_chunk((chunk, size, skip_bad)))
        else:
            with ProcessPoolExecutor(workers) as pool:
                for k, result in enumerate(pool.map(_decode_chunk, [(c, size, skip_bad) for c in chunks])):
                    collect(k * _CHUNK, result)
    finally:
        bar.close()
    return images[: len(kept)], kept, errors


def _file_signature(path: str) -> str:
    """Name-independent signature of one file for the cache key: size, mtime, ctime and a digest of its bytes
    (whole up to 3 * KEY_SAMPLE_BYTES, else three samples); see the module docstring for why each is there."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size <= 3 * KEY_SAMPLE_BYTES:
            digest.update(f.read())
        else:
            for offset in (0, (st.st_size - KEY_SAMPLE_BYTES) // 2, st.st_size - KEY_SAMPLE_BYTES):
                f.seek(offset)
                digest.update(f.read(KEY_SAMPLE_BYTES))
    return f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{digest.hexdigest()}"


def _fingerprint(files: ImageFiles, size: int) -> str:
    """The cache key: a hash of the decoding rule, size, classes, and every file's name, label and signature."""
    digest = hashlib.sha256(json.dumps([DECODE_VERSION, size, files.class_names]).encode())
    for path, label in zip(files.paths, files.labels):
        digest.update(f"{path}\0{label}\0{_file_signature(path)}\n".encode())
    return digest.hexdigest()[:20]


def _read_cache(path: Path) -> PixelDataset | None:
    """The decoded images cached at ``path``; None (with a one-line warning) when the file cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
        return PixelDataset(torch.from_numpy(images), torch.from_numpy(labels))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("image cache %s cannot be read (%s: %s); the folder is decoded again and the cache replaced",
                    path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Cache decoded images atomically; a cache that cannot be written is skipped with a one-line warning."""
    try:
        atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), images=images, labels=labels))
    except OSError as exc:
        log.warning("image cache %s cannot be written (%s); the folder will be decoded again next time: point "
                    "ROBUSTCOMPRESS_CACHE at a writable folder, or pass cache=False", path.parent,
                    exc.strerror or type(exc).__name__)


def load_files_in_memory(files: ImageFiles, size: int, skip_bad: bool = False, cache: bool = True,
                         progress: bool = True, what: str = "images") -> PixelDataset:
    """Decode (or read from the cache) every file into a PixelDataset of uint8 images."""
    path = cache_dir() / "images" / f"{_fingerprint(files, size)}.npz" if cache else None
    if path is not None and path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return cached
    images, kept, errors = decode_files(files.paths, size, skip_bad, progress=progress, desc=f"decoding {what}")
    if errors:
        log.warning("skipped %d file(s) that could not be decoded, e.g. %s", len(errors), errors[0])
    labels = np.asarray(files.labels, dtype=np.int64)[kept]
    if path is not None:
        _write_cache(path, images, labels)
    return PixelDataset(torch.from_numpy(images), torch.from_numpy(labels))


class StreamingImageFolder(Dataset):
    """Image files decoded per item at the target size (for folders too big to hold in memory)."""

    def __init__(self, files: ImageFiles, size: int) -> None:
        self.paths, self.size = files.paths, size
        self.targets = torch.as_tensor(files.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = picture_to_rgb8(self.paths[index], self.size)
        return torch.from_numpy(image).permute(2, 0, 1).float().div_(255), int(self.targets[index])


def decoded_megabytes(count: int, size: int) -> float:
    return count * 3 * size * size / 2**20


def probe_size(paths: Sequence[str]) -> int:
    """The input size for a folder given none: the short side of its first image."""
    from robustcompress_runtime.images import open_picture

    with open_picture(paths[0]) as image:
        return min(image.size)


def folder_examples(root: str | os.PathLike, size: int, per_class: int = 1,
                    limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A few images of each class, decoded at ``size``: (float NCHW images in [0, 1], labels, split used).

    They come from the test/ (or val/) folder when there is one, else from the class folders themselves; only the
    first ``per_class`` files of each class are decoded, so this is quick on any folder (for galleries and probes).
    """
    train_dir, test_dir = folder_splits(root)
    class_names = list_image_files(train_dir).class_names
    files = list_image_files(test_dir if test_dir is not None else train_dir, class_names)
    picked: list[int] = []
    for label in range(len(class_names)):
        picked += [i for i, y in enumerate(files.labels) if y == label][:per_class]
    picked = sorted(picked)[:limit]
    images = np.stack([picture_to_rgb8(files.paths[i], size) for i in picked])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    y = torch.as_tensor([files.labels[i] for i in picked], dtype=torch.long)
    return x, y, "test" if test_dir is not None else "all"


def load_image_folder(
    root: str | os.PathLike,
    input_size: int | None = None,
    *,
    holdout: float | int = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    cache: bool = True,
    progress: bool = True,
) -> "DataBundle":
    """An image-folder dataset as a DataBundle (see the module docstring for layouts, decoding and caching).

    ``holdout``: for a folder of class folders alone, the fraction (< 1) or number of images held out, stratified
    and seeded, as the test split. ``skip_bad``: leave out files that cannot be decoded (counted in a warning)
    instead of failing with the file's path. ``input_size``: default the short side of the first image.
    """
    from robustcompress.data.core import DataBundle

    root = Path(root).resolve()  # one spelling of every path, so the cache key does not depend on the cwd
    train_dir, test_dir = folder_splits(root)
    train_files = list_image_files(train_dir)
    test_files = list_image_files(test_dir, train_files.class_names) if test_dir is not None else None
    if test_files is None:
        train_idx, test_idx = stratified_holdout(train_files.labels, holdout, seed)
        pick = lambda idx: ImageFiles([train_files.paths[i] for i in idx],  # noqa: E731
                                      [train_files.labels[i] for i in idx], train_files.class_names)
        train_files, test_files = pick(train_idx), pick(test_idx)
    size = input_size or probe_size(train_files.paths)
    total = len(train_files.paths) + len(test_files.paths)
    in_memory = decoded_megabytes(total, size) <= max_memory_mb
    splits = []
    for files, what in ((train_files, "train"), (test_files, "test")):
        if in_memory:
            splits.append(load_files_in_memory(files, size, skip_bad, cache, progress, f"{root.name}/{what}"))
        else:
            splits.append(StreamingImageFolder(files, size))
    if not in_memory:
        log.info("%s: %d images of %dx%d (%.0f MB decoded) exceed max_memory_mb=%g; streaming them from disk",
                 root, total, size, size, decoded_megabytes(total, size), max_memory_mb)
    return DataBundle(
        name=root.name,
        train=splits[0],
        test=splits[1],
        num_classes=len(train_files.class_names),
        input_size=size,
        class_names=list(train_files.class_names),
        source=str(root.resolve()),
    )
