"""What the camera-aware correction adds, and how much to smooth it: the EMA weight β (issue 3).

A stream added with its camera (``Pipeline.add_stream(..., camera=cam)``) has each refined pose
moved across the viewing direction onto the camera rays of its 2D keypoints, at unchanged depths
(``posert.runtime.correction.reference.lateral_correction``); the per-joint correction is smoothed along the
stream by a causal EMA of weight β · confidence (``CorrectionConfig.lateral_ema``). This script streams motion
through ``posert eval``'s protocol (4 real H36M cameras, causal, all streams batched, ORT CPU)
without the correction ("off"), with the calibrated camera for every β given, and with guessed
intrinsics (``Camera.guess``, the Pipeline's default), under every 2D protocol (ground truth,
detector noise, missing joints/limbs), and prints MPJPE, P-MPJPE and acceleration error of the
lifter and of the output as a Markdown table for RESULTS.md.

    .venv/bin/python experiments/lateral_correction.py [--motion FILE.npz ...] [--betas 1 0.3 0.1 0.03]
        [--lifter PATH] [--refiner PATH] [--mean-ema A]

Without ``--motion`` it uses the validation motion. The rows are the lateral correction alone
(``bone_depth=False``, as when this table was first made); ``experiments/bone_depth.py`` adds the
depth from bone lengths on top.
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
from posert.runtime import Pipeline

PROTOCOLS = (("ground-truth", None), ("detector noise", NoiseModel()), ("missing joints/limbs", OcclusionModel()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--betas", nargs="+", type=float, default=[1.0, 0.3, 0.1, 0.03])
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--mean-ema", type=float, default=None, help="default: the refiner checkpoint's")
    ap.add_argument("--guess-beta", type=float, default=0.1,
                    help="β of the last row: no calibration, Camera.guess intrinsics (the Pipeline's default)")
    args = ap.parse_args()
    ort = BackendConfig(name="onnxruntime", lifter=args.lifter, refiner=args.refiner)
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    print(f"\n{datetime.date.today()} — {platform.node()}: refiner {args.refiner or 'committed'}, lifter "
          f"{args.lifter or 'committed'}; 4 H36M cameras, ORT CPU, seed 0. MPJPE (P-MPJPE) in mm, acceleration "
          "error in mm/frame²; ratios to the lifter. β = off: no correction (the refined output as it is); "
          "other rows: the calibrated H36M cameras, or guessed intrinsics where the row says so.\n")
    print("| motion | 2D | β | lifter MPJPE (P-MPJPE) | output MPJPE (P-MPJPE) | MPJPE ratio | lifter accel "
          "| output accel | accel ratio | visible-joint frames |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in motions:
        seqs = load_motion(path)
        for proto, noise in PROTOCOLS:
            settings = [("off", "off", False, 1.0)] + [(f"{b:g}", "given", True, b) for b in args.betas]
            settings.append((f"{args.guess_beta:g}, guessed intrinsics", "guess", False, args.guess_beta))
            for label, mode, calibrated, beta in settings:
                # the lateral step alone (experiments/bone_depth.py adds the rest)
                corr = CorrectionConfig(mode=mode, lateral_ema=beta, bone_depth=False, distance_index=0.0)
                cfg = PipelineConfig(len(seqs) * len(cams), ort, RefinerConfig(mean_ema=args.mean_ema), corr)
                with Pipeline(cfg) as pipe:
                    res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False,
                                              camera_aware=calibrated)
                print(f"| {path.name} | {proto} | {label} | {markdown_cells(score(res)['overall'])} |", flush=True)


if __name__ == "__main__":
    main()
