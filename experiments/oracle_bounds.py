"""How far could any stage after the lifter go? Two oracles against issue 3's targets.

1. Acceleration: a band-limited oracle.

Issue 3 asks for an acceleration error ≤ 0.5 × the lifter's with ground-truth 2D. The error is
measured against the mocap ground truth, frame by frame:
mean ‖(x̂_{t+1} − 2x̂_t + x̂_{t−1}) − (x_{t+1} − 2x_t + x_{t−1})‖ in mm/frame², 50 fps.
The mocap's own second differences include content above the bandwidth of human motion
(marker noise, solver jitter), which no pose estimator can or should reproduce.

This script sets a floor for the metric. For each sequence it scores an *oracle* that knows the
true motion exactly below a cutoff f_c and nothing above it: the ground truth (camera frame,
root-relative, mm) through a zero-phase 4th-order Butterworth low-pass (``scipy.signal.butter``
+ ``filtfilt``). This oracle is non-causal and exact in its band, so it is strictly better placed
than any streaming estimator.

The script prints, per sequence and frame-weighted per motion file:
- the oracle's acceleration error and its ratio to the lifter's;
- the committed lifter and the default pipeline (``posert eval``'s protocol: 4 real H36M cameras,
  ground-truth 2D, causal, ORT CPU);
- the share of the ground truth's acceleration power above 8 and 12 Hz.

If even the oracle's ratio is above 0.5, the target asks an estimator to reproduce the ground
truth's content above f_c.

2. MPJPE: the default pipeline's output with its size set by an oracle. Monocular 2D does not
observe a person's size (s times larger and s times farther away projects the same). The oracle
scales each stream's root-relative output by the least-squares scale against the ground truth:
- one constant per stream (the person's true size, known from the first frame on);
- or one per frame (the scale that N-MPJPE removes).
It prints MPJPE and the ratio to the lifter's. If a ratio stays above 0.85 with the true size,
the rest of the gap is the pose's depth, not its size.

    .venv/bin/python experiments/oracle_bounds.py [--motion FILE.npz ...] [--sources omomo ...]
        [--cutoffs 6 8 12] [--lifter PATH] [--refiner PATH] [--mean-ema A]

Without ``--motion`` or ``--sources`` it uses the validation motion. ``--sources`` takes every
sequence of these sources from the ``posert data`` dataset (e.g. ``omomo``, held out from the
committed models).
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np
from scipy.signal import butter, filtfilt

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import load_positions
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.metrics import accel_error, mpjpe
from posert.runtime import Pipeline

FPS = 50.0


def band_limited_oracle(gt: np.ndarray, cutoff_hz: float, fps: float = FPS) -> np.ndarray:
    """The ground truth through a zero-phase 4th-order Butterworth low-pass at ``cutoff_hz``.

    Args:
        gt: (C, T, 17, 3) or (T, 17, 3) mm, filtered along the frame axis (axis −3).
    Returns:
        An array of the same shape, float64.
    """
    b, a = butter(4, cutoff_hz / (fps / 2))
    return filtfilt(b, a, np.asarray(gt, np.float64), axis=-3)


def accel_power_above(gt: np.ndarray, cutoff_hz: float, fps: float = FPS) -> float:
    """Share of the power of the (C, T, 17, 3) ground truth's second differences that lies above
    ``cutoff_hz`` (periodogram over the frame axis)."""
    acc = gt[:, 2:] - 2 * gt[:, 1:-1] + gt[:, :-2]
    power = np.abs(np.fft.rfft(acc, axis=1)) ** 2
    freq = np.fft.rfftfreq(acc.shape[1], 1.0 / fps)
    return float(power[:, freq > cutoff_hz].sum() / power.sum())


def oracle_scale(pred: np.ndarray, gt: np.ndarray, per_frame: bool = False) -> np.ndarray:
    """``pred`` (T, 17, 3) root-relative, scaled by the least-squares s = ⟨pred, gt⟩ / ⟨pred, pred⟩
    over the whole stream (``per_frame=False``) or over each frame. Returns float64."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    axes = (1, 2) if per_frame else (0, 1, 2)
    s = (p * g).sum(axes, keepdims=True) / (p * p).sum(axes, keepdims=True)
    return s * p


