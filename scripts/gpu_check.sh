#!/usr/bin/env bash
# The CUDA check: train the demo preset for a few hundred steps, table its tasks, prune the
# best-solved task, and write the report, every step on the GPU. Meant to finish in under
# 5 minutes on one GPU; each step's wall time goes to $OUT/timings.txt.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT: runs/gpu_check (replaced)
#   DEVICE=cuda:1 STEPS=300 bash scripts/gpu_check.sh
#   DEVICE=cpu PRESET=tiny STEPS=20 bash scripts/gpu_check.sh /tmp/check   # the script's own test
#
# Until this script has run on a GPU, CUDA is untested (README, "CUDA").
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
. .venv/bin/activate
OUT=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
PRESET=${PRESET:-demo}
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
rows = json.load(open(sys.argv[1]))
name = min(rows, key=lambda n: rows[n]['loss'])
print(name, round(max(0.15, rows[name]['loss'] + 0.05), 3))" "$OUT/tasks.json")
step prune sparse-lens prune "$OUT/run/final" --task "$TASK" --target-loss "$TARGET" \
    --trials 2 --budget-minutes 1 --cleanup-evals 200 --faithfulness \
    --out "$OUT/circuits/$TASK.json" --device "$DEVICE" --quiet
step report sparse-lens report "$OUT/circuits/$TASK.json" --model "$OUT/run/final" \
    --out "$OUT/report" --node-panels 8 --windows 16 --device "$DEVICE" --quiet
echo "check passed on $DEVICE: $OUT/report/index.html"
