"""Package boundaries: lazy imports, a torch-free runtime, no lower layer importing a higher one, no generic names."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Each layer may import only layers listed before it (and itself); robustcompress_runtime is below them all.
LAYERS = ["runtime_env", "lazy", "process_exit", "arguments", "io", "models", "data", "attacks", "methods", "trainer",
          "settings", "bundle", "verify", "teachers", "distill", "export", "run_record", "targets", "compressor",
          "quickstart", "apps", "cli", "__main__"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)})


def test_the_attack_layer_loads_without_onnx_or_the_trainer():
    run = _run("import sys\nfrom robustcompress.attacks import pgd, craft, get_attack\n"
               "loaded = [m for m in ('onnx', 'onnxruntime', 'robustcompress.trainer', 'robustcompress.compressor',"
               " 'robustcompress.export') if m in sys.modules]\nassert not loaded, loaded\n"
               "import robustcompress\nassert robustcompress.pgd is pgd\n")
    assert run.returncode == 0, run.stderr


def test_the_runtime_never_imports_torch_or_robustcompress():
    run = _run("import sys\nsys.modules['torch'] = None\nsys.modules['robustcompress'] = None\n"
               "import robustcompress_runtime.runtime, robustcompress_runtime.benchmark, robustcompress_runtime.images\n"
               "from robustcompress_runtime import load_model, make_session\n"
               "assert not [m for m in sys.modules if m.startswith(('torch.', 'robustcompress.'))]\n")
    assert run.returncode == 0, run.stderr
    help_run = _run("import sys, runpy\nsys.modules['torch'] = None\nsys.modules['robustcompress'] = None\n"
                    "sys.argv = ['x', '--help']\nrunpy.run_module('robustcompress_runtime', run_name='__main__')")
    assert "robustcompress_runtime.runtime" in help_run.stdout, help_run.stderr


def test_a_bundle_record_and_the_training_settings_are_read_without_torch(tmp_path):
    # benchmarks/gpu_check_summary.py reports a fit's bundle in a fraction of a second instead of importing torch.
    record = {"bundle_version": 2, "method": "pgd-at", "method_hparams": {}, "student": {"name": "s"},
              "teachers": [], "train_config": {"epochs": 3}, "method_kwargs": {}, "teacher_epochs": 1,
              "verify_attacks": [], "verify_examples": 1}
    (tmp_path / "config.json").write_text(__import__("json").dumps(record))
    run = _run("import sys\nsys.modules['torch'] = None\nfrom robustcompress.bundle import read_bundle\n"
               f"bundle = read_bundle({str(tmp_path)!r})\n"
               "assert bundle.train_config.epochs == 3 and bundle.method == 'pgd-at', bundle.record\n")
    assert run.returncode != 0 and "lacks train_config." in run.stderr  # checked against TrainConfig's fields
    from robustcompress.trainer import TrainConfig

    record["train_config"] = {**TrainConfig().__dict__, "epochs": 3}
    (tmp_path / "config.json").write_text(__import__("json").dumps(record))
    run = _run("import sys\nsys.modules['torch'] = None\nfrom robustcompress.bundle import read_bundle\n"
               f"bundle = read_bundle({str(tmp_path)!r})\n"
               "assert bundle.train_config.epochs == 3 and bundle.method == 'pgd-at', bundle.record\n")
    assert run.returncode == 0, run.stderr


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_layer_imports_a_higher_one():
    root = REPO_ROOT / "robustcompress"
    wrong = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package's lazy public names point everywhere by design
        layer = parts[0]
        for name in _imports(path):
            if name.startswith("robustcompress."):
                target = name.split(".")[1]
                if target in LAYERS and LAYERS.index(target) > LAYERS.index(layer):
                    wrong.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    for path in sorted((REPO_ROOT / "robustcompress_runtime").rglob("*.py")):
        wrong += [f"{path.relative_to(REPO_ROOT)} imports {n}" for n in _imports(path)
                  if n.split(".")[0] in ("robustcompress", "torch")]
    assert not wrong, wrong


def test_only_the_project_packages_are_installed():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["robustcompress*", "robustcompress_runtime*"]
    assert not (REPO_ROOT / "export").exists() and not (REPO_ROOT / "apps" / "__init__.py").exists()
