"""Where are the frames that cut the person off wrong: the joints the camera sees, or the ones it
does not?

Streams the validation motion through each camera class (``posert eval --cameras CLASS``,
ground-truth 2D, the committed models) and splits the refined error of the frames with a missing
joint into the joints in view and the joints out of view, by how many joints are missing, and by
whether the pelvis (the root the pose is relative to) is among them.

    python experiments/partial_views.py [--motion val_motion.npz] [--classes level pitched ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from posert.config import PipelineConfig
from posert.data.sources import cache_dir
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.runtime import Pipeline
from posert.skeleton import ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--classes", nargs="+", default=["level", "pitched", "phone"])
    args = ap.parse_args()
    seqs = load_motion(args.motion)
    for kind in args.classes:
        cams = eval_cameras(kind)
        with Pipeline(PipelineConfig().override({"max_streams": len(seqs) * len(cams)})) as pipe:
            res, _ = stream_sequences(pipe, seqs, cams, None, seed=0, progress=False)
        err = np.concatenate([np.linalg.norm(r["refined"] - r["gt"], axis=-1).reshape(-1, 17) for r in res.values()])
        lerr = np.concatenate([np.linalg.norm(r["lifted"] - r["gt"], axis=-1).reshape(-1, 17) for r in res.values()])
        miss = np.concatenate([r["out_of_view"].reshape(-1, 17) for r in res.values()])
        part = miss.any(-1)
        n = miss.sum(-1)
        print(f"{kind}: frames showing every joint {100 * (1 - part.mean()):.0f} %, refined {err[~part].mean():.1f} mm "
              f"(lifter {lerr[~part].mean():.1f}); frames with a missing joint {err[part].mean():.1f} mm "
              f"(lifter {lerr[part].mean():.1f}): joints in view {err[part][~miss[part]].mean():.1f}, out of view "
              f"{err[part][miss[part]].mean():.1f}")
        for lo, hi in ((1, 2), (3, 5), (6, 10), (11, 17)):
            m = part & (n >= lo) & (n <= hi)
            if m.any():
                print(f"  {lo:2d}–{hi:2d} joints missing: {100 * m.mean():4.1f} % of frames, in view "
                      f"{err[m][~miss[m]].mean() if (~miss[m]).any() else float('nan'):6.1f} mm, out of view "
                      f"{err[m][miss[m]].mean():6.1f} mm")
        root = part & miss[:, ROOT]
        at = err[root].mean() if root.any() else float("nan")
        print(f"  pelvis out of view: {100 * root.mean():.1f} % of frames, {at:.1f} mm")


if __name__ == "__main__":
    main()
