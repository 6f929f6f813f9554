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
    from torch.utils.data import TensorDataset

    from robustcompress import load_data

    data = load_data("digits", 8)
    x, y = data.train.tensors
    xt, yt = data.test.tensors
    return TensorDataset(x[:128], y[:128]), TensorDataset(xt[:32], yt[:32])
