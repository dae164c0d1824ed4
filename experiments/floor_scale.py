"""Is the person's scale observable from a floor plane? An offline analysis for issue 3 (not in the runtime).

The camera-aware correction (``Pipeline.add_stream(..., camera=...)``) puts a pose on its 2D's
camera rays but cannot fix its overall size: a pose s times larger, s times farther away, projects
the same. A tall performer lifted at 0.85 of his size keeps that error (OMOMO's sub3). With the
camera's pose over the floor (the eval cameras' R, t; world z-up, floor z = 0) and the assumption
that a foot is on the floor, the size becomes observable: scaling the placed pose Q = P + R about
the camera centre by s moves the lowest ankle's world height to s (c·Q_j) − c·t (c: the camera's
z-axis in world), so s = (h + c·t) / (c·Q_j) puts it at the ankle height h. The per-stream
estimate is the running median of s over the frames so far (causal); the output is s · P.

This script streams motion through ``posert eval``'s protocol with ground-truth 2D and
``--camera-aware`` and a fixed lateral β of 1, then applies the scale offline and prints MPJPE and
acceleration error without it, with the causal running median, and with the whole-sequence
median (not causal: the best a constant per-stream scale of this estimate does). ``h`` is the
sequence's median lowest-ankle height (a constant of the capture, known here from the motion).

    .venv/bin/python experiments/floor_scale.py [--motion FILE.npz ...] [--lifter PATH] [--refiner PATH]
        [--mean-ema A]
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import center_on_floor
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.metrics import accel_error, mpjpe
from posert.runtime import Pipeline
from posert.runtime.correction.reference import lateral_correction

ANKLES = [3, 6]


def floor_scales(pose: np.ndarray, rays: np.ndarray, cam, ankle_height: float) -> np.ndarray:
    """Per-frame scale s (T,) that puts the lowest ankle of ``pose`` (T, 17, 3) mm, on its rays
    (T, 17, 2), at world height ``ankle_height`` mm through ``cam``."""
    _, R = lateral_correction(pose, rays, np.ones(pose.shape[:2]), return_position=True)
    Q = pose + R[:, None]
    c = cam.R[:, 2]  # world z of a camera-frame point q is c · (q − t)
    zq = Q[:, ANKLES] @ c
    return (ankle_height + cam.t @ c) / zq.min(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--mean-ema", type=float, default=None)
    args = ap.parse_args()
    ort = BackendConfig(name="onnxruntime", lifter=args.lifter, refiner=args.refiner)
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    print(f"\n{datetime.date.today()} — {platform.node()}: refiner {args.refiner or 'committed'}, lifter "
          f"{args.lifter or 'committed'}; 4 H36M cameras, ground-truth 2D, camera-aware β = 1, ORT CPU. "
          "MPJPE in mm, acceleration error in mm/frame².\n")
    print("| motion | sequence | lifter | camera-aware | × causal floor scale | × whole-sequence floor scale "
          "| estimated / true scale |")
    print("|---|---|---|---|---|---|---|")
    for path in motions:
        seqs = load_motion(path)
        # the lateral step alone, fixed β = 1 (the stage when this was measured)
        cfg = PipelineConfig(len(seqs) * len(cams), ort, RefinerConfig(mean_ema=args.mean_ema),
                             CorrectionConfig(lateral_ema=1.0, bone_depth=False, distance_index=0.0))
        with Pipeline(cfg) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, None, seed=0, progress=False, camera_aware=True)
        totals = []
        for name, r in res.items():
            world = center_on_floor(seqs[name])
            h = float(np.median(world[:, ANKLES, 2].min(-1)))
            rows = []
            for ci, cam in enumerate(cams):
                P, gt = r["refined"][ci].astype(np.float64), r["gt"][ci]
                s = floor_scales(P, cam.rays(r["px"][ci]), cam, h)
                causal = np.array([np.median(s[:t + 1]) for t in range(len(s))])
                outs = (r["lifted"][ci], P, P * causal[:, None, None], P * np.median(s))
                true = np.sqrt((gt ** 2).sum() / (P ** 2).sum())
                rows.append([len(P)] + [mpjpe(o, gt) for o in outs] + [accel_error(o, gt) for o in outs]
                            + [np.median(s) / true])
            rows = np.array(rows)
            totals.append(rows)
            m = rows[:, 1:].mean(0)
            print(f"| {path.name} | {name} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | "
                  f"{', '.join(f'{v:.2f}' for v in rows[:, -1])} |", flush=True)
        t = np.concatenate(totals)
        m = np.average(t[:, 1:], axis=0, weights=t[:, 0])
        print(f"| {path.name} | **all** (accel: {m[4]:.2f} / {m[5]:.2f} / {m[6]:.2f} / {m[7]:.2f}) | {m[0]:.1f} | "
              f"{m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
