"""What the depth from bone lengths and the distance tracker add after the camera-aware correction
(issue 3).

The camera-aware correction (``Pipeline.add_stream``) moves each refined joint across its line of
sight onto its 2D keypoint's camera ray; the depth along that line is what the 2D does not
observe. ``bone_depth`` (on by default) then sets each bone's extent along the child's line of
sight from the stream's running mean bone lengths
(``posert.runtime.reprojection.bone_depth_correction``), keeping the 2D. This script streams motion
through ``posert eval``'s protocol (4 real H36M cameras, causal, all streams batched, the default
backend, guessed intrinsics) three ways under every 2D protocol (ground truth, detector noise,
missing joints/limbs):

- ``refiner alone``: ``reprojection="off"``;
- ``+ lateral``: the camera-aware correction without the bone depth (``bone_depth=False``);
- ``+ bone depth, plain mean``: session 21's running lengths, every frame alike, no pooling
  (``bone_view_power=0, bone_symmetry=False``);
- ``+ bone depth, viewed``: each frame weighted by min(1, e / L₀)^P, P = ``BONE_VIEW_POWER``, e the
  bone's extent across the line of sight and L₀ its running length (capped at ``BONE_VIEW_CAP``
  times the plain one), no pooling;
- ``+ bone depth, pooled``: every frame alike, left/right pooled;
- ``+ bone depth, viewed uncapped + pooled``: L₀ the weighted length without the cap
  (``bone_view_cap=inf``, session 22's default);
- ``+ bone depth, viewed against the plain length + pooled``: L₀ = min(L, 1 · plain), in effect the
  plain running length (``bone_view_cap=1``);
- ``lateral β = 0.1 (session 23)`` / ``lateral β = 1``: the default bone depth after a lateral EMA
  with a fixed β (``reprojection_ema``) instead of the default per-stream gain for the 2D noise
  estimated from the stream's innovations (``"auto"``, session 24); 0.1 is sessions 18–23's β;
- ``+ bone depth, viewed + pooled (session 24)``: the default bone depth;
- ``+ lateral + distance tracker, no bone depth``: the distance tracker
  (``posert.runtime.reprojection.distance_track``) after the lateral correction alone;
- ``+ distance tracker, 2D noise from the innovations alone``: the default without the second
  noise estimate from the keypoints' own third differences (``pixel_noise=False``, session 24's
  estimate);
- ``+ distance tracker (default)``: the default bone depth, then the pose moved in depth to the
  stream's tracked distance (``distance_index``, session 25): what ``posert eval`` reports. Every
  row above the distance tracker's runs with ``distance_index=0``;
- with ``--view-powers P ...`` also ``viewed P, pooled`` for each P (the sweep behind the default),
  and with ``--distance-indices λ ...`` the default with each tracking index λ (the sweep behind
  ``DISTANCE_INDEX``);

and prints MPJPE, P-MPJPE and acceleration error of the lifter and of the output, and the
standard deviation of the output's bone lengths along each stream (the truth's is ~0), as a
Markdown table for RESULTS.md.

    .venv/bin/python benchmarks/bone_depth.py [--motion FILE.npz ...] [--lifter PATH] [--refiner PATH]
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

from posert.cli import _eval_cameras
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, OcclusionModel
from posert.evaluate import load_motion, markdown_cells, score, stream_sequences
from posert.runtime import Pipeline
from posert.runtime.reprojection import BONE_VIEW_POWER, DISTANCE_INDEX
from posert.skeleton import bone_lengths

PROTOCOLS = {"ground-truth": None, "detector": NoiseModel(), "missing": OcclusionModel()}
_OFF = dict(distance_index=0.0)  # the rows before the distance tracker
SETTINGS = (("refiner alone", dict(reprojection="off")), ("+ lateral", dict(bone_depth=False, **_OFF)),
            ("+ bone depth, plain mean (session 21)", dict(bone_view_power=0.0, bone_symmetry=False, **_OFF)),
            (f"+ bone depth, viewed (P = {BONE_VIEW_POWER:g})", dict(bone_symmetry=False, **_OFF)),
            ("+ bone depth, pooled", dict(bone_view_power=0.0, **_OFF)),
            ("+ bone depth, viewed uncapped + pooled (session 22)", dict(bone_view_cap=float("inf"), **_OFF)),
            ("+ bone depth, viewed against the plain length + pooled", dict(bone_view_cap=1.0, **_OFF)),
            ("+ bone depth (default), lateral β = 0.1 (session 23)", dict(reprojection_ema=0.1, **_OFF)),
            ("+ bone depth (default), lateral β = 1", dict(reprojection_ema=1.0, **_OFF)),
            ("+ bone depth, viewed + pooled (session 24)", dict(**_OFF)),
            ("+ lateral + distance tracker, no bone depth", dict(bone_depth=False)),
            ("+ distance tracker, 2D noise from the innovations alone (no pixel_noise)", dict(pixel_noise=False)),
            (f"+ distance tracker (default, λ = {DISTANCE_INDEX:g})", dict()))


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
                    help="also run viewed P + pooled for each P (the sweep behind BONE_VIEW_POWER)")
    ap.add_argument("--distance-indices", nargs="*", type=float, default=[], metavar="λ",
                    help="also run the default with each tracking index λ (the sweep behind DISTANCE_INDEX)")
    ap.add_argument("--only", nargs="*", default=None, metavar="TEXT",
                    help="run only the rows whose label contains one of these texts")
    args = ap.parse_args()
    settings = SETTINGS + tuple((f"+ bone depth, viewed (P = {p:g}) + pooled", dict(bone_view_power=p))
                                for p in args.view_powers)
    settings += tuple((f"+ distance tracker, λ = {x:g}", dict(distance_index=x)) for x in args.distance_indices)
    if args.only:
        settings = tuple(s for s in settings if any(t in s[0] for t in args.only))
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = _eval_cameras("h36m")
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
                pipe = Pipeline(max_streams=len(seqs) * len(cams), lifter=args.lifter, refiner=args.refiner,
                                mean_ema=args.mean_ema, **kw)
                res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
                pipe.close()
                print(f"| {args.label or path.name} | {proto} | {label} | {markdown_cells(score(res)['overall'])} | "
                      f"{bone_sd(res, 'refined'):.1f} ({bone_sd(res, 'lifted'):.1f}) |", flush=True)


if __name__ == "__main__":
    main()
