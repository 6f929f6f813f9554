#!/usr/bin/env bash
# The GPU check (issue 15): on a machine with one CUDA GPU, in under 8 minutes,
#   1. pytest -m gpu                       (the CUDA fast-path tests)
#   2. benchmarks/throughput.py            (reference and fast, then compile: MobileNetV2 and ResNet-18 students,
#                                           a ResNet-50 teacher, batch 256, PGD-10)
#   3. a 2-minute CIFAR-10 fit             (robustcompress fit, PGD-AT ResNet-18, on the CIFAR-10 .npz or image
#                                           folder in ../shared/data when present, else digits)
# and writes summary.{json,md}, throughput.{json,md}, the fit's bundle and every step's log under the output folder.
# Every step has its own timeout, so one hang cannot eat the budget; a failed step does not stop the others, and
# the throughput benchmark writes its JSON after every row, so a timed-out run keeps the rows it finished.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--data PATH] [--dry-run] [--wheels DIR]
#
# --dry-run runs the same steps on the CPU at tiny sizes in well under a minute (torch.compile disabled); it is a
# test (tests/test_gpu_check.py), so the script cannot rot between GPU sessions. Environment: PYTHON (default
# python, else python3), GPU_CHECK_MODULES (another module table, for tests), and per-step timeouts in seconds
# T_PYTEST, T_THROUGHPUT, T_COMPILE, T_FIT.
#
# Before the steps, one probe looks up every module of benchmarks/gpu_check_modules.txt (find_spec, no import).
# A GPU machine without a package registry (Python 3.12 with torch 2.11, timm, onnx and onnxruntime, say) lacks
# pytest, onnxscript and scikit-learn's digits: make their wheels where pip reaches a registry with
# `bash benchmarks/gpu_wheels.sh .whl` (ignored by git; about 11 MiB), carry .whl to the machine (device tool:
# carry=[".whl"]) and pass --wheels .whl: the wheels of the missing modules alone are installed with
# `pip install --no-index --find-links DIR --no-deps --target OUT/site`, and OUT/site goes on PYTHONPATH for the
# steps, so the interpreter's own environment is never changed. A missing module without --wheels, or without a
# wheel in DIR, stops the check before its steps with one line naming it. The versions of Python, torch, timm,
# onnx and onnxruntime, and what was installed, go into the summary.
# Exit status: 0 when every step passed, 1 when one failed or timed out, 2 on a usage error or a missing module.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="runs/gpu_check"
DATA=""
DRY_RUN=0
WHEELS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --data) DATA="${2:?--data needs a path or dataset name}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --wheels) WHEELS="${2:?--wheels needs the folder benchmarks/gpu_wheels.sh filled}"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-$(command -v python || command -v python3 || echo python)}"  # GPU machines may have python3 alone
# this checkout (the SDK, and the deploy runtime in export/), whatever the environment has installed
export PYTHONPATH="$ROOT:$ROOT/export${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT/logs" || { echo "gpu_check.sh: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
STEPS="$OUT/steps.tsv"
: > "$STEPS"
START=$(date +%s)

# The modules the steps need that this interpreter lacks, installed from the wheels folder into OUT/site.
MODULES_TABLE="${GPU_CHECK_MODULES:-$ROOT/benchmarks/gpu_check_modules.txt}"
mapfile -t MODULES < <(awk '!/^#/ && NF {print $1}' "$MODULES_TABLE")
PROBE='import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))'
if ! MISSING=$("$PY" -c "$PROBE" "${MODULES[@]}"); then
  echo "gpu_check.sh: '$PY' cannot run Python; set PYTHON to the interpreter that has torch" >&2
  exit 2
fi
INSTALLED=()
if [[ -n "$MISSING" ]]; then
  fetch_hint="make them with 'bash benchmarks/gpu_wheels.sh DIR' where pip reaches a registry"
  [[ -n "$WHEELS" ]] || { echo "gpu_check.sh: $PY lacks $MISSING; $fetch_hint and pass --wheels DIR" >&2; exit 2; }
  [[ -d "$WHEELS" ]] || { echo "gpu_check.sh: --wheels $WHEELS is not a folder; $fetch_hint" >&2; exit 2; }
  WHEELS="$(cd "$WHEELS" && pwd)"
  for module in $MISSING; do
    requirement=$(awk -v m="$module" '$1 == m {print $2}' "$MODULES_TABLE")
    name="${requirement%%==*}" version="${requirement#*==}"
    # A wheel's file name spells the distribution with underscores (PEP 427), in any case.
    wheel=$(find "$WHEELS" -maxdepth 1 -iname "${name//[-.]/_}-${version}-*.whl" -print -quit)
    if [[ -z "$wheel" ]]; then
      echo "gpu_check.sh: $PY lacks module '$module' and $WHEELS has no wheel of $requirement; fetch it with" \
        "'bash benchmarks/gpu_wheels.sh $WHEELS $requirement' where pip reaches a registry" >&2
      exit 2
    fi
    INSTALLED+=("$requirement")
  done
  rm -rf "$OUT/site"
  # --no-deps: the table names every module needed, so what is missing is exactly what gets installed.
  "$PY" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" --no-deps --no-compile \
    --target "$OUT/site" "${INSTALLED[@]}" > "$OUT/logs/install.log" 2>&1 \
    || { echo "gpu_check.sh: pip could not install ${INSTALLED[*]} from $WHEELS; see $OUT/logs/install.log" >&2
         exit 2; }
  export PYTHONPATH="$PYTHONPATH:$OUT/site"  # after this checkout, so the checkout's robustcompress still wins
  echo "== installed from $WHEELS into $OUT/site: ${INSTALLED[*]}" >&2
