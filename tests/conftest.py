"""Shared fixtures: small threads, a private teacher cache, tiny digits data and models."""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch
import torch.nn as nn

#: Under pytest-xdist (pyproject's `-n 2`) each worker keeps to one thread, so two workers share two cores without
#: oversubscribing them; a single-process run (`-n 0`) uses up to two.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if XDIST_WORKER else min(2, os.cpu_count() or 1))
if XDIST_WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the scripts tests start as subprocesses inherit it
#: The files whose module fixtures or subprocesses take the longest go to the workers first, longest first (seconds
#: in a two-worker run: 25, 24, 18, 14, 10, 10, 8, 8, 7, 7), so a long file never starts last and leaves the other
#: worker idle at the end (pyproject's --no-loadscope-reorder keeps this order).
LONG_FILES = ("test_quickstart.py", "test_gpu_check.py", "test_benchmark_smoke.py", "test_demo.py", "test_compressor.py",
              "test_verify.py", "test_ddp.py", "test_attack_registry.py", "test_export.py", "test_teacher_sources.py")

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
BENCHMARKS = REPO_ROOT / "benchmarks"
#: The PYTHONPATH that runs this checkout's code in a subprocess, installed or not: the SDK at the root and the deploy
#: runtime in export/ (its own package, which the SDK's install maps in).
CHECKOUT_PYTHONPATH = os.pathsep.join((str(REPO_ROOT), str(REPO_ROOT / "export")))


def load_benchmark(filename: str, name: str) -> ModuleType:
    """A script of benchmarks/ (not a package, so not importable) loaded by path as module ``name``.

    It is registered in sys.modules while it executes, because dataclasses look their module up there; the caller
    removes it when it no longer wants it visible. benchmarks/ goes on sys.path, as when a script runs, so scripts
    import their siblings (``from table_protocol import ...``) the same way in tests.
    """
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: file order kept otherwise


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every result is reported by now: exempt what is alive from the final garbage collection of this process (and
    of each xdist worker), as robustcompress.process_exit does for the CLI, a second or more of each one's end."""
    gc.freeze()


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Teachers trained by tests go to a temporary cache, never the user's."""
    os.environ["ROBUSTCOMPRESS_CACHE"] = str(tmp_path_factory.mktemp("rc_cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder that every xdist worker of this session shares, held under a lock while the block runs in it.

    The first worker builds what the block builds (a trained model, a bundle); the others wait, then find it on disk
    and load it, so a fixture several test files need is trained once per run instead of once per worker.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if XDIST_WORKER else root  # the workers' folders sit side by side in this run's folder
    with FileLock(str(root / f"{name}.lock")):
        yield root / name


@contextlib.contextmanager
def teacher_cache(folder: Path) -> Iterator[None]:
    """ROBUSTCOMPRESS_CACHE pointed at ``folder`` for the block (then back at the session's private cache)."""
    previous = os.environ["ROBUSTCOMPRESS_CACHE"]
    os.environ["ROBUSTCOMPRESS_CACHE"] = str(folder)
    try:
        yield
    finally:
        os.environ["ROBUSTCOMPRESS_CACHE"] = previous


@pytest.fixture(scope="session")
def digits16():
    from robustcompress import load_data

    return load_data("digits", 16)


@pytest.fixture(scope="session")
def standard_model(digits16, tmp_path_factory):
    """A tiny standard (undefended) classifier trained briefly on digits at 16x16 (once per run: its teacher cache
    is shared by the workers)."""
    from robustcompress import train_teacher

    with built_once(tmp_path_factory, "standard_model") as folder, teacher_cache(folder):
        return train_teacher("test_resnet", digits16, epochs=3, lr=0.1, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def digits8():
    """128 training and 32 test digits at 8x8 (train, test TensorDatasets): a training step in well under a second."""
    return _digits8()


def _digits8():
    from torch.utils.data import TensorDataset

    from robustcompress import load_data

    data = load_data("digits", 8)
    x, y = data.train.tensors
    xt, yt = data.test.tensors
    return TensorDataset(x[:128], y[:128]), TensorDataset(xt[:32], yt[:32])


#: A fit of one epoch and one attack step at 8x8 on CPU: seconds, for tests of what happens around training.
TINY_FIT = dict(epochs=1, steps=1, batch_size=64, lr=0.05, input_size=8, device="cpu", progress=False)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with one standard teacher (the demo needs an undefended model), trained in seconds at 8x8, once per
    run (the workers share it; tests only read it)."""
    from robustcompress import RobustCompressor

    with built_once(tmp_path_factory, "tiny_bundle") as folder, teacher_cache(folder / "cache"):
        out = folder / "bundle"
        if not (folder / "built").exists():
            train, test = _digits8()
            rc = RobustCompressor(["test_resnet"], "test_efficientnet", method="ard", teacher_epochs=1, out_dir=out,
                                  verify_attacks=(), **TINY_FIT)
            rc.fit(train, val_data=test)
            (folder / "built").touch()
        return out


class ConstantModel(nn.Module):
    """Always answers class 0 (with a zero input gradient, so FGSM leaves the images unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits + 0 * x.sum()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    """The single line an entry point printed for an error (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def never(what: str):
    """A stand-in for a step that must not run (monkeypatched in): it fails the test if called."""
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran although the input was already known to be bad")

    return fail


class _NHWC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(x.mean((1, 2)))


def foreign_onnx(path: Path, layout: str) -> Path:
    """An ONNX written by plain torch.onnx.export: no metadata; NHWC (dynamic batch) or NCHW fixed to batch 1.

    Written with torch's legacy exporter (its deprecation warning silenced), as most files found in the wild were.
    """
    import warnings

    if layout == "nhwc":
        model, example, axes = _NHWC().eval(), torch.rand(1, 8, 8, 3), {"x": {0: "n"}}
    else:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
        example, axes = torch.rand(1, 3, 8, 8), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, example, str(path), input_names=["x"], dynamic_axes=axes, dynamo=False)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a few hundred bytes: only a decoder would find out)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path
