"""benchmarks/gpu_check.sh --dry-run runs every step end to end on the CPU, so the GPU check cannot rot unseen."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
WHEELS_SCRIPT = ROOT / "benchmarks" / "gpu_wheels.sh"
MODULES_TABLE = ROOT / "benchmarks" / "gpu_check_modules.txt"
STEPS = ["pytest_gpu", "throughput", "throughput_compile", "fit"]
#: The environment variables that set each step's timeout in seconds.
STEP_LIMITS = ("T_PYTEST", "T_THROUGHPUT", "T_COMPILE", "T_FIT")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _run(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # Generous step limits: this checks the plumbing end to end, not speed, and a busy CI machine may be slow
    # (test_a_hung_step_times_out_and_the_others_still_run checks the limits themselves).
    limits = {name: "900" for name in STEP_LIMITS}
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **limits, **env}
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=3700)


def _stand_in_python(folder: Path, step: str) -> Path:
    """An interpreter for PYTHON that runs the script's own probes, pip and the summary for real, and in place of
    every step the shell command ``step`` (sleep 60, say), so a test of the plumbing needs no real step."""
    path = folder / "stand_in_python"
    path.write_text(f'#!/usr/bin/env bash\nif [[ "$1" == -c || "$1" == - || "$1 $2" == "-m pip" || '
                    f'"$*" == *gpu_check_summary.py* ]]; then exec "{sys.executable}" "$@"; fi\n{step}\n')
    path.chmod(0o755)
    return path


def _wheel(folder: Path, name: str, version: str, module: str, requires: tuple[str, ...] = ()) -> Path:
    """A tiny pure-Python wheel of distribution ``name`` holding the package ``module``, built by hand (PEP 427)."""
    stem = f"{name.replace('-', '_')}-{version}"
    files = {f"{module}/__init__.py": "WHERE = 'from a wheel'\n",
             f"{stem}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                           + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{stem}.dist-info/RECORD"])
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def _module_table(folder: Path, rows: str) -> Path:
    path = folder / "modules.txt"
    path.write_text("# module  distribution  source\n" + rows)
    return path


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return _run(out), out


def test_dry_run_passes_every_step_and_writes_the_results(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["passed"] and summary["data"] == "digits"
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "ok" and s["seconds"] <= s["timeout_s"] for s in summary["steps"])
    assert all((out / s["log"]).is_file() for s in summary["steps"])
    assert summary["pytest_gpu"]["failures"] == 0 and summary["pytest_gpu"]["errors"] == 0
    import torch

    # This environment has every module the table names, so nothing was installed; the versions are recorded.
    versions = summary["versions"]
    assert versions["installed_from_wheels"] == [] and not (out / "site").exists()
    assert versions["python"] == ".".join(map(str, sys.version_info[:3])) and versions["torch"] == torch.__version__
    assert all(isinstance(versions[name], str) for name in ("timm", "onnx", "onnxruntime"))
    assert f"torch {torch.__version__}" in (out / "summary.md").read_text()


def test_dry_run_merges_the_throughput_rows_of_every_mode(dry_run):
    _, out = dry_run
    result = json.loads((out / "throughput.json").read_text())
    assert {(r["student"], r["mode"]) for r in result["rows"]} == {
        (s, m) for s in ("lcnet_050", "test_resnet") for m in ("reference", "fast", "compile")}
    assert set(result["speedup_vs_reference"]) == {f"{s} {m}" for s in ("lcnet_050", "test_resnet")
                                                   for m in ("fast", "compile")}
    assert len(result["commands"]) == 2
    table = (out / "throughput.md").read_text()
    assert "| test_resnet | compile |" in table and "Command:" in table


def test_dry_run_fit_leaves_a_verified_bundle(dry_run):
    _, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    fit = summary["fit"]
    assert fit["method"] == "pgd-at" and fit["student"] == "test_efficientnet" and fit["data"] == "digits"
    assert 0 <= fit["metrics"]["clean_acc"] <= 1 and "fgsm" in fit["metrics"]["robust_acc"]
    assert (out / "fit" / "student.safetensors").is_file()
    assert "## Fit" in (out / "summary.md").read_text()


def test_a_hung_step_times_out_and_the_others_still_run(tmp_path):
    # Every step's interpreter hangs; the probes and the summary are real.
    hanging = _stand_in_python(tmp_path, "exec sleep 60")
    proc = _run(tmp_path / "out", PYTHON=str(hanging), **{name: "0.2" for name in STEP_LIMITS})
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["name"], s["status"], s["timeout_s"]) for s in summary["steps"]] == [
        (name, "timeout", 0.2) for name in STEPS]
    assert all(s["seconds"] <= 2 for s in summary["steps"])  # stopped at the limit, not when the sleep ended
    assert not summary["passed"] and "SOME STEPS FAILED" in (tmp_path / "out" / "summary.md").read_text()


def test_unknown_arguments_are_a_usage_error(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr


def test_missing_modules_are_installed_from_the_wheels_folder_for_the_steps(tmp_path):
    """Only the modules the interpreter lacks are installed, into OUT/site, and every step can import them."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "rc-wheel-fixture", "1.0", "rc_wheel_fixture")
    _wheel(wheels, "json-shadow", "1.0", "json")  # a module the interpreter has: its wheel must stay unused
    table = _module_table(tmp_path, "json  json-shadow==1.0  base\nrc_wheel_fixture  rc-wheel-fixture==1.0  wheel\n")
    step = _stand_in_python(tmp_path, f'exec "{sys.executable}" -c "import rc_wheel_fixture, json; '
                                      f'assert rc_wheel_fixture.WHERE and not hasattr(json, \'WHERE\')"')
    proc = _run(tmp_path / "out", "--wheels", str(wheels), PYTHON=str(step), GPU_CHECK_MODULES=str(table))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [(name, "ok") for name in STEPS]
    assert summary["versions"]["installed_from_wheels"] == ["rc-wheel-fixture==1.0"]
    assert sorted(p.name for p in (tmp_path / "out" / "site").iterdir() if not p.name.endswith(".dist-info")) == [
        "rc_wheel_fixture"]
    assert "installed from wheels: rc-wheel-fixture==1.0" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("wheels", [None, "empty"])