def _accel(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([accel_error(p, g) for p, g in zip(pred, gt)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=[])
    ap.add_argument("--sources", nargs="+", default=[], help="subjects of the posert data dataset, e.g. omomo")
    ap.add_argument("--cutoffs", nargs="+", type=float, default=[6.0, 8.0, 12.0])
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--mean-ema", type=float, default=None, help="default: the refiner checkpoint's")
    args = ap.parse_args()
    ort = BackendConfig(name="onnxruntime", lifter=args.lifter, refiner=args.refiner)
    dataset = build_dataset()
    groups = [(p.name, load_motion(p)) for p in args.motion]
    if args.sources:
        positions = load_positions(dataset)
        for src in args.sources:
            if src not in positions:
                raise SystemExit(f"unknown source {src!r}; the dataset has {sorted(positions)}")
            groups.append((src, {f"{src}/{a}": s for a, s in positions[src].items()}))
    if not groups:
        groups = [(VAL_MOTION_NAME, load_motion(dataset.parent / VAL_MOTION_NAME))]
    cams = eval_cameras("h36m")
    cut_cols = " | ".join(f"oracle ≤ {c:g} Hz (ratio)" for c in args.cutoffs)
    print(f"\n{datetime.date.today()} — {platform.node()}: lifter {args.lifter or 'committed'}, refiner "
          f"{args.refiner or 'committed'}, mean_ema {args.mean_ema or 'checkpoint'}; 4 H36M cameras, "
          "ground-truth 2D, ORT CPU, default pipeline. "
          "Acceleration error in mm/frame² (50 fps); ratios to the lifter's. Oracle: the ground truth "
          "low-passed (zero-phase Butterworth, 4th order) at the cutoff.\n")
    print(f"| motion | sequence | frames | GT accel power > 8 Hz | > 12 Hz | lifter | default pipeline (ratio) "
          f"| {cut_cols} |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(args.cutoffs))
    sizes = []
    for label, seqs in groups:
        # the stage when the oracles were measured: the lateral step alone, fixed β = 0.1
        cfg = PipelineConfig(len(seqs) * len(cams), ort, RefinerConfig(mean_ema=args.mean_ema),
                             CorrectionConfig(lateral_ema=0.1, bone_depth=False, distance_index=0.0))
        with Pipeline(cfg) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, None, seed=0, progress=False)
        rows, weights, size_rows = [], [], []
        for name, r in res.items():
            gt = r["gt"].astype(np.float64)
            lifter = _accel(r["lifted"], gt)
            vals = [accel_power_above(gt, 8.0), accel_power_above(gt, 12.0), lifter, _accel(r["refined"], gt)]
            vals += [_accel(band_limited_oracle(gt, c), gt) for c in args.cutoffs]
            rows.append((name, vals))
            pairs = list(zip(r["refined"], r["gt"]))
            size_rows.append([mpjpe(r["lifted"], gt), mpjpe(r["refined"], gt),
                              float(np.mean([mpjpe(oracle_scale(p, g), g) for p, g in pairs])),
                              float(np.mean([mpjpe(oracle_scale(p, g, per_frame=True), g) for p, g in pairs]))])
            weights.append(gt.shape[1])
        mean = np.average([v for _, v in rows], axis=0, weights=weights)
        for (name, v), frames in zip([*rows, ("**all, frame-weighted**", mean)], [*weights, sum(weights)]):
            cells = [f"{v[0]:.0%}", f"{v[1]:.0%}", f"{v[2]:.2f}", f"{v[3]:.2f} ({v[3] / v[2]:.2f})"]
            cells += [f"{x:.2f} ({x / v[2]:.2f})" for x in v[4:]]
            print(f"| {label} | {name} | {frames} | " + " | ".join(cells) + " |", flush=True)
        sizes.append((label, [n for n, _ in rows], size_rows, weights))
    print("\nMPJPE (mm) of the default pipeline's output with its size from the oracle; ratios to the lifter's.\n")
    print("| motion | sequence | lifter | default pipeline (ratio) | × true size per stream (ratio) "
          "| × true size per frame (ratio) |")
    print("|---|---|---|---|---|---|")
    for label, names, size_rows, weights in sizes:
        mean = np.average(size_rows, axis=0, weights=weights)
        for name, v in [*zip(names, size_rows), ("**all, frame-weighted**", mean)]:
            print(f"| {label} | {name} | {v[0]:.1f} | " + " | ".join(f"{x:.1f} ({x / v[0]:.3f})" for x in v[1:]) + " |")

if __name__ == "__main__":
    main()
