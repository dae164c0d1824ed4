"""What each part of the correction stage adds after the refiner, row by row: the lateral step,
the bone depth and its running lengths' forms, the lateral β, the distance step.

The lateral step moves each refined joint across its line of sight onto its 2D keypoint's camera
ray; the depth along that line is what the 2D does not observe. The bone depth then sets each
bone's extent along the child's line of sight from the stream's running bone lengths
(``posert.runtime.correction.reference.bone_depth_correction``), keeping the 2D. This script
streams motion through ``posert eval``'s protocol (4 real H36M cameras, causal, all streams
batched, the default backend, guessed intrinsics) under every 2D protocol (ground truth, detector
noise, missing joints/limbs), one row per ``CorrectionConfig``:

- ``refiner alone``: ``mode="off"``;
- ``+ lateral``: the lateral step without the bone depth (``bone_depth=False``);
- ``+ bone depth, plain mean``: every frame alike in the running lengths, no pooling
  (``bone_view_power=0, bone_symmetry=False``);
- ``+ bone depth, viewed``: each frame weighted by min(1, e / L₀)^P (``bone_view_power``), e the
  bone's extent across the line of sight and L₀ its running length (capped at ``bone_view_cap``
  times the plain one), no pooling;
- ``+ bone depth, pooled``: every frame alike, left/right pooled;
- ``+ bone depth, viewed uncapped + pooled``: L₀ the weighted length without the cap
  (``bone_view_cap=inf``);
- ``+ bone depth, viewed against the plain length + pooled``: L₀ = min(L, 1 · plain), in effect the
  plain running length (``bone_view_cap=1``);
- ``fixed lateral β = 0.1`` / ``= 1``: the default bone depth after a lateral EMA with a fixed β
  (``lateral_ema``) instead of the per-stream gain for the estimated 2D noise (``"auto"``);
- ``+ bone depth, viewed + pooled, adaptive β``: the default bone depth without the distance step;
- ``+ lateral + distance tracker, no bone depth``: the distance step after the lateral step alone;
- ``+ distance tracker, 2D noise from the innovations alone``: the default without the second
  noise estimate from the keypoints' own third differences (``pixel_noise=False``);
- ``+ distance tracker (default)``: the default stage, what ``posert eval`` reports. Every row
  above the distance tracker's runs with ``distance_index=0``;
- with ``--view-powers P ...`` also ``viewed P, pooled`` for each P (the sweep behind the default),
  and with ``--distance-indices λ ...`` the default with each tracking index λ (the sweep behind
  ``distance_index``);

and prints MPJPE, P-MPJPE and acceleration error of the lifter and of the output, and the
standard deviation of the output's bone lengths along each stream (the truth's is ~0), as a
Markdown table.

    .venv/bin/python experiments/bone_depth.py [--motion FILE.npz ...] [--lifter PATH] [--refiner PATH]
        [--mean-ema A] [--label NAME] [--protocols ground-truth detector missing] [--view-powers P ...]
        [--distance-indices λ ...] [--only TEXT ...]

Without ``--motion`` it uses the validation motion.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, OcclusionModel
from posert.evaluate import eval_cameras, load_motion, markdown_cells, score, stream_sequences
from posert.runtime import Pipeline
from posert.skeleton import bone_lengths

_DEFAULT = CorrectionConfig()
PROTOCOLS = {"ground-truth": None, "detector": NoiseModel(), "missing": OcclusionModel()}
_OFF = dict(distance_index=0.0)  # the rows before the distance tracker
SETTINGS = (("refiner alone", dict(mode="off")), ("+ lateral", dict(bone_depth=False, **_OFF)),
            ("+ bone depth, plain mean", dict(bone_view_power=0.0, bone_symmetry=False, **_OFF)),
            (f"+ bone depth, viewed (P = {_DEFAULT.bone_view_power:g})", dict(bone_symmetry=False, **_OFF)),
            ("+ bone depth, pooled", dict(bone_view_power=0.0, **_OFF)),
            ("+ bone depth, viewed uncapped + pooled", dict(bone_view_cap=float("inf"), **_OFF)),
            ("+ bone depth, viewed against the plain length + pooled", dict(bone_view_cap=1.0, **_OFF)),
            ("+ bone depth (default), fixed lateral β = 0.1", dict(lateral_ema=0.1, **_OFF)),
            ("+ bone depth (default), fixed lateral β = 1", dict(lateral_ema=1.0, **_OFF)),
            ("+ bone depth, viewed + pooled, adaptive β", dict(**_OFF)),
            ("+ lateral + distance tracker, no bone depth", dict(bone_depth=False)),
            ("+ distance tracker, 2D noise from the innovations alone (no pixel_noise)", dict(pixel_noise=False)),
            (f"+ distance tracker (default, λ = {_DEFAULT.distance_index:g})", dict()))


def bone_sd(results: dict, key: str) -> float:
    """Mean over streams and bones of the standard deviation of a bone's length along the stream, mm."""
    return float(np.mean([bone_lengths(r[key]).std(axis=1).mean() for r in results.values()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    ap.add_argument("--mean-ema", type=float, default=None, help="default: the refiner checkpoint's")
    ap.add_argument("--label", default=None, help="the motion column (default: the file name)")
    ap.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    ap.add_argument("--view-powers", nargs="*", type=float, default=[],
                    help="also run viewed P + pooled for each P (the sweep behind CorrectionConfig.bone_view_power)")
    ap.add_argument("--distance-indices", nargs="*", type=float, default=[], metavar="λ",
                    help="also run the default with each tracking index λ (the sweep behind "
                         "CorrectionConfig.distance_index)")
    ap.add_argument("--only", nargs="*", default=None, metavar="TEXT",
                    help="run only the rows whose label contains one of these texts")
    args = ap.parse_args()
    settings = SETTINGS + tuple((f"+ bone depth, viewed (P = {p:g}) + pooled", dict(bone_view_power=p))
                                for p in args.view_powers)
    settings += tuple((f"+ distance tracker, λ = {x:g}", dict(distance_index=x)) for x in args.distance_indices)
    if args.only:
        settings = tuple(s for s in settings if any(t in s[0] for t in args.only))
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    print(f"\n{datetime.date.today()} — {platform.node()}: refiner {args.refiner or 'committed'}, lifter "
          f"{args.lifter or 'committed'}; 4 H36M cameras, default backend, guessed intrinsics, seed 0. MPJPE "
          "(P-MPJPE) in mm, acceleration error in mm/frame²; ratios to the lifter; bone sd: the standard "
          "deviation of the output's bone lengths along a stream, mm (lifter's in brackets).\n")
    print("| motion | 2D | output | lifter MPJPE (P-MPJPE) | output MPJPE (P-MPJPE) | MPJPE ratio | lifter accel "
          "| output accel | accel ratio | visible-joint frames | bone sd (lifter) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in motions:
        seqs = load_motion(path)
        for proto in args.protocols:
            noise = PROTOCOLS[proto]
            for label, kw in settings:
                cfg = PipelineConfig(len(seqs) * len(cams), BackendConfig(lifter=args.lifter, refiner=args.refiner),
                                     RefinerConfig(mean_ema=args.mean_ema), CorrectionConfig(**kw))
                with Pipeline(cfg) as pipe:
                    res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
                print(f"| {args.label or path.name} | {proto} | {label} | {markdown_cells(score(res)['overall'])} | "
                      f"{bone_sd(res, 'refined'):.1f} ({bone_sd(res, 'lifted'):.1f}) |", flush=True)


if __name__ == "__main__":
    main()
