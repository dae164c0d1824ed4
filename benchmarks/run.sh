#!/usr/bin/env bash
# Accuracy and latency of the default checkpoints on this machine; JSON to benchmarks/out/.
# Usage: bash benchmarks/run.sh   (after `make setup`; fetches data on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/posert
mkdir -p benchmarks/out
$P data
VAL="${POSERT_HOME:-$HOME/.cache/posert}/val_motion.npz"
$P eval --motion "$VAL" --json benchmarks/out/eval_gt2d.json --noise none
$P eval --motion "$VAL" --json benchmarks/out/eval_detector.json --noise detector
$P eval --motion "$VAL" --json benchmarks/out/eval_occlusion.json --noise occlusion
$P bench --json benchmarks/out/bench.json
