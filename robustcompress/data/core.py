"""Load datasets into one shape: NCHW float images in [0, 1] plus integer labels."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustcompress_runtime.images import pictures_to_array

DATASET_NAMES = ("digits", "cifar10", "cifar100")


@dataclass
class DataBundle:
    """A train/test pair with what models need to know about it."""

    name: str
    train: Dataset | None
    test: Dataset | None
    num_classes: int
    input_size: int
    channels: int = 3
    class_names: list[str] = field(default_factory=list)
    # Horizontal flips would turn a 2 into something else; only natural images get them.
    flip: bool = True
    crop_padding: int = 4
    #: Where the data can be loaded from again (an image folder or file path); None for in-memory data.
    source: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "channels": self.channels,
            "class_names": self.class_names,
            "train_size": len(self.train) if self.train is not None else 0,
            "test_size": len(self.test) if self.test is not None else 0,
        }


def check_images(x: torch.Tensor, what: str = "images") -> None:
    """Raise a ValueError that says how to fix images that are not NCHW floats in [0, 1]."""
    if not torch.is_tensor(x):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{what} must have rank 4 (N, C, H, W); got shape {tuple(x.shape)}. "
            "Add a batch dimension with x.unsqueeze(0) or a channel dimension with x.unsqueeze(1)."
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point in [0, 1]; got dtype {x.dtype}. Use x.float() / 255.")
    if x.numel() == 0:
        return
    # One pass without temporaries and one host read: aminmax propagates NaN, which fails both comparisons, so only
    # a failing tensor is looked at twice.
    low, high = torch.aminmax(x)
    if bool((low >= 0) & (high <= 1)):
        return
    if torch.isnan(low) or torch.isnan(high):
        nan = torch.isnan(x)
        first = int(nan.flatten(1).any(1).nonzero()[0]) if x.shape[0] else 0
        raise ValueError(
            f"{what} contain {int(nan.sum())} NaN pixel values (the first in image {first}); replace or drop "
            "those images: NaN is not a pixel value"
        )
    if low < 0 or high > 1:
        raise ValueError(
            f"{what} must lie in [0, 1] (normalisation happens inside the model); got range "
            f"[{low.item():.3g}, {high.item():.3g}]. Divide uint8 images by 255 and do not pre-normalise."
        )


def check_dataset_images(ds: Dataset, what: str) -> None:
    """Check every image of an in-memory float TensorDataset at once (one pass over memory: 25 ms for
    CIFAR-10's 50,000 images on one core), since the trainer indexes its tensors directly; uint8 images are valid by construction, and other
    Datasets are checked batch by batch as the trainer draws them."""
    if isinstance(ds, TensorDataset) and ds.tensors[0].is_floating_point():
        check_images(ds.tensors[0], f"{what} images")


def check_labels(y: Any, what: str = "labels") -> torch.Tensor:
    """Class indices as int64, or a ValueError: float labels must be whole numbers, none negative, rank 1."""
    if isinstance(y, np.ndarray) and y.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be integer class indices; got {y.dtype} values such as {y.flat[0]!r}. Map "
                         "names to 0..K-1 (an .npz can list the names in a 'classes' array)")
    y = torch.as_tensor(y)
    if y.dim() != 1:
        y = y.flatten() if y.dim() == 2 and y.shape[-1] == 1 else y
    if y.dim() != 1:
        raise ValueError(f"{what} must be one class index per image (shape (N,)); got shape {tuple(y.shape)}. "
                         "One-hot labels: pass y.argmax(1)")
    if y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{what} must be integer class indices; got dtype {y.dtype}")
    if y.is_floating_point():
        fractional = ~torch.isfinite(y) | (y != y.round())
        if fractional.any():
            bad = y[fractional][0].item()
            raise ValueError(f"{what} must be whole-number class indices; got {bad} (dtype {y.dtype}). Float "
                             "labels are not truncated: pass integer labels, e.g. y.round().long() if intended")
    y = y.long()
    if y.numel() and y.min() < 0:
        raise ValueError(f"{what} must be class indices 0..K-1; got {int(y.min())}")
    return y


def _check_npz_images(arr: np.ndarray, what: str) -> None:
    """Refuse .npz image arrays that are not (N, H, W[, C]) pictures: layouts it would otherwise misread (channels
    first) and wide integers whose range it would have to guess."""
    if arr.ndim not in (3, 4):
        raise ValueError(f"{what} must be images shaped (N, H, W, C) or (N, H, W); got shape {arr.shape}")
    channels = arr.shape[-1] if arr.ndim == 4 else 1
    if arr.ndim == 4 and channels not in (1, 3, 4):
        if arr.shape[1] in (1, 3, 4):
            raise ValueError(
                f"{what} has shape {arr.shape}, which looks channels-first (N, C, H, W); an .npz holds "
                f"(N, H, W, C) images: save np.transpose({what}, (0, 2, 3, 1)) instead")
        raise ValueError(f"{what} has {channels} channels (shape {arr.shape}); pass (N, H, W, 3) RGB, (N, H, W, 4) "
                         "RGBA or (N, H, W) greyscale images")
    if arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.uint16):
        # An int32/int64 array could hold 0..255 or 0..65535 values: guessing would silently misscale one of them.
        raise ValueError(f"{what} has dtype {arr.dtype}; save 8-bit images as uint8 (0..255), 16-bit ones as uint16 "
                         "(0..65535) or floats in [0, 1], e.g. np.savez(..., x=images.astype(np.uint8))")


def pictures_to_tensor(images: np.ndarray, size: int, what: str) -> torch.Tensor:
    """(N, H, W[, C]) pictures as float NCHW in [0, 1] at size x size, by the deploy runtime's one picture rule
    (robustcompress_runtime.images.pictures_to_array: centre square, Pillow resize, not resampled when already
    size x size), so a model is trained on the pixels the runtime will feed it."""
    return torch.from_numpy(pictures_to_array(images, size, what)).permute(0, 3, 1, 2).contiguous()


def check_label_coverage(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                         train_what: str = "train labels", test_what: str = "test labels") -> None:
    """Refuse held-out labels the model cannot output (>= num_classes) or never saw in training.

    Run before training, so a mismatch costs seconds rather than surfacing after hours as an IndexError or a
    class the student can never get right.
    """
    if test_labels.numel() == 0:
        return
    top = int(test_labels.max())
    if top >= num_classes:
        raise ValueError(f"{test_what} go up to {top} but the model has {num_classes} classes (0..{num_classes - 1}); "
                         "the held-out split must use the training split's class indices")
    unseen = sorted(set(test_labels.unique().tolist()) - set(train_labels.unique().tolist()))
    if unseen:
        shown = ", ".join(str(c) for c in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
        raise ValueError(f"{test_what} include classes that never occur in the {train_what}: {shown}; the student "
                         "could never learn them. Check that both splits use the same class indices, or drop "
                         "those images")


def _tensor_dataset(x: torch.Tensor, y: torch.Tensor, what: str) -> TensorDataset:
    if len(x) == 0:
        raise ValueError(f"{what} is empty; pass a dataset with at least one image")
    if len(x) != len(y):
        raise ValueError(f"{what} has {len(x)} images but {len(y)} labels")
    check_images(x, what)
    return TensorDataset(x.contiguous(), check_labels(y, f"{what} labels"))


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16, shape (1797, 8, 8)) and their labels, as load_digits gives
    them, read from the file scikit-learn ships without importing scikit-learn (its import, with scipy and pandas,
    took 1.2 s: a third of the quickstart's start-up)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = None if spec is None or not spec.submodule_search_locations else \
        Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path is None or not path.is_file():  # a scikit-learn that keeps its data elsewhere: ask it
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): scikit-learn's ``train_test_split(np.arange(n), test_size=test_fraction,
    random_state=seed, stratify=labels)``, step for step (StratifiedShuffleSplit and its _approximate_mode), so the
    digits keep the split every cached teacher and reported number was made with, without importing scikit-learn."""
    n = len(labels)
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    _, label_index, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(label_index, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)

    def approximate_mode(counts: np.ndarray, draws: int) -> np.ndarray:
        continuous = counts / counts.sum() * draws
        floored = np.floor(continuous)
        need = int(draws - floored.sum())
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:  # the largest remainders first, ties broken at random
            if need <= 0:
                break
            (ties,) = np.where(remainder == value)
            chosen = rng.choice(ties, size=min(len(ties), need), replace=False)
            floored[chosen] += 1
            need -= len(chosen)
        return floored.astype(int)

    n_i = approximate_mode(class_counts, n_train)
    t_i = approximate_mode(class_counts - n_i, n_test)
    train: list[int] = []
    test: list[int] = []
    for i, indices in enumerate(class_indices):
        shuffled = indices.take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(shuffled[: n_i[i]])
        test.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def load_digits_data(input_size: int = 32, seed: int = 0) -> DataBundle:
    """scikit-learn's 1,797 real 8x8 handwritten digits at input_size (8: native), split 80/20 with a fixed seed."""
    images, labels = read_digits()
    x = pictures_to_tensor(images.astype(np.float32) / 16.0, input_size, "digits")
    y = torch.from_numpy(labels.astype(np.int64))
    idx_train, idx_test = stratified_split(labels, 0.2, seed)
    return DataBundle(
        name="digits",
        train=_tensor_dataset(x[idx_train], y[idx_train], "digits train split"),
        test=_tensor_dataset(x[idx_test], y[idx_test], "digits test split"),
        num_classes=10,
        input_size=input_size,
        class_names=[str(i) for i in range(10)],
        flip=False,
        crop_padding=max(1, input_size // 8),  # an eighth of the side, as CIFAR's 4 of 32: 1 px at the native 8x8
    )


def load_npz(path: str | os.PathLike, input_size: int | None = None) -> DataBundle:
    """An .npz with x_train, y_train, x_test, y_test and optional class names (a 'classes' array).

    Images are (N, H, W, C) or (N, H, W) arrays of uint8 or uint16 pixels or floats in [0, 1], converted by the
    runtime's picture rule (see pictures_to_tensor) at ``input_size``, default the short side of x_train's images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist; check the path")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"could not read {path} as an .npz archive ({exc}); is the file complete?") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; an .npz dataset needs x_train, y_train, x_test, y_test")
    x_train, x_test = data["x_train"], data["x_test"]
    _check_npz_images(x_train, "x_train")
    _check_npz_images(x_test, "x_test")
    size = input_size or min(x_train.shape[1:3])
    y_train = check_labels(data["y_train"], "y_train")
    y_test = check_labels(data["y_test"], "y_test")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    names = [str(c) for c in data["classes"]] if "classes" in data.files else [str(i) for i in range(num_classes)]
    if "classes" in data.files and num_classes > len(names):
        raise ValueError(f"{path}: labels go up to {num_classes - 1} but 'classes' names only {len(names)} classes")
    check_label_coverage(y_train, y_test, max(num_classes, len(names)), "y_train", "y_test")
    return DataBundle(
        name=path.stem,
        train=_tensor_dataset(pictures_to_tensor(x_train, size, "x_train"), y_train, "x_train"),
        test=_tensor_dataset(pictures_to_tensor(x_test, size, "x_test"), y_test, "x_test"),
        num_classes=max(num_classes, len(names)),
        input_size=size,
        class_names=names,
        source=str(path.resolve()),
    )


def load_torchvision_cifar(name: str, root: str | os.PathLike | None = None, download: bool = False) -> DataBundle:
    """torchvision CIFAR-10/100 from a local folder (default $ROBUSTCOMPRESS_DATA or ~/.cache/robustcompress/data).

    Downloads only when download=True.
    """
    import torchvision

    root = Path(root or os.environ.get("ROBUSTCOMPRESS_DATA") or Path.home() / ".cache" / "robustcompress" / "data")
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        # No command-line flags here: this message reaches API and CLI users alike, so it names what works for both.
        raise FileNotFoundError(
            f"{name} not found under {root}; download it there once with python -c \"from robustcompress import "
            f"load_data; load_data('{name}', download=True)\", point the environment variable ROBUSTCOMPRESS_DATA at "
            f"a folder holding torchvision's {name} files (Python: load_data('{name}', data_root=...)), or pass an "
            "image folder or .npz path instead of the name"
        ) from exc

    def to_ds(ds: Any, what: str) -> TensorDataset:
        return _tensor_dataset(pictures_to_tensor(ds.data, 32, what), torch.as_tensor(ds.targets), what)

    return DataBundle(
        name=name,
        train=to_ds(train, f"{name} train"),
        test=to_ds(test, f"{name} test"),
        num_classes=len(train.classes),
        input_size=32,
        class_names=list(train.classes),
    )


def _probe_dataset(ds: Dataset, what: str) -> tuple[int, int]:
    """Check a user's Dataset yields ([0,1] CHW image, int label) and return (channels, size)."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(f"{what} must have a length (a map-style torch Dataset)") from exc
    if n == 0:
        raise ValueError(f"{what} is empty; pass a dataset with at least one image")
    check_dataset_images(ds, what)
    item = ds[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(f"{what}[0] must be an (image, label) pair; got {type(item).__name__}")
    image = torch.as_tensor(item[0])
    check_images(image.unsqueeze(0), f"{what}[0] image")
    if image.shape[-1] != image.shape[-2]:
        raise ValueError(f"{what} images must be square; got {tuple(image.shape)}. Resize or centre-crop them.")
    return image.shape[0], image.shape[-1]


def labels_of(ds: Dataset, what: str) -> torch.Tensor:
    """Every label of a Dataset, checked once (whole numbers, not negative)."""
    if isinstance(ds, TensorDataset):
        labels = ds.tensors[1]
    elif getattr(ds, "targets", None) is not None:
        labels = torch.as_tensor(ds.targets)  # type: ignore[attr-defined]
    else:
        labels = torch.as_tensor([torch.as_tensor(ds[i][1]).item() for i in range(len(ds))])  # type: ignore[arg-type]
    return check_labels(labels, f"{what} labels")


#: Images of a Dataset that is not in memory that its fingerprint reads (evenly spaced, first and last included).
FINGERPRINT_SAMPLE = 256
#: Bytes of in-memory images its fingerprint hashes (all of digits, about 1,300 CIFAR images), besides every label.
FINGERPRINT_PIXEL_BYTES = 1 << 22


def dataset_digest(ds: Dataset) -> str:
    """A short hash that tells two training sets apart at no measurable cost: every label and the first 4 MB of
    pixels of in-memory tensors, or the images and labels of FINGERPRINT_SAMPLE evenly spaced items of any other
    Dataset, plus the size. Teachers are cached under it and resumed runs must match it."""
    import hashlib

    digest = hashlib.sha256()
    tensors = getattr(ds, "tensors", None)
    if tensors is not None:
        digest.update(tensors[0].cpu().numpy().tobytes()[:FINGERPRINT_PIXEL_BYTES])
        digest.update(tensors[1].cpu().numpy().tobytes())
    else:
        n = len(ds)  # type: ignore[arg-type]
        count = min(n, FINGERPRINT_SAMPLE)
        for i in sorted({round(k * (n - 1) / max(count - 1, 1)) for k in range(count)}):
            image, label = ds[i][:2]
            digest.update(torch.as_tensor(image).float().numpy().tobytes())
            digest.update(str(torch.as_tensor(label).item()).encode())
    digest.update(str(len(ds)).encode())  # type: ignore[arg-type]
    return digest.hexdigest()[:16]


def describe_training_set(ds: Dataset) -> str:
    """'1437 images of 3x8x8, digest 1a2b...': what a checkpoint records of the data it was trained on."""
    shape = "x".join(str(d) for d in torch.as_tensor(ds[0][0]).shape)
    return f"{len(ds)} images of {shape}, digest {dataset_digest(ds)}"  # type: ignore[arg-type]


def load_data(
    source: Any,
    input_size: int | None = None,
    test: Any = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    num_classes: int | None = None,
    *,
    holdout: float | int = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
) -> DataBundle:
    """Turn a dataset name, image folder, .npz path, torch Dataset, DataLoader or DataBundle into a DataBundle.

    ``test`` optionally supplies the held-out split when ``source`` is a Dataset or DataLoader. An image folder
    (class folders, or train/ and test/ or val/ of them) is read by
    :func:`robustcompress.data.folders.load_image_folder`: ``holdout`` (fraction or count) is its test split when
    it has no test folder, ``skip_bad`` leaves out undecodable files instead of failing on the first.
    """
    if isinstance(source, DataBundle):
        return source
    if isinstance(source, (str, Path)):
        text = str(source)
        if text == "digits":
            return load_digits_data(input_size or 32)
        if text in ("cifar10", "cifar100"):
            return load_torchvision_cifar(text, data_root, download)
        if text.endswith(".npz") or Path(text).is_file():
            return load_npz(text, input_size)
        if Path(text).is_dir():
            from robustcompress.data.folders import load_image_folder

            return load_image_folder(text, input_size, holdout=holdout, seed=seed, skip_bad=skip_bad,
                                     progress=progress)
        import difflib

        close = difflib.get_close_matches(text, DATASET_NAMES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown dataset '{text}'.{hint} Use one of {list(DATASET_NAMES)}, an image folder (class folders, "
            "or train/ and test/ of them), a path to an .npz file, or a torch Dataset."
        )
    if isinstance(source, DataLoader):
        source = source.dataset
    if isinstance(test, DataLoader):
        test = test.dataset
    if isinstance(source, Dataset):
        channels, size = _probe_dataset(source, "train_data")
        if test is not None:
            _probe_dataset(test, "val_data")
        labels = labels_of(source, "train_data")
        inferred = int(labels.max()) + 1
        classes = num_classes or inferred
        if num_classes is not None and inferred > num_classes:
            raise ValueError(f"train_data has label {inferred - 1} but num_classes={num_classes}")
        if test is not None:
            check_label_coverage(labels, labels_of(test, "val_data"), classes, "train_data labels", "val_data labels")
        return DataBundle(
            name=type(source).__name__,
            train=source,
            test=test,
            num_classes=classes,
            input_size=size,
            channels=channels,
            class_names=[str(i) for i in range(classes)],
        )
    raise ValueError(
        f"cannot use {type(source).__name__} as data; pass 'digits', 'cifar10', an image folder, an .npz file, "
        "a torch Dataset or a DataLoader"
    )


def load_train_data(train: Any, val: Any = None, input_size: int | None = None, num_classes: int | None = None,
                    progress: bool = True) -> DataBundle:
    """Training data and its held-out split as RobustCompressor.fit takes them: a ``val`` Dataset becomes the test
    split, and its labels must be classes the training labels have."""
    data = load_data(train, input_size, test=val, num_classes=num_classes, progress=progress)
    if val is not None and not isinstance(val, (str, Path)):
        data.test = load_data(val, data.input_size).train
        if not isinstance(train, (Dataset, DataLoader)) and data.train is not None:  # load_data checked those
            check_label_coverage(labels_of(data.train, "train_data"), labels_of(data.test, "val_data"),
                                 num_classes or data.num_classes, "train_data labels", "val_data labels")
    return data


def held_out_split(data: Any, fitted: DataBundle | None, input_size: int | None = None) -> tuple[Dataset, str]:
    """The split to evaluate on and the data's name: ``data``'s test split (its only split when it has one), or with
    ``data=None`` the test split of ``fitted`` (the data a model was fitted on)."""
    if data is None:
        if fitted is None or fitted.test is None:
            raise ValueError("no evaluation data: pass data=... (a dataset name, .npz path or Dataset)")
        return fitted.test, fitted.name
    bundle = load_data(data, input_size)
    return (bundle.test if bundle.test is not None else bundle.train), bundle.name  # type: ignore[return-value]


def reload_data(info: Mapping[str, Any], input_size: int | None = None, progress: bool = False
                ) -> DataBundle | None:
    """The data a DataBundle.describe() record names, loaded again: a named dataset, or the image folder or .npz
    it was read from when that still exists; None when it is neither (a Dataset given in memory)."""
    name, source = info.get("name"), info.get("source")
    if name in DATASET_NAMES:
        return load_data(name, input_size)
    if source and Path(source).exists():
        return load_data(source, input_size, progress=progress)
    return None


def as_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, sampler: Any = None) -> DataLoader:
    """A DataLoader with a seeded shuffle, so two runs with the same seed see the same batches."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        drop_last=False,
    )


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, flip: bool = True, return_flips: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Batched random crop (zero padding) and horizontal flip, done on whatever device x lives on.

    With ``return_flips`` also the (N,) bool mask of the images that were mirrored (all False without flips).
    """
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
        dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None]).view(n, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None]).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    if flip:
        mask = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(-1), x)
    return (x, mask) if return_flips else x
