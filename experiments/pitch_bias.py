"""Is the pitched cameras' error a wrong orientation or a wrong shape?

For each camera of ``posert eval --cameras level|pitched`` and each validation sequence: the
camera's pitch (its forward axis against the horizon, + up), the one rotation that best aligns
the refined output to the truth (:func:`posert.metrics.alignment_rotation`), as a rotation vector
in the camera's axes (x right, y down, z forward; degrees), and the MPJPE before and after it.
A lifter that answers as if every camera were level needs a rotation about x equal to minus the
camera's pitch.

    python experiments/pitch_bias.py [--motion val_motion.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from posert.config import PipelineConfig
from posert.evaluate import eval_cameras, stream_sequences
from posert.metrics import alignment_rotation
from posert.runtime import Pipeline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=Path.home() / ".cache/posert/val_motion.npz")
    args = ap.parse_args()
    with np.load(args.motion) as z:
        seqs = {k: z[k] for k in z.files}
    print("| cameras | sequence | camera | pitch | aligning rotation about x / y / z | MPJPE | after the rotation |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("level", "pitched"):
        cams = eval_cameras(kind)
        with Pipeline(PipelineConfig().override({"max_streams": len(seqs) * len(cams)})) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, None, seed=0, progress=False)
        for name, r in res.items():
            for ci, cam in enumerate(cams):
                p, g = r["refined"][ci], r["gt"][ci]
                ok = np.isfinite(p).all(axis=(1, 2))
                R, _ = alignment_rotation(p[ok], g[ok])
                fwd = np.asarray(cam.R)[2]
                pitch = np.degrees(np.arctan2(fwd[2], np.hypot(fwd[0], fwd[1])))
                rv = Rotation.from_matrix(R).as_rotvec(degrees=True)
                before = np.linalg.norm(p[ok] - g[ok], axis=-1).mean()
                after = np.linalg.norm(p[ok] @ R.T - g[ok], axis=-1).mean()
                print(f"| {kind} | {name} | {ci} | {pitch:+.1f}° | {rv[0]:+.1f} / {rv[1]:+.1f} / {rv[2]:+.1f}° | "
                      f"{before:.1f} | {after:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
