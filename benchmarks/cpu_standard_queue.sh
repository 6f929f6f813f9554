#!/usr/bin/env bash
# The resumable queue of the CPU-standard CIFAR-10 table (8/255, PGD-5 training) and of the bf16-vs-fp32 evidence on
# the CPU-scale protocol, in the order the plan in docs/results/cifar10_cpu_standard.md gives.
#
#     bash benchmarks/cpu_standard_queue.sh [WORK_DIR]     # default runs/queue; run it again after any interruption
#
# Every step is a benchmarks/cifar10_table.py call with --skip-done (rows already in the results file are left out)
# and --work-dir (each student checkpoints every epoch; teachers checkpoint in the teacher cache), so re-running the
# script after a stop (the end of a session, a reboot) continues where it was. It runs the steps one after another
# and never two at once: on a 2-core machine two torch processes slow each other several-fold, and the table records
# each run's time. Nothing else should run on the machine meanwhile.
set -uo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-runs/queue}"
mkdir -p "$WORK"
LOG="$WORK/queue.log"
TABLE=(python benchmarks/cifar10_table.py --skip-done --no-progress)
# The robust teacher is kept in the repository (commit it once it is made): the cache does not outlive a machine,
# and re-made on another CPU the teacher has other weights, whose rows would not pool with the earlier ones.
STORE=(--teacher-store docs/results/cifar10_cpu_standard/teachers)
STANDARD=("${TABLE[@]}" --protocol cpu-standard --work-dir "$WORK/cpu_standard"
          --save-bundles docs/results/cifar10_cpu_standard "${STORE[@]}")
SCALE_BF16=("${TABLE[@]}" --protocol cpu-scale --work-dir "$WORK/cpu_scale" --variant bf16 --precision bf16)

# Before any step: this checkout's SDK and deploy runtime must be the ones Python imports. Otherwise every step fails
# in seconds (or, worse, runs another tree's code into this tree's results) and the queue "finishes" having done nothing.
if ! where=$(python -c "import robustcompress, robustcompress_runtime as r; print(robustcompress.__file__); print(r.__file__)"); then
    echo "queue not started: robustcompress does not import here; run pip install -e '.[dev]' or set PYTHONPATH=$PWD:$PWD/export" >&2
    exit 1
