#!/usr/bin/env bash
# Every number in the README's table, measured on this machine; JSON to benchmarks/out/, then the
# table itself (benchmarks/table.py).
#   bash benchmarks/run.sh            after `make setup`; fetches the real motion on first use
# CPU: `posert eval` on the validation motion under the three 2D protocols, and `posert bench`.
# GPU, where nvidia-smi finds one: benchmarks/gpu_run.sh (CUDA build, CUDA tests, GPU latency).
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/posert
OUT=benchmarks/out
mkdir -p "$OUT"
$P data
VAL="${POSERT_HOME:-$HOME/.cache/posert}/val_motion.npz"
for noise in none detector occlusion; do
  $P eval --motion "$VAL" --json "$OUT/eval_$noise.json" --noise "$noise" | tail -2
done
$P bench --json "$OUT/bench.json" | tail -8
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  PYTHON=.venv/bin/python bash benchmarks/gpu_run.sh "$OUT/gpu"
fi
.venv/bin/python benchmarks/table.py "$OUT"
