"""Would holding a missing joint's last seen bone beat the models' guess of it?

Streams a motion through a camera set (the committed models, ``posert eval``'s protocol) and, on
the refined output afterwards, replaces each joint the frame does not show (confidence 0: out of
view or occluded) by its parent's position plus the joint's last seen bone vector (camera frame;
parents first, so a missing chain hangs from its first seen joint). Prints, per camera set, the
error of the missing joints, MPJPE and acceleration error with the output as it is and with the
hold. A post-process on the output only: the models and their caches do not see it.

    python experiments/bone_hold.py [--motion val_motion.npz] [--cameras h36m pitched level phone]
                                    [--noise none|occlusion]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posert.config import PipelineConfig
from posert.data.dataset import OcclusionModel
from posert.data.sources import cache_dir
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.metrics import accel_error
from posert.runtime import Pipeline
from posert.skeleton import BONES


def hold(ref: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(T, 17, 3) refined output and (T, 17) bool missing → the output with missing joints held."""
    out = ref.astype(np.float64).copy()
    bone = np.full((17, 3), np.nan)
    for t in range(len(ref)):
        for p, j in BONES:  # parents before children
            if missing[t, j]:
                if np.isfinite(bone[j]).all():
                    out[t, j] = out[t, p] + bone[j]
            else:
                bone[j] = ref[t, j] - ref[t, p]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--cameras", nargs="+", default=["h36m", "pitched", "level", "phone"])
    ap.add_argument("--noise", choices=["none", "occlusion"], default="none")
    args = ap.parse_args()
    seqs = load_motion(args.motion)
    noise = OcclusionModel() if args.noise == "occlusion" else None
    for kind in args.cameras:
        cams = eval_cameras(kind)
        with Pipeline(PipelineConfig().override({"max_streams": len(seqs) * len(cams)})) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
        err = {"as is": [], "hold": []}
        miss_err = {"as is": [], "hold": []}
        acc = {"as is": [], "hold": []}
        for r in res.values():
            for c in range(r["refined"].shape[0]):
                ref, gt, missing = r["refined"][c], r["gt"][c], r["conf"][c] == 0
                for name, out in (("as is", ref.astype(np.float64)), ("hold", hold(ref, missing))):
                    e = np.linalg.norm(out - gt, axis=-1)
                    err[name].append(e.reshape(-1))
                    miss_err[name].append(e[missing])
                    acc[name].append(accel_error(out, gt))
        cells = []
        for name in ("as is", "hold"):
            cells.append(f"{name}: missing joints {np.concatenate(miss_err[name]).mean():.0f} mm, MPJPE "
                         f"{np.concatenate(err[name]).mean():.1f}, accel {np.mean(acc[name]):.2f}")
        print(f"{kind} ({args.noise}): " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
