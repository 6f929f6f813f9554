"""Package boundaries: lazy imports, a torch-free runtime, no lower layer importing a higher one, no generic names."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from conftest import CHECKOUT_PYTHONPATH, REPO_ROOT

RUNTIME = REPO_ROOT / "export" / "robustcompress_runtime"
#: Each layer may import only layers listed before it (and itself); robustcompress_runtime is below them all.
LAYERS = ["runtime_env", "lazy", "process_exit", "arguments", "io", "models", "data", "attacks", "methods", "trainer",
          "settings", "bundle", "verify", "teachers", "distill", "export", "run_record", "targets", "compressor",
          "quickstart", "apps", "cli", "__main__"]


def _run(code: str, pythonpath: str = CHECKOUT_PYTHONPATH) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath})


def test_the_attack_layer_loads_without_onnx_or_the_trainer():
    run = _run("import sys\nfrom robustcompress.attacks import pgd, craft, get_attack\n"
               "loaded = [m for m in ('onnx', 'onnxruntime', 'robustcompress.trainer', 'robustcompress.compressor',"
               " 'robustcompress.export') if m in sys.modules]\nassert not loaded, loaded\n"
               "import robustcompress\nassert robustcompress.pgd is pgd\n")
    assert run.returncode == 0, run.stderr


def test_the_runtime_never_imports_torch_or_robustcompress():
    # export/ alone on the path, as on an edge box after `pip install ./export`: nothing of the SDK is reachable.
    alone = str(REPO_ROOT / "export")
    run = _run("import sys\nsys.modules['torch'] = None\nsys.modules['robustcompress'] = None\n"
               "import robustcompress_runtime.runtime, robustcompress_runtime.benchmark, robustcompress_runtime.images\n"
               "from robustcompress_runtime import load_model, make_session\n"
               "assert not [m for m in sys.modules if m.startswith(('torch.', 'robustcompress.'))]\n"
               f"assert robustcompress_runtime.__file__.startswith({alone!r}), robustcompress_runtime.__file__\n",
               pythonpath=alone)
    assert run.returncode == 0, run.stderr
    help_run = _run("import sys, runpy\nsys.modules['torch'] = None\nsys.modules['robustcompress'] = None\n"
                    "sys.argv = ['x', '--help']\nrunpy.run_module('robustcompress_runtime', run_name='__main__')",
                    pythonpath=alone)
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
    for path in sorted(RUNTIME.rglob("*.py")):
        wrong += [f"{path.relative_to(REPO_ROOT)} imports {n}" for n in _imports(path)
                  if n.split(".")[0] in ("robustcompress", "torch")]
    assert not wrong, wrong


def _packaging(pyproject: Path) -> dict:
    """A pyproject's configuration as setuptools expands it (package search done, package folders mapped)."""
    from setuptools.config.pyprojecttoml import read_configuration

    return read_configuration(pyproject)


def test_only_the_project_packages_are_installed():
    sdk = _packaging(REPO_ROOT / "pyproject.toml")["tool"]["setuptools"]
    assert sorted({p.split(".")[0] for p in sdk["packages"]}) == ["robustcompress", "robustcompress_runtime"]
    assert sdk["package-dir"] == {"robustcompress_runtime": "export/robustcompress_runtime"}  # the SDK ships export's
    assert (RUNTIME / "__init__.py").is_file() and not (REPO_ROOT / "robustcompress_runtime" / "__init__.py").exists()
    assert not (REPO_ROOT / "apps" / "__init__.py").exists()


def test_the_export_package_installs_the_runtime_without_torch():
    """`pip install ./export` (an edge box) gets robustcompress_runtime with onnxruntime, numpy and Pillow only."""
    deploy = _packaging(REPO_ROOT / "export" / "pyproject.toml")
    assert deploy["project"]["name"] == "robustcompress-runtime"
    assert deploy["tool"]["setuptools"]["packages"] == ["robustcompress_runtime"]
    requirements = _names(deploy["project"]["dependencies"])
    assert requirements == {"onnxruntime", "numpy", "pillow"}
    assert requirements <= _names(_packaging(REPO_ROOT / "pyproject.toml")["project"]["dependencies"])  # SDK's too


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}