fi
# The versions the check ran with, for the summary (a module that fails to import is recorded as its error; the
# limit is for a hang: the imports take seconds, minutes only on a busy CPU).
timeout 300 "$PY" - "$OUT/versions.json" "${INSTALLED[@]}" > "$OUT/logs/versions.log" 2>&1 <<'EOF'
import importlib, json, platform, sys

versions = {"python": platform.python_version(), "installed_from_wheels": sys.argv[2:]}
for name in ("torch", "timm", "onnx", "onnxruntime"):
    try:
        versions[name] = importlib.import_module(name).__version__
    except Exception as exc:  # noqa: BLE001  the steps will fail on it too; the summary says why
        versions[name] = f"not importable: {type(exc).__name__}: {exc}"
with open(sys.argv[1], "w") as f:
    json.dump(versions, f, indent=2)
EOF

# run_step NAME TIMEOUT_S COMMAND...: run with a timeout, log to logs/NAME.log, record name, status, rc, seconds.
run_step() {
  local name="$1" limit="$2"
  shift 2
  local t0 rc status
  t0=$(date +%s)
  echo "== $name (timeout ${limit}s): $*" | tee "$OUT/logs/$name.log" >&2
  timeout --kill-after=15 "$limit" "$@" >> "$OUT/logs/$name.log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]]; then status=ok; elif [[ $rc -eq 124 || $rc -eq 137 ]]; then status=timeout; else status=failed; fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$limit" >> "$STEPS"
  echo "== $name: $status (rc $rc, $(( $(date +%s) - t0 )) s)" >&2
}

if [[ $DRY_RUN -eq 1 ]]; then
  export CUDA_VISIBLE_DEVICES=""
  PYTEST_ARGS=(tests/test_fast_paths.py)          # collects quickly; the gpu tests skip without CUDA
  TP_COMMON=(--smoke --students lcnet_050 test_resnet --device cpu)
  FIT_ARGS=(--student test_efficientnet --epochs 1 --steps 1 --batch-size 64 --input-size 8 --device cpu)
  FIT_DATA="${DATA:-digits}"
  VERIFY="verify_attacks: [fgsm]\nverify_examples: 32\n"
  : "${T_PYTEST:=120}" "${T_THROUGHPUT:=120}" "${T_COMPILE:=120}" "${T_FIT:=120}"
else
  PYTEST_ARGS=()
  TP_COMMON=(--preset gpu --device cuda)
  if [[ -z "$DATA" ]]; then
    for candidate in "$ROOT/../shared/data/cifar10_subset.npz" "$ROOT/../shared/data/cifar10_jpg"; do
      if [[ -e "$candidate" ]]; then DATA="$candidate"; break; fi
    done
  fi
  FIT_DATA="${DATA:-digits}"
  case "$FIT_DATA" in  # about two minutes of PGD-10 training on one GPU, whatever the data
    *.npz) EPOCHS=10 ;;
    digits) EPOCHS=15 ;;
    *) EPOCHS=2 ;;
  esac
  FIT_ARGS=(--student resnet18 --epochs "$EPOCHS" --steps 10 --batch-size 256 --device cuda --speed fast)
  VERIFY="verify_attacks: [pgd20]\nverify_examples: 500\n"
  # 60 + 110 + 130 + 140 s = 7 min 20 s at most, leaving the rest of 8 minutes for start-up and the summary.
  : "${T_PYTEST:=60}" "${T_THROUGHPUT:=110}" "${T_COMPILE:=130}" "${T_FIT:=140}"
  command -v nvidia-smi > /dev/null && timeout 20 nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
fi

cd "$ROOT" || exit 2

# 1. the CUDA tests (the suite's default run leaves them out), in one process: addopts cleared, because its
# '-n 2 --dist loadfile --no-loadscope-reorder' needs pytest-xdist 3.8 or later, which a GPU machine may lack or
# have older
run_step pytest_gpu "$T_PYTEST" "$PY" -m pytest -o addopts= -m gpu -q -p no:cacheprovider \
  --junitxml="$OUT/pytest_gpu.xml" "${PYTEST_ARGS[@]}"

# 2. training throughput: eager modes first, compile apart (its compile time must not cost the other rows)
run_step throughput "$T_THROUGHPUT" "$PY" benchmarks/throughput.py "${TP_COMMON[@]}" --modes reference fast \
  --json "$OUT/throughput_eager.json"
if [[ $DRY_RUN -eq 1 ]]; then
  run_step throughput_compile "$T_COMPILE" env TORCHDYNAMO_DISABLE=1 "$PY" benchmarks/throughput.py \
    "${TP_COMMON[@]}" --modes compile --json "$OUT/throughput_compile.json"
else
  run_step throughput_compile "$T_COMPILE" "$PY" benchmarks/throughput.py "${TP_COMMON[@]}" --modes compile \
    --json "$OUT/throughput_compile.json"
fi

# 3. a short real training run, verified at the end (bundle in OUT/fit, replacing an earlier check's: --overwrite)
printf "method: pgd-at\n$VERIFY" > "$OUT/fit_config.yaml"
run_step fit "$T_FIT" "$PY" -m robustcompress fit "$FIT_DATA" --config "$OUT/fit_config.yaml" "${FIT_ARGS[@]}" \
  --out "$OUT/fit" --overwrite

"$PY" benchmarks/gpu_check_summary.py "$OUT" --dry-run "$DRY_RUN" --data "$FIT_DATA" \
  --seconds "$(( $(date +%s) - START ))"