def test_a_missing_module_without_its_wheel_stops_the_check_in_one_line(tmp_path, wheels):
    table = _module_table(tmp_path, "rc_absent_module  rc-absent==2.0  wheel\n")
    args = []
    if wheels:
        (tmp_path / wheels).mkdir()
        args = ["--wheels", str(tmp_path / wheels)]
    never = _stand_in_python(tmp_path, "exit 3")  # no step may run
    proc = _run(tmp_path / "out", *args, PYTHON=str(never), GPU_CHECK_MODULES=str(table))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "rc_absent_module" in proc.stderr and "benchmarks/gpu_wheels.sh" in proc.stderr
    if wheels:  # the command that fetches exactly this wheel into this folder
        assert f"gpu_wheels.sh {tmp_path / wheels} rc-absent==2.0'" in proc.stderr
    else:
        assert "--wheels DIR" in proc.stderr
    assert (tmp_path / "out" / "steps.tsv").read_text() == ""


def test_the_module_table_pins_every_row_and_names_each_module_once():
    rows = [line.split() for line in MODULES_TABLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    modules = [row[0] for row in rows]
    assert len(modules) == len(set(modules))
    assert all(row[1].count("==") == 1 and row[2] in ("wheel", "data", "base") for row in rows)
    # what a bare Python 3.12 with torch, timm, onnx and onnxruntime lacks for the steps is fetched
    assert {row[0] for row in rows if row[2] != "base"} >= {"pytest", "sklearn", "onnxscript"}


def test_gpu_wheels_names_a_requirement_that_no_row_covers(tmp_path):
    """gpu_wheels.sh's check of the downloaded wheels' requirements (pip download stood in by a copy)."""
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    _wheel(fixtures, "rc-needs", "1.0", "rc_needs", requires=("rc-covered>=1", "rc-uncovered", "rc-windows; "
                                                               "sys_platform == 'win32'", "rc-extra; extra == 'x'"))
    _wheel(fixtures, "rc-data", "1.0", "rc_data", requires=("rc-unlisted-but-unneeded",))
    table = _module_table(tmp_path, "rc_needs  rc-needs==1.0  wheel\nrc_data  rc-data==1.0  data\n"
                                    "rc_covered  rc-covered==1.0  base\n")
    pip = tmp_path / "pip_python"  # `-m pip download ... --dest DIR ...`: copy the fixtures into DIR
    pip.write_text(f'#!/usr/bin/env bash\nif [[ "$1 $2 $3" == "-m pip download" ]]; then\n'
                   f'  while [[ "$1" != --dest ]]; do shift; done; cp {fixtures}/*.whl "$2"; exit 0\nfi\n'
                   f'exec "{sys.executable}" "$@"\n')
    pip.chmod(0o755)
    proc = subprocess.run(["bash", str(WHEELS_SCRIPT), str(tmp_path / "wheels")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": str(pip), "GPU_CHECK_MODULES": str(table)})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "rc_needs-1.0-py3-none-any.whl requires rc-uncovered" in proc.stderr
    assert "rc-covered" not in proc.stderr and "rc-windows" not in proc.stderr and "rc-extra" not in proc.stderr
    assert "rc-unlisted-but-unneeded" not in proc.stderr  # a 'data' row's requirements are not needed
