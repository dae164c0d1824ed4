#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU, nvcc, torch (CUDA),
# pybind11, scikit-build-core and cuda-python: build posert._C with its CUDA kernels, run the
# CUDA tests (kernels equal their CPU twins; the CUDA-graph backend equals the CPU torch backend),
# then `posert bench --backend cuda` and benchmarks/gpu.py. Logs and JSON go to $1 (default out/gpu).
#   bash benchmarks/gpu_run.sh [OUTDIR] [MOTION.npz] [extra pytest -k expression]
set -u
out=${1:-out/gpu}
motion=${2:-tests/data/cmu_01_01.npz}
sel=${3:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  | tee -a "$out/gpu.txt"
arch=${CUDA_ARCH:-$($py -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")}
t0=$(date +%s)
$py -m pip install -q --no-build-isolation --no-deps -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" -e . \
  >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build (sm_$arch): $(( $(date +%s) - t0 )) s"
$py -c "from posert import _C; print('posert._C built_with_cuda:', _C.built_with_cuda())" | tee -a "$out/gpu.txt"
$py -m pytest -q -p no:cacheprovider tests/kernels ${sel:+-k "$sel"} 2>&1 \
  | tee "$out/pytest_cuda.log" | tail -25
posert bench --backend cuda --motion "$motion" --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.log" | tail -20
$py benchmarks/gpu.py --motion "$motion" --json "$out/gpu.json" ${GPU_VARIANTS:+--variants $GPU_VARIANTS} 2>&1 \
  | tee "$out/gpu.log" | tail -12
