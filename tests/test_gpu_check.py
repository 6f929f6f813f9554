"""benchmarks/gpu_check.sh --dry-run runs every step end to end on the CPU, so the GPU check cannot rot unseen."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["pytest_gpu", "throughput", "throughput_compile", "fit"]
#: The environment variables that set each step's timeout in seconds.
STEP_LIMITS = ("T_PYTEST", "T_THROUGHPUT", "T_COMPILE", "T_FIT")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _run(out: Path, **env: str) -> subprocess.CompletedProcess:
    # Generous step limits: this checks the plumbing end to end, not speed, and a busy CI machine may be slow
    # (test_a_hung_step_times_out_and_the_others_still_run checks the limits themselves).
    limits = {name: "900" for name in STEP_LIMITS}
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **limits, **env}
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=3700)


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
    # Every step's interpreter hangs (a stand-in for PYTHON that sleeps), except the summary's, which is real.
    hanging = tmp_path / "hanging_python"
    hanging.write_text(f'#!/usr/bin/env bash\ncase "$*" in *gpu_check_summary.py*) exec "{sys.executable}" "$@";; '
                       f'esac\nexec sleep 60\n')
    hanging.chmod(0o755)
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
