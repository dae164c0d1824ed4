"""Phase profile of the fused step kernel (issue 5): needs posert._C built with
``-C cmake.define.CMAKE_CUDA_FLAGS=-DPOSERT_STEP_PROFILE`` and a GPU. Streams 40 frames of a real
2D sequence (CMU through H36M camera 0) through the eager CUDA backend for each cluster size; thread
0 of block 0 prints ``PROF den=<0|1> nc=<cluster> <phase> <clock cycles>`` for the call whose
frame count is 30 (the lifter and both denoiser steps)::

    python experiments/gpu_profile.py --motion tests/data/cmu_01_01.npz --clusters 1 8
"""

from __future__ import annotations

import argparse

import torch

from posert.bench import pipeline_tick_ms, real_stream
from posert.camera import load_h36m_cameras
from posert.data.sources import h36m_camera_file
from posert.evaluate import load_motion
from posert.runtime import Pipeline
from posert.runtime.backends.cuda import CudaBackend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion", required=True)
    ap.add_argument("--clusters", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=512)
    args = ap.parse_args()
    cam = load_h36m_cameras(h36m_camera_file())[0]
    seq = next(iter(load_motion(args.motion).values()))
    px, _ = real_stream(seq, cam)
    for c in args.clusters:
        be = CudaBackend.from_checkpoints(device="cuda", graphs=False, threads=args.threads, cluster=c)
        pipeline_tick_ms(Pipeline(backend=be, max_streams=1), px, cam, frames=30, warmup=10)
        torch.cuda.synchronize()
    print("done")


if __name__ == "__main__":
    main()
