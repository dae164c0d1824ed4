"""Where the refiner's correction comes from: the CND's conditional mean (a linear map) and the
denoiser, alone and together (issues 2 and 3).

The CND (``posert.models.diffusion.CND``) is a Gaussian of the lifter error e given
b = [y, x_noisy], fitted on cross-fitted lifter errors. Its conditional mean
μ_a|b = μ_a + Σ_ab Σ_bb⁻¹ (b − μ_b) is a linear prediction of the lifter's error from the 2D and
the lifter's output: ``x_T − μ_a|b(y, x_T)`` is the best *linear* refiner the training folds
support. This script streams motion through the pipeline (``posert eval``'s protocol: 4 real
H36M cameras, causal, all streams batched) and scores, per 2D protocol,

- the lifter alone (x_T),
- the denoiser's K DDIM steps started from x_T (``RefinerConfig(cnd_mean=False)``),
- x_T − μ_a|b(y, x_T) with the refiner's own CND, no network (the pelvis stays at the origin),
- the DDIM steps started from x_T − μ_a|b (``cnd_mean=True``; the default for refiners trained
  with ``--noise cnd0``, whose denoiser learnt to remove N(0, Σ_a|b) errors only).

y is the lifter's input: normalised screen coordinates, 0 for joints with confidence 0, exactly
as ``posert._C.prepare_frames`` writes them.

    .venv/bin/python experiments/cnd_mean.py [--motion FILE.npz ...] [--lifter PATH] [--refiner PATH]

Without ``--motion`` it uses the validation motion. Prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from posert.camera import normalize_screen
from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel
from posert.evaluate import eval_cameras, load_motion, score, stream_sequences
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
    ort = BackendConfig(name="onnxruntime", lifter=args.lifter, refiner=args.refiner)
    motions = args.motion or [build_dataset().parent / VAL_MOTION_NAME]
    cams = eval_cameras("h36m")
    _, cnd = load_refiner(args.refiner)
    rows = []
    for path in motions:
        seqs = load_motion(path)
        for proto, noise in (("ground-truth", None), ("detector", NoiseModel())):
            res = {}
            for shift in (False, True):
                cfg = PipelineConfig(len(seqs) * len(cams), ort,
                                     RefinerConfig(cnd_mean=shift), CorrectionConfig(mode="off"))
                with Pipeline(cfg) as pipe:
                    res[shift], _ = stream_sequences(pipe, seqs, cams, noise, seed=0, progress=False)
            reps = [score(res[False]), score(linear_refined(res[False], cams, cnd)), score(res[True])]
            rows.append((path.name, proto, reps, list(seqs)))
    print(f"\n{datetime.date.today()} — {platform.node()}: CND kind {cnd.kind}, refiner {args.refiner or 'committed'} "
          f"(trained with subtract_mean={cnd.subtract_mean}); 4 H36M cameras, ORT CPU; MPJPE (P-MPJPE) in mm\n")
    print("| motion | 2D | lifter | DDIM from x_T | x_T − μ_a\\|b, no network | DDIM from x_T − μ_a\\|b "
          "| ratios to the lifter |")
    print("|---|---|---|---|---|---|---|")

    def cells(parts):
        lf = parts[0]["lifter"]
        out = [f"{lf['mpjpe']:.1f} ({lf['p_mpjpe']:.1f})"]
        out += [f"{p['refined']['mpjpe']:.1f} ({p['refined']['p_mpjpe']:.1f})" for p in parts]
        out.append(" / ".join(f"{p['refined']['mpjpe'] / lf['mpjpe']:.3f}" for p in parts))
        return " | ".join(out)

    for name, proto, reps, seqs in rows:
        print(f"| {name} | {proto} | {cells([r['overall'] for r in reps])} |")
        for seq in seqs:
            print(f"| ↳ {seq} | {proto} | {cells([r['sequences'][seq] for r in reps])} |")


if __name__ == "__main__":
    main()
