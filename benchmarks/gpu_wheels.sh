#!/usr/bin/env bash
# Download, on a machine that reaches a package registry through pip, the wheels that benchmarks/gpu_check.sh needs
# on a GPU machine that has only Python 3.12 with torch, timm, onnx and onnxruntime and no registry: the 'wheel'
# rows of benchmarks/gpu_check_modules.txt, built for CPython 3.12 on manylinux x86_64 (or pure Python), without
# their dependencies (torch, nvidia-*, triton and the rest are the machine's own), then check that every
# requirement of every wheel is a row of that table, so nothing the machine lacks goes unnoticed.
#
#   bash benchmarks/gpu_wheels.sh [DIR] [NAME==VERSION ...]     (DIR defaults to .whl in the repository root)
#
# Extra NAME==VERSION arguments fetch more (a 'base' row that the GPU machine turns out to lack, say). Then, from the
# repository root, with the device tool: .whl/ is in .gitignore, so it travels only when the call names it in
# `carry`: run(command="bash benchmarks/gpu_check.sh --wheels .whl --out $OUT/gpu_check", carry=[".whl"]).
# The tool carries 64 MiB in all, the tracked files included (44 MiB in December 2026): the default folder is
# 11.3 MiB, scikit-learn 8.7 MiB of it. Environment: PYTHON (default python3), the interpreter whose pip downloads;
# GPU_CHECK_MODULES, another module table (for tests).
# Exit status: 0 when every wheel was fetched and every requirement is covered, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TABLE="${GPU_CHECK_MODULES:-$ROOT/benchmarks/gpu_check_modules.txt}"
DIR="${1:-$ROOT/.whl}"
shift $(( $# > 0 ? 1 : 0 ))
PY="${PYTHON:-python3}"

mapfile -t WANTED < <(awk '!/^#/ && ($3 == "wheel" || $3 == "data") {print $2}' "$TABLE")
WANTED+=("$@")
# pip matches a manylinux platform tag exactly, so name every glibc a wheel may be built for up to the machine's.
PLATFORMS=()
for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
           manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux_2_39; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
mkdir -p "$DIR"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 "${PLATFORMS[@]}" --dest "$DIR" "${WANTED[@]}"

# Every requirement of every wheel but the 'data' rows' (markers evaluated for CPython 3.12 on Linux x86_64, extras
# left out) must be a row of the table: a 'wheel' row is in DIR, a 'base' row comes with torch, timm, onnx or
# onnxruntime.
"$PY" - "$DIR" "$TABLE" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


folder, table = Path(sys.argv[1]), Path(sys.argv[2])
rows = [line.split() for line in table.read_text().splitlines() if line.strip() and not line.startswith("#")]
known = {canonical(row[1].split("==")[0]) for row in rows}
data_only = {canonical(row[1].split("==")[0]) for row in rows if row[2] == "data"}
environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
uncovered = []
for wheel in sorted(folder.glob("*.whl")):
    if canonical(wheel.name.split("-")[0]) in data_only:
        continue
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            if (requirement.marker is None or requirement.marker.evaluate(environment)) and \
                    canonical(requirement.name) not in known:
                uncovered.append(f"{wheel.name} requires {requirement}")
if uncovered:
    sys.exit("gpu_wheels.sh: not in benchmarks/gpu_check_modules.txt (add a row, 'wheel' or 'base'): "
             + "; ".join(uncovered))
EOF

echo "$(du -sh "$DIR" | cut -f1) in $DIR:" >&2
ls -1 "$DIR" >&2