fi
while read -r file; do
    case "$file" in
        "$PWD"/*) ;;
        *) echo "queue not started: Python imports $file, not this checkout's ($PWD); set PYTHONPATH=$PWD:$PWD/export" >&2
           exit 1 ;;
    esac
done <<< "$where"

FAILED=()
step() {  # step LABEL COMMAND...: run one step, log its start, end and exit code; a failed step does not stop the queue
    local label=$1
    shift
    echo "$(date -u +%FT%TZ) start $label: $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$WORK/$label.log"
    local code=${PIPESTATUS[0]}
    echo "$(date -u +%FT%TZ) end $label: exit $code" | tee -a "$LOG"
    [ "$code" = 0 ] || FAILED+=("$label")
}

# 1. The protocol's floor: PGD-AT, seed 0 (the pilot of the epoch count; its row is the table's).
step pgd-at-0 "${STANDARD[@]}" --methods pgd-at --seeds 0
# 2. bf16 training against the CPU-scale table's fp32 rows (the bf16 issue's evidence): PGD-AT needs no teacher.
step scale-bf16-pgd-at "${SCALE_BF16[@]}" --methods pgd-at --seeds 0,1,2
# 3. SA-MDRAD seed 0 (standard teachers only): with PGD-AT seed 0 it is the pair the attack-strength audit needs.
step sa-mdrad-0 "${STANDARD[@]}" --methods sa-mdrad --seeds 0
# 3b. The CPU-scale SA-MDRAD verdict with image-sampling noise, and the attack-strength audit of the seed-0 pair
#     (both resumable: finished blocks and attacks are kept in their results files).
step image-noise python benchmarks/cpu_scale_image_noise.py
# 4. The robust teacher (made and cached on the first robust-teacher method) and AKD, seed 0: the teacher is on the
#    critical path of six methods, so it comes before the audit.
step akd-0 "${STANDARD[@]}" --methods akd --seeds 0
# 4a. bf16 training of a distillation method against fp32 training with the same teachers (the bf16 issue's evidence,
#     about 2.5 h). Early, because this protocol trains every method in bf16: if bf16 cost a distillation method
#     robustness, the rest of the queue would need fp32. This machine has no copy of the CPU-scale teachers, so the
#     steps re-make them (their rows are marked re-made), and the bf16 rows are compared with fp32 rows that learnt
#     from the same re-made teachers.
step scale-bf16-sa-mdrad "${SCALE_BF16[@]}" --methods sa-mdrad --seeds 0,1,2
step scale-fp32-sa-mdrad "${TABLE[@]}" --protocol cpu-scale --work-dir "$WORK/cpu_scale" --variant fp32 --precision fp32 \
    --methods sa-mdrad --seeds 0,1,2
step audit python benchmarks/attack_audit.py --methods pgd-at,sa-mdrad --restarts 3
# 4b. AKD's own mechanisms on the validation split (the issue's item 5), seed 0: alpha, the final instead of the
#     early-stopped robust teacher (refused, and skipped, when early stopping kept the final epoch) and an ensemble of
#     two robust teachers (the second: teacher 2 made robust by the same recipe, cached).
# (AKD's ablations were run with the robust teacher of AKD's first seed-0 row and are compared with that row: they
# take no store, or a stored teacher that differs from theirs would run them again.)
ABLATE=("${TABLE[@]}" --protocol cpu-standard --work-dir "$WORK/cpu_standard" --validation-only --seeds 0)
step akd-alpha-1 "${ABLATE[@]}" --methods akd --variant 'alpha 1' --method-arg alpha=1.0
step akd-alpha-0.25 "${ABLATE[@]}" --methods akd --variant 'alpha 0.25' --method-arg alpha=0.25
step akd-final-teacher "${ABLATE[@]}" --methods akd --variant 'final robust teacher' --teachers robust-final
step akd-two-teachers "${ABLATE[@]}" --methods akd --variant 'two robust teachers' --teachers robust,robust2
# 5. The six methods the verdicts rest on, the rest of their seeds.
step sa-mdrad "${STANDARD[@]}" --methods sa-mdrad --seeds 1,2
step pgd-at "${STANDARD[@]}" --methods pgd-at --seeds 1,2
step trades "${STANDARD[@]}" --methods trades --seeds 0,1,2
step rslad "${STANDARD[@]}" --methods rslad --seeds 0,1,2
# AKD seed 0 again: its first row distilled from a robust teacher the next machine no longer had (2026-12-07); with
# the stored teacher, --skip-done runs a row trained with another teacher again, so AKD's three seeds share one.
step akd "${STANDARD[@]}" --methods akd --seeds 0,1,2
# 5a. The cheap baselines, one seed each, before dual-path: on a CPU without bf16 units dual-path's five runs take
#     about 76 h and AdaAD's one about 15 h, against about 2-3 h for each of these (docs/results/throughput_cpu.md).
step baselines-cheap "${STANDARD[@]}" --methods ard,iad,mtard --seeds 0
step dual-path-0 "${STANDARD[@]}" --methods dual-path --seeds 0
# 5b. Dual-path's own mechanisms on the validation split, seed 0: three path points instead of every iterate, uniform
#     instead of adaptive weights (the table's dual-path row of seed 0 is the default they are compared with), before
#     its seeds 1-2, so a variant that wins could still become the default they run with. (AKD's ablations, 4b, come
#     before its seeds 1-2 for the same reason.)
step dual-path-3-points "${ABLATE[@]}" "${STORE[@]}" --methods dual-path --variant 'path points 3' \
    --method-arg path_points=3
step dual-path-uniform "${ABLATE[@]}" "${STORE[@]}" --methods dual-path --variant 'uniform weights' \
    --method-arg adaptive_weights=false
step dual-path "${STANDARD[@]}" --methods dual-path --seeds 1,2
# 6. AdaAD (one seed), which back-propagates through its teacher in every attack step: the queue's costliest run.
step adaad "${STANDARD[@]}" --methods adaad --seeds 0
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "$(date -u +%FT%TZ) queue finished" | tee -a "$LOG"
else  # the reasons are in each step's log, $WORK/<label>.log
    echo "$(date -u +%FT%TZ) queue finished; ${#FAILED[@]} steps failed: ${FAILED[*]}" | tee -a "$LOG"
    exit 1
fi
