"""Is the refined output's acceleration error jitter? A causal smoother on the output (issue 3).

Issue 3 asks for acceleration error ≤ 0.5 × the lifter's with ground-truth 2D. This script
streams motion through ``posert eval``'s protocol (4 real H36M cameras, causal, ORT CPU, the
committed models) and then applies a causal exponential moving average to every stream's
refined output, ŷ_t = ŷ_{t−1} + β (x_t − ŷ_{t−1}), for several β (β = 1: no smoothing), and a
double EMA (2·EMA − EMA(EMA), Brown's trend-corrected form, which cancels the EMA's lag on a
constant velocity). If the acceleration error were frame-to-frame jitter, smoothing would lower
it; if it is error in the motion's own accelerations, smoothing (which lags and rounds off
real accelerations) raises it. Prints a Markdown table for RESULTS.md.

    .venv/bin/python experiments/output_smoothing.py [--motion FILE.npz ...] [--betas 0.8 0.6 0.4]
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, OcclusionModel
from posert.evaluate import eval_cameras, load_motion, score, stream_sequences
from posert.runtime import Pipeline

PROTOCOLS = (("ground-truth", None), ("detector noise", NoiseModel()), ("missing joints/limbs", OcclusionModel()))


def causal_ema(x: np.ndarray, beta: float) -> np.ndarray:
    """Causal EMA along axis 1 of (C, T, 17, 3): out_0 = x_0, out_t = out_{t−1} + β (x_t − out_{t−1})."""
    out = x.astype(np.float64).copy()
    for t in range(1, x.shape[1]):
        out[:, t] = out[:, t - 1] + beta * (x[:, t] - out[:, t - 1])
    return out.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--betas", nargs="+", type=float, default=[0.8, 0.6, 0.4])
    args = ap.parse_args()
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    filters = {"none": lambda x: x}
    for b in args.betas:
        filters[f"EMA β = {b:g}"] = lambda x, b=b: causal_ema(x, b)
        filters[f"double EMA β = {b:g}"] = lambda x, b=b: 2 * causal_ema(x, b) - causal_ema(causal_ema(x, b), b)
    print(f"\n{datetime.date.today()} — {platform.node()}: committed lifter and refiner, 4 H36M cameras, ORT CPU, "
          "seed 0; the filter runs on the refined output after streaming. MPJPE in mm, acceleration error in "
          "mm/frame²; ratios to the lifter.\n")
    print("| motion | 2D | output filter | MPJPE | MPJPE ratio | accel | accel ratio |")
    print("|---|---|---|---|---|---|---|")
    for path in motions:
        seqs = load_motion(path)
        for proto, noise in PROTOCOLS:
            with Pipeline(backend="onnxruntime", max_streams=len(seqs) * len(cams), correction="off") as pipe:
                res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
            for label, f in filters.items():
                o = score({k: {**r, "refined": f(r["refined"])} for k, r in res.items()})["overall"]
                L, R = o["lifter"], o["refined"]
                print(f"| {path.name} | {proto} | {label} | {R['mpjpe']:.1f} | {R['mpjpe'] / L['mpjpe']:.3f} | "
                      f"{R['accel']:.2f} | {R['accel'] / L['accel']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
