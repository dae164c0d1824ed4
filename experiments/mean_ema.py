"""How much of the CND's conditional mean to take from each frame: the EMA weight α (issue 3).

A refiner trained with ``--noise cnd0`` starts its K DDIM steps from x_T − μ̄, where μ̄ is a
causal exponential moving average of the CND's conditional mean μ_a|b(y, x_T) along the stream,
μ̄_t = μ̄_{t−1} + α (μ_t − μ̄_{t−1}) (``CND.mean_ema``; α = 1 subtracts μ_a|b of every frame).
μ_a|b is a linear map of the frame's 2D and of x_T: it predicts the lifter's slowly varying bias,
but passes on, amplified, the frame-to-frame jitter of noisy 2D, of hidden joints and of the
lifter's output. This script streams motion through ``posert eval``'s protocol (4 real H36M
cameras, causal, all streams batched, ORT CPU) for every α given and every 2D protocol (ground
truth, detector noise, missing joints/limbs) and prints MPJPE, P-MPJPE and acceleration error of
the lifter and of the refined output as a Markdown table for RESULTS.md.

    .venv/bin/python experiments/mean_ema.py [--motion FILE.npz ...] [--alphas 1 0.5 0.3 0.2 0.1]
        [--lifter PATH] [--refiner PATH]

Without ``--motion`` it uses the validation motion (where the committed α = 0.3 was chosen).
``--refiner`` must be a checkpoint whose CND has ``subtract_mean`` set.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, OcclusionModel
from posert.evaluate import eval_cameras, load_motion, markdown_cells, score, stream_sequences
from posert.models.io import load_refiner
from posert.runtime import Pipeline

PROTOCOLS = (("ground-truth", None), ("detector noise", NoiseModel()), ("missing joints/limbs", OcclusionModel()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--alphas", nargs="+", type=float, default=[1.0, 0.5, 0.3, 0.2, 0.1])
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    args = ap.parse_args()
    ort = BackendConfig(name="onnxruntime", lifter=args.lifter, refiner=args.refiner)
    _, cnd = load_refiner(args.refiner)
    if not cnd.subtract_mean:
        raise SystemExit("this refiner's CND does not subtract its mean (train it with --noise cnd0)")
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    print(f"\n{datetime.date.today()} — {platform.node()}: refiner {args.refiner or 'committed'} "
          f"(its mean_ema {cnd.mean_ema}), lifter {args.lifter or 'committed'}; 4 H36M cameras, ORT CPU, seed 0. "
          "MPJPE (P-MPJPE) in mm, acceleration error in mm/frame²; ratios to the lifter.\n")
    print("| motion | 2D | α | lifter MPJPE (P-MPJPE) | refined MPJPE (P-MPJPE) | MPJPE ratio | lifter accel "
          "| refined accel | accel ratio | visible-joint frames |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in motions:
        seqs = load_motion(path)
        for proto, noise in PROTOCOLS:
            for a in args.alphas:
                cfg = PipelineConfig(len(seqs) * len(cams), ort,
                                     RefinerConfig(cnd_mean=True, mean_ema=a), CorrectionConfig(mode="off"))
                with Pipeline(cfg) as pipe:
                    res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
                print(f"| {path.name} | {proto} | {a:g} | {markdown_cells(score(res)['overall'])} |", flush=True)


if __name__ == "__main__":
    main()
