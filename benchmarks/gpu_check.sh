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
#   bash benchmarks/gpu_check.sh [--out DIR] [--data PATH] [--dry-run]
#
# --dry-run runs the same steps on the CPU at tiny sizes in well under a minute (torch.compile disabled); it is a
# test (tests/test_gpu_check.py), so the script cannot rot between GPU sessions. Environment: PYTHON (default
# python), and per-step timeouts in seconds T_PYTEST, T_THROUGHPUT, T_COMPILE, T_FIT.
# Exit status: 0 when every step passed, 1 when one failed or timed out, 2 on a usage error.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="runs/gpu_check"
DATA=""
DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --data) DATA="${2:?--data needs a path or dataset name}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever the environment has installed
mkdir -p "$OUT/logs" || { echo "gpu_check.sh: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
STEPS="$OUT/steps.tsv"
: > "$STEPS"
START=$(date +%s)

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

# 1. the CUDA tests (the suite's default run leaves them out)
run_step pytest_gpu "$T_PYTEST" "$PY" -m pytest -m gpu -n 0 -q -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml" \
  "${PYTEST_ARGS[@]}"

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
