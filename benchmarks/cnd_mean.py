"""What the CND's conditional mean does on its own: the refiner's systematic correction, without
the network (issue 3: where the refiner's gains and losses come from).

The CND (``posert.models.diffusion.CND``) is a Gaussian of the lifter error e given
b = [y, x_noisy], fitted on cross-fitted lifter errors. Its conditional mean
μ_a|b = μ_a + Σ_ab Σ_bb⁻¹ (b − μ_b) is a linear prediction of the lifter's error from the 2D and
the lifter's output. ``x_T − μ_a|b(y, x_T)`` is therefore the best *linear* refiner the training
folds support. This script streams motion through the committed pipeline (``posert eval``'s
protocol: 4 real H36M cameras, causal, all streams batched) and scores, per 2D protocol,

- the lifter alone (x_T),
- the diffusion refiner (K DDIM steps of the denoiser, started from x_T),
- x_T − μ_a|b(y, x_T) with the refiner's own CND (the pelvis stays at the origin).

y is the lifter's input: normalised screen coordinates, 0 for joints with confidence 0, exactly
as ``posert._C.prepare_frames`` writes them.

    .venv/bin/python benchmarks/cnd_mean.py [--motion FILE.npz ...] [--refiner PATH]

Without ``--motion`` it uses the validation motion. Prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from posert.camera import normalize_screen
from posert.cli import _eval_cameras
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel
from posert.evaluate import load_motion, score, stream_sequences
from posert.models.io import load_refiner
from posert.runtime import Pipeline
from posert.skeleton import ROOT


def linear_refined(results: dict, cameras: list, cnd) -> dict:
    """Replace ``refined`` in :func:`~posert.evaluate.stream_sequences` output by
    x_T − μ_a|b(y, x_T) (mm, camera frame, root-relative); returns a new results dict."""
    out = {}
    for name, r in results.items():
        lin = []
        for c, cam in enumerate(cameras):
            y = normalize_screen(r["px"][c], cam.width, cam.height).astype(np.float64)
            y[r["conf"][c] == 0] = 0.0
            x = r["lifted"][c].astype(np.float64) / 1000.0  # the CND works in metres
            mu = cnd.conditional_mean(y, x)
            mu[:, ROOT] = 0.0
            lin.append(((x - mu) * 1000.0).astype(np.float32))
        out[name] = {**r, "refined": np.stack(lin)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--motion", nargs="+", type=Path, default=None)
    ap.add_argument("--lifter", default=None)
    ap.add_argument("--refiner", default=None)
    args = ap.parse_args()
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = _eval_cameras("h36m")
    _, cnd = load_refiner(args.refiner)
    rows = []
    for path in motions:
        seqs = load_motion(path)
        for proto, noise in (("ground-truth", None), ("detector", NoiseModel())):
            pipe = Pipeline("onnxruntime", max_streams=len(seqs) * len(cams), lifter=args.lifter,
                            refiner=args.refiner)
            res, _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
            pipe.close()
            diff, lin = score(res), score(linear_refined(res, cams, cnd))
            rows.append((path.name, proto, diff["overall"], lin["overall"]["refined"],
                         {n: (diff["sequences"][n], lin["sequences"][n]["refined"]) for n in seqs}))
    print(f"\n{datetime.date.today()} — {platform.node()}: CND kind {cnd.kind}, "
          f"refiner {args.refiner or 'committed'}; 4 H36M cameras, ORT CPU\n")
    print("| motion | 2D | lifter MPJPE | refiner (denoiser) | ratio | x_T − μ_a\\|b (no network) | ratio "
          "| lifter P-MPJPE | refiner | x_T − μ_a\\|b |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, proto, o, lin, per in rows:
        lf, rf = o["lifter"], o["refined"]
        print(f"| {name} | {proto} | {lf['mpjpe']:.1f} | {rf['mpjpe']:.1f} | {rf['mpjpe'] / lf['mpjpe']:.3f} | "
              f"{lin['mpjpe']:.1f} | {lin['mpjpe'] / lf['mpjpe']:.3f} | {lf['p_mpjpe']:.1f} | {rf['p_mpjpe']:.1f} | "
              f"{lin['p_mpjpe']:.1f} |")
        for seq, (d, ln) in per.items():
            print(f"| ↳ {seq} | {proto} | {d['lifter']['mpjpe']:.1f} | {d['refined']['mpjpe']:.1f} | "
                  f"{d['refined']['mpjpe'] / d['lifter']['mpjpe']:.3f} | {ln['mpjpe']:.1f} | "
                  f"{ln['mpjpe'] / d['lifter']['mpjpe']:.3f} | {d['lifter']['p_mpjpe']:.1f} | "
                  f"{d['refined']['p_mpjpe']:.1f} | {ln['p_mpjpe']:.1f} |")


if __name__ == "__main__":
    main()
