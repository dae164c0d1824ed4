"""Whose joints? How a detector's keypoints and each mocap source's joints are defined, measured as
body proportions, to size the training's bone-length augmentation (:data:`posert.data.dataset.BONE_SCALE`).

- 3D, per training source (and OMOMO): medians of the torso (mid-hips to mid-shoulders), hip and
  shoulder width, thigh, shin, upper arm and forearm (mm), and how far the H36M-17 neck and head
  joints sit above the mid-shoulders along the torso (in torso lengths).
- 2D, per BlazePose landmark recording (``posert run --record FILE``; the committed clip's is
  tests/data/sports2d_clip_blazepose.npz) against each source rendered through the four H36M
  cameras: median ratios that a view changes little (torso / thigh, shin / thigh, forearm / upper
  arm, hip / shoulder width).

    python experiments/joint_definitions.py DATA_3D.npz [--omomo omomo_motion.npz] [--record rec.npz ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posert.skeleton import JOINT_NAMES, blazepose_to_h36m

J = {n: i for i, n in enumerate(JOINT_NAMES)}


def _length(P: np.ndarray, a: str, b: str) -> np.ndarray:
    return np.linalg.norm(P[..., J[a], :] - P[..., J[b], :], axis=-1)


def proportions_3d(P: np.ndarray) -> dict[str, float]:
    """(T, 17, 3) mm → median lengths (mm) and the neck and head heights above the mid-shoulders."""
    mid_hip = (P[:, J["l_hip"]] + P[:, J["r_hip"]]) / 2
    mid_sh = (P[:, J["l_shoulder"]] + P[:, J["r_shoulder"]]) / 2
    axis = mid_sh - mid_hip
    torso = np.linalg.norm(axis, axis=-1)
    u = axis / torso[:, None]
    out = {"torso": torso, "hip width": _length(P, "l_hip", "r_hip"),
           "shoulder width": _length(P, "l_shoulder", "r_shoulder"), "thigh": _length(P, "l_hip", "l_knee"),
           "shin": _length(P, "l_knee", "l_ankle"), "upper arm": _length(P, "l_shoulder", "l_elbow"),
           "forearm": _length(P, "l_elbow", "l_wrist")}
    for j in ("neck", "head"):
        out[f"{j} above shoulders / torso"] = np.einsum("ij,ij->i", P[:, J[j]] - mid_sh, u) / torso
    return {k: float(np.median(v)) for k, v in out.items()}


def ratios_2d(px: np.ndarray) -> dict[str, float]:
    """(T, 17, 2) px → median 2D ratios that a camera's view changes little."""
    mid_hip = (px[:, J["l_hip"]] + px[:, J["r_hip"]]) / 2
    mid_sh = (px[:, J["l_shoulder"]] + px[:, J["r_shoulder"]]) / 2
    torso = np.linalg.norm(mid_sh - mid_hip, axis=-1)
    thigh = (_length(px, "l_hip", "l_knee") + _length(px, "r_hip", "r_knee")) / 2
    shin = (_length(px, "l_knee", "l_ankle") + _length(px, "r_knee", "r_ankle")) / 2
    upper = (_length(px, "l_shoulder", "l_elbow") + _length(px, "r_shoulder", "r_elbow")) / 2
    fore = (_length(px, "l_elbow", "l_wrist") + _length(px, "r_elbow", "r_wrist")) / 2
    r = {"torso / thigh": torso / thigh, "shin / thigh": shin / thigh, "forearm / upper arm": fore / upper,
         "hip / shoulder width": _length(px, "l_hip", "r_hip") / _length(px, "l_shoulder", "r_shoulder")}
    return {k: float(np.nanmedian(v)) for k, v in r.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="posert's training data (data_3d_posert.npz)")
    ap.add_argument("--omomo", type=Path, help="the held-out OMOMO motion (posert eval --motion format)")
    ap.add_argument("--record", type=Path, nargs="*", default=[], help="BlazePose landmark recordings")
    args = ap.parse_args()
    from posert.data.dataset import center_on_floor, load_positions, render
    from posert.evaluate import eval_cameras

    sources = {s: np.concatenate(list(acts.values())) for s, acts in load_positions(args.data).items()}
    if args.omomo:
        with np.load(args.omomo) as z:
            sources["omomo"] = np.concatenate([z[k] for k in z.files])
    rows3, rows2 = {}, {}
    for name, P in sources.items():
        rows3[name] = proportions_3d(P)
        world = center_on_floor(P[::4])
        rows2[name] = ratios_2d(np.concatenate([render(world, c)[0] for c in eval_cameras("h36m")]))
    for path in args.record:
        with np.load(path) as z:
            lm = z["landmarks"].astype(np.float64)
        px, _ = blazepose_to_h36m(lm[..., :2], lm[..., 2])
        rows2[f"BlazePose: {path.name}"] = ratios_2d(px[np.isfinite(px).all(axis=(1, 2))])
    for title, rows, fmt in (("3D, mm", rows3, "{:.0f}"), ("2D", rows2, "{:.2f}")):
        keys = list(next(iter(rows.values())))
        print(f"\n{title}\n| source | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
        for name, r in rows.items():
            print(f"| {name} | " + " | ".join((fmt if "/" not in k else "{:.2f}").format(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
