#!/usr/bin/env bash
# The CUDA check: train the demo preset for a few hundred steps, table its tasks, prune the
# best-solved task, and write the report, every step on the GPU. Meant to finish in under
# 5 minutes on one GPU; each step's wall time goes to $OUT/timings.txt.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT: runs/gpu_check (replaced)
#   DEVICE=cuda:1 STEPS=300 bash scripts/gpu_check.sh
#   DEVICE=cpu PRESET=tiny STEPS=20 CHECKS=0 bash scripts/gpu_check.sh /tmp/check   # its own test
#   (CHECKS=0 leaves out the faithfulness report, the slowest step on a CPU)
#
# Until this script has run on a GPU, CUDA is untested (README, "CUDA").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
PRESET=${PRESET:-demo}
CHECKS=${CHECKS:-1}
fail() { echo "gpu_check: $*" >&2; exit 2; }
# every setting checked before anything is installed, written or removed
[[ $DEVICE =~ ^(cpu|cuda|cuda:[0-9]+)$ ]] || fail "DEVICE=$DEVICE: must be cpu, cuda or cuda:N"
[[ $PRESET =~ ^(tiny|demo|study|paper)$ ]] || fail "PRESET=$PRESET: must be tiny, demo, study or paper"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || fail "STEPS=$STEPS: must be a positive integer"
[[ $CHECKS =~ ^[01]$ ]] || fail "CHECKS=$CHECKS: must be 1 (faithfulness report) or 0"
FAITH=()
[ "$CHECKS" = 1 ] && FAITH=(--faithfulness)
if [ -e "$OUT" ] && [ ! -f "$OUT/timings.txt" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    fail "$OUT exists and is not an earlier check's folder (no timings.txt); name another OUT"
fi
# an active environment with sparse-lens is used as it is; else the repository's .venv
if ! command -v sparse-lens >/dev/null; then
    [ -x .venv/bin/python ] || bash scripts/setup.sh
    . .venv/bin/activate
fi
[ "$DEVICE" = cpu ] || python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: torch ' + torch.__version__ + ' sees none')"
rm -rf "$OUT"
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run it, append "NAME seconds" to the timings
    local name=$1 t0=$SECONDS
    shift
    "$@"
    echo "$name $((SECONDS - t0))" | tee -a "$OUT/timings.txt"
}
step train sparse-lens train --preset "$PRESET" --steps "$STEPS" --out "$OUT/run" --device "$DEVICE" --quiet
step tasks sh -c "sparse-lens tasks '$OUT/run/final' --split val --n 100 --json --device '$DEVICE' > '$OUT/tasks.json'"
# the task with the least validation loss, at the paper's target 0.15 or 0.05 above its loss
read -r TASK TARGET < <(python -c "
import json, sys
rows = json.load(open(sys.argv[1]))['losses']  # tasks --json: {split, n, seed, target_loss, losses}
name = min(rows, key=lambda n: rows[n]['loss'])
print(name, round(max(0.15, rows[name]['loss'] + 0.05), 3))" "$OUT/tasks.json")
step prune sparse-lens prune "$OUT/run/final" --task "$TASK" --target-loss "$TARGET" \
    --trials 2 --budget-minutes 1 --cleanup-evals 200 "${FAITH[@]}" \
    --out "$OUT/circuits/$TASK.json" --device "$DEVICE" --quiet
step report sparse-lens report "$OUT/circuits/$TASK.json" --model "$OUT/run/final" \
    --out "$OUT/report" --node-panels 8 --windows 16 --device "$DEVICE" --quiet
echo "check passed on $DEVICE: $OUT/report/index.html"
