"""Where the acceleration error with ground-truth 2D comes from, and how low it could go (issue 3).

Issue 3 asks for an acceleration error ≤ 0.5 × the lifter's with ground-truth 2D, measured against
the mocap ground truth frame by frame: mean ‖(x̂_{t+1} − 2x̂_t + x̂_{t−1}) − (x_{t+1} − 2x_t + x_{t−1})‖,
mm/frame², 50 fps, root-relative, camera frame. SmoothNet-style gains of that order come from
removing an estimator's *jitter*. This script measures whether that is what the error is here.

It streams each motion through ``posert eval``'s protocol (4 real H36M cameras, ground-truth 2D,
causal, all streams batched, the default backend and pipeline, guessed intrinsics) and prints, per
motion file (frame-weighted over its sequences):

1. What the error is made of.
   - the mean magnitude of the second differences of the truth, the lifter and the output: an
     estimate whose accelerations are *smaller* than the truth's is not jittery, it misses motion;
   - the error of an estimate with no acceleration at all (its error is the truth's magnitude),
     as a ratio to the lifter's;
   - the RMS of the error across the line of sight (camera x, y, which the 2D observes) and along
     it (z, depth), for the lifter and the output, next to the RMS of the truth's own depth
     acceleration. An error in depth as large as the truth's depth acceleration means that the
     estimate captures none of it;
   - the coefficient of variation (sd / mean along a stream) of the truth's leg and arm bones and
     of its torso, head and shoulder bones: what a bone-length constraint could rely on.
2. Oracles (ratio to the lifter's acceleration error). The 2D observes the lateral coordinates,
   high frequencies included, so these keep the *true* lateral coordinates and vary the depth:
   - the output's own depth;
   - the true depth through a zero-phase 4th-order Butterworth low-pass at each ``--cutoffs``
     (non-causal, exact in its band: better placed than any streaming estimator).
   If the oracles stay above 0.5, the target needs depth accelerations that are right above the
   cutoff.

    .venv/bin/python experiments/accel_bound.py [--motion FILE.npz ...] [--label NAME ...]
        [--lifter PATH] [--refiner PATH] [--mean-ema A] [--cutoffs 6 12]

Without ``--motion`` it uses the validation motion.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np
from oracle_bounds import band_limited_oracle

from posert.config import BackendConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.runtime import Pipeline
from posert.skeleton import bone_lengths

# bones (index b = child joint − 1) whose two ends are joints of the source skeletons: pelvis–hip,
# thigh, shin, upper arm, forearm. The others end at joints that sources derive as means (spine,
# thorax, neck, head; DATA.md) or start at the derived thorax (the shoulders)
LIMB_BONES = [0, 1, 2, 3, 4, 5, 11, 12, 14, 15]


def _acc(x: np.ndarray) -> np.ndarray:
    """(C, T, 17, 3) → (C, T − 2, 17, 3) second differences, float64."""
    x = np.asarray(x, np.float64)
    return x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]


def _err(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(_acc(pred) - _acc(gt), axis=-1).mean())


def decompose(r: dict, cutoffs) -> dict:
    """The figures of one sequence's streams, ``r`` one entry of :func:`stream_sequences`."""
    gt, lif, out = (np.asarray(r[k], np.float64) for k in ("gt", "lifted", "refined"))
    a_gt, a_l, a_o = _acc(gt), _acc(lif), _acc(out)
    rms = lambda d, axes: float(np.sqrt((d[..., axes] ** 2).sum(-1).mean()))  # noqa: E731
    bones = bone_lengths(gt)  # (C, T, 16)
    cv = bones.std(axis=1) / bones.mean(axis=1)
    torso = [b for b in range(bones.shape[-1]) if b not in LIMB_BONES]
    f = {"lifter": _err(lif, gt), "output": _err(out, gt),
         **{f"mag_{k}": float(np.linalg.norm(a, axis=-1).mean()) for k, a in (("gt", a_gt), ("lifter", a_l),
                                                                              ("output", a_o))},
         "lat_lifter": rms(a_l - a_gt, [0, 1]), "lat_output": rms(a_o - a_gt, [0, 1]),
         "z_lifter": rms(a_l - a_gt, [2]), "z_output": rms(a_o - a_gt, [2]), "z_gt": rms(a_gt, [2]),
         "cv_limbs": float(cv[:, LIMB_BONES].mean()), "cv_torso": float(cv[:, torso].mean()),
         "own_depth": _err(np.concatenate([gt[..., :2], out[..., 2:]], -1), gt)}
    for c in cutoffs:
        low = band_limited_oracle(gt, c)
        f[f"depth_{c:g}"] = _err(np.concatenate([gt[..., :2], low[..., 2:]], -1), gt)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--label", nargs="+", default=None, help="a name per --motion (default: the file names)")
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--mean-ema", type=float, default=None, help="default: the refiner checkpoint's")
    ap.add_argument("--cutoffs", nargs="+", type=float, default=[6.0, 12.0])
    args = ap.parse_args()
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    labels = args.label or [p.name for p in motions]
    if len(labels) != len(motions):
        raise SystemExit("give one --label per --motion")
    cams = eval_cameras("h36m")
    rows = []
    for label, path in zip(labels, motions):
        seqs = load_motion(path)
        cfg = PipelineConfig(len(seqs) * len(cams), BackendConfig(lifter=args.lifter, refiner=args.refiner),
                             RefinerConfig(mean_ema=args.mean_ema))
        with Pipeline(cfg) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, None, seed=0, progress=False)
        figs = [decompose(r, args.cutoffs) for r in res.values()]
        frames = [r["gt"].shape[1] for r in res.values()]
        rows.append((label, {k: float(np.average([f[k] for f in figs], weights=frames)) for k in figs[0]}))
    print(f"\n{datetime.date.today()} — {platform.node()}: lifter {args.lifter or 'committed'}, refiner "
          f"{args.refiner or 'committed'}, mean_ema {args.mean_ema or 'checkpoint'}; 4 H36M cameras, ground-truth "
          "2D, default backend and pipeline, guessed intrinsics. mm/frame² (50 fps), camera frame, root-relative; "
          "frame-weighted over each file's sequences.\n")
    print("| motion | lifter accel error | output (ratio) | mean ‖a‖ truth / lifter / output | no-acceleration "
          "estimate (ratio) | RMS error lateral: lifter / output | RMS error depth: lifter / output | truth's depth "
          "RMS | bone sd / mean: legs, arms / torso, head, shoulders |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, f in rows:
        print(f"| {label} | {f['lifter']:.2f} | {f['output']:.2f} ({f['output'] / f['lifter']:.2f}) | "
              f"{f['mag_gt']:.2f} / {f['mag_lifter']:.2f} / {f['mag_output']:.2f} | "
              f"{f['mag_gt']:.2f} ({f['mag_gt'] / f['lifter']:.2f}) | {f['lat_lifter']:.2f} / {f['lat_output']:.2f} | "
              f"{f['z_lifter']:.2f} / {f['z_output']:.2f} | {f['z_gt']:.2f} | "
              f"{f['cv_limbs']:.1%} / {f['cv_torso']:.1%} |")
    cut = " | ".join(f"true lateral + true depth ≤ {c:g} Hz" for c in args.cutoffs)
    print(f"\nOracles, ratio to the lifter's acceleration error.\n\n| motion | output | true lateral + the output's "
          f"depth | {cut} |")
    print("|---|---|---|" + "---|" * len(args.cutoffs))
    for label, f in rows:
        cells = [f"{f['output'] / f['lifter']:.2f}", f"{f['own_depth'] / f['lifter']:.2f}"]
        cells += [f"{f[f'depth_{c:g}'] / f['lifter']:.2f}" for c in args.cutoffs]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
