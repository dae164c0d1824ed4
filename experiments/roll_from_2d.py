"""Can a stream estimate its camera's roll from its own 2D, when no calibration gives it?

The estimate a stream could make as it goes: the median direction of the person's torso in the
image (mid-hips → mid-shoulders) against the image's up direction. Against the truth, the angle
about the optical axis between the camera and its upright twin (:func:`posert.camera.upright_rotation`),
per camera class of ``posert eval --cameras`` and per sequence of the validation motion.

    python experiments/roll_from_2d.py [--motion val_motion.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posert.camera import upright_rotation
from posert.data.dataset import center_on_floor, render
from posert.evaluate import eval_cameras
from posert.rigs import CLASSES


def true_roll_deg(R: np.ndarray) -> float:
    """The angle (degrees) of the world's up in the image of the camera with world → camera
    rotation R, measured as :func:`torso_roll_deg` measures a torso: minus the turn about the
    optical axis that makes the camera upright."""
    M = upright_rotation(R) @ np.asarray(R).T
    return float(-np.degrees(np.arctan2(M[1, 0], M[0, 0])))


def torso_roll_deg(px: np.ndarray) -> float:
    """The median angle (degrees) of the 2D torso of (T, 17, 2) px against the image's up."""
    v = (px[:, 11] + px[:, 14]) / 2 - (px[:, 1] + px[:, 4]) / 2
    a = np.arctan2(v[:, 0], -v[:, 1])
    return float(np.degrees(np.arctan2(np.median(np.sin(a)), np.median(np.cos(a)))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=Path.home() / ".cache/posert/val_motion.npz")
    args = ap.parse_args()
    with np.load(args.motion) as z:
        seqs = {k: center_on_floor(z[k]) for k in z.files}
    print("| cameras | " + " | ".join(f"{n}: median / max error (°)" for n in seqs) + " |")
    print("|---|" + "---|" * len(seqs))
    for kind in ("h36m", *CLASSES):
        cells = []
        for world in seqs.values():
            err = [abs(torso_roll_deg(render(world, cam)[0]) - true_roll_deg(cam.R)) for cam in eval_cameras(kind)]
            err = [min(e, 360 - e) for e in err]
            cells.append(f"{np.median(err):.1f} / {np.max(err):.1f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
