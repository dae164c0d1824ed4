"""What does each stage after the lifter add, per sequence, and how much of the error is the
person's size?

Streams a motion file through the four H36M cameras (ground-truth 2D, guessed intrinsics) three
times with one lifter / refiner pair:
- ``full``: the default pipeline (lifter → refiner → correction → guard → bone hold);
- ``no refiner``: the refiner made the identity (its denoiser's head zeroed, so ê = 0 and the K
  DDIM steps return x_T, and no CND mean subtracted), the rest as in ``full``;
- ``no correction``: the refiner's output as it is (``correction.mode = "off"``).
For each sequence and each of the three it prints MPJPE, the ratio of the output's mean bone
length to the truth's (the size the pose was given) and N-MPJPE (MPJPE after one least-squares
scale per stream: the shape without the size).

    python experiments/stage_shares.py --motion omomo_motion.npz [--lifter L.pt --refiner R.pt]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from posert.config import PipelineConfig
from posert.data.sources import cache_dir
from posert.evaluate import eval_cameras, load_motion, stream_sequences
from posert.models.io import load_refiner, save_refiner
from posert.runtime import Pipeline
from posert.skeleton import bone_lengths


def identity_refiner(src: str | None, dst: Path) -> None:
    """Write a refiner checkpoint whose K DDIM steps return x_T: the denoiser's head zeroed
    (ê = 0; with ᾱ_T ≈ 0, x̂_0 = x_T and every later step keeps it) and no CND mean."""
    den, cnd = load_refiner(src)
    with torch.no_grad():
        den.head.weight.zero_()
        den.head.bias.zero_()
    cnd.subtract_mean, cnd.mean_ema = False, 1.0
    save_refiner(den, cnd, dst, {"identity": True})


def scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """pred, gt (C, T, 17, 3) mm → (MPJPE, size ratio, N-MPJPE with one scale per stream)."""
    s = (pred * gt).sum(axis=(1, 2, 3), keepdims=True) / (pred * pred).sum(axis=(1, 2, 3), keepdims=True)
    size = bone_lengths(pred).mean() / bone_lengths(gt).mean()
    return (float(np.linalg.norm(pred - gt, axis=-1).mean()), float(size),
            float(np.linalg.norm(s * pred - gt, axis=-1).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    args = ap.parse_args()
    seqs, cams = load_motion(args.motion), eval_cameras("h36m")
    with tempfile.TemporaryDirectory() as tmp:
        ident = Path(tmp) / "identity.pt"
        identity_refiner(args.refiner, ident)
        runs = {"full": {}, "no refiner": {"backend.refiner": str(ident)}, "no correction": {"correction.mode": "off"}}
        out = {}
        for name, values in runs.items():
            cfg = PipelineConfig().override({"max_streams": len(seqs) * len(cams), "backend.lifter": args.lifter,
                                             "backend.refiner": args.refiner, **values})
            with Pipeline(cfg) as pipe:
                out[name], _ = stream_sequences(pipe, seqs, cams, progress=False)
    for seq in seqs:
        r = out["full"][seq]
        m, size, n = scores(r["lifted"], r["gt"])
        print(f"{seq} ({r['gt'].shape[1]} frames): lifter {m:.1f} mm, size {size:.3f}, N-MPJPE {n:.1f}")
        for name in runs:
            m, size, n = scores(out[name][seq]["refined"], r["gt"])
            print(f"  {name:14s} {m:6.1f} mm, size {size:.3f}, N-MPJPE {n:6.1f}")


if __name__ == "__main__":
    main()
