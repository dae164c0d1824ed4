"""Issue 3 ablation: a refiner conditioned on the 2D only (D3PRefiner) against the same refiner
conditioned on 2D + a lifter's per-joint features (taken from the cross-fitted fold lifters, or
from the final lifter the refiner runs with), same default lifter, same cross-fitted fold lifters
(cached), same training budget, same seed.

Each is trained by ``posert train refiner [--features fold|final]`` into experiments/out/features/<variant>/
and evaluated on the validation motion of ``posert data`` through the four real H36M cameras
(ground-truth 2D and detector noise), causally. The streaming runtime does not carry lifter
features yet, so the evaluation runs the causal torch models over each sequence in chunks with
enough left context (both receptive fields) that every frame sees exactly what streaming would
show it; the 2D-only row is checked against ``posert eval`` of the same checkpoint. Prints a
Markdown table for RESULTS.md.

    .venv/bin/python experiments/feature_conditioning.py [--minutes 15]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from posert.cli import main as posert
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, center_on_floor, make_input, render
from posert.evaluate import EVAL_SUBJECT, _scores, h36m_cameras, load_motion
from posert.models.denoiser import Refiner
from posert.models.io import default_checkpoint_dir, load_lifter, load_refiner
from posert.skeleton import ROOT

VARIANTS = {"2d": [], "2d+fold-features": ["--features", "fold"], "2d+final-features": ["--features", "final"]}


@torch.no_grad()
def causal_outputs(lifter, refiner: Refiner, inp: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """x_T and refined (T, 17, 3) metres of one causal stream ``inp`` (T, 17, 3), computed in
    chunks with (N_lifter − 1) + (N_denoiser − 1) frames of left context, as streaming does."""
    ctx = lifter.window - 1 + refiner.denoiser.window - 1
    feats = refiner.denoiser.feat is not None
    xs, rs = [], []
    for s in range(0, len(inp), chunk):
        lo, e = max(0, s - ctx), min(len(inp), s + chunk)
        x = torch.from_numpy(inp[None, lo:e])
        f = lifter.features(x)
        x_T = lifter.decode(f)
        r = refiner(x, x_T, f if feats else None)
        xs.append(x_T[0, s - lo:].numpy())
        rs.append(r[0, s - lo:].numpy())
    return np.concatenate(xs), np.concatenate(rs)


def evaluate(lifter, refiner: Refiner, seqs: dict, cams: list, noise) -> dict:
    rng = np.random.default_rng(0)
    out = {"lifter": [], "refined": [], "frames": []}
    for seq in seqs.values():
        world = center_on_floor(seq)
        L, R, G = [], [], []
        for cam in cams:
            px, cam3d = render(world, cam)
            conf = np.ones(px.shape[:2], np.float32)
            if noise is not None:
                px, conf = noise(px, rng)
            x_T, ref = causal_outputs(lifter, refiner, make_input(px, conf, cam.width, cam.height))
            L.append(x_T * 1000)
            R.append(ref * 1000)
            G.append((cam3d - cam3d[:, ROOT:ROOT + 1]).astype(np.float32))
        G = np.stack(G)
        out["lifter"].append(_scores(np.stack(L), G))
        out["refined"].append(_scores(np.stack(R), G))
        out["frames"].append(len(seq))
    w = np.array(out["frames"], np.float64)
    return {k: {m: float(np.average([s[m] for s in out[k]], weights=w)) for m in ("mpjpe", "p_mpjpe", "accel")}
            for k in ("lifter", "refined")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--fold-minutes", type=float, default=14.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    val = build_dataset().parent / VAL_MOTION_NAME
    seqs, cams = load_motion(val), h36m_cameras([EVAL_SUBJECT])
    root = Path("experiments/out/features")
    lifter = load_lifter(default_checkpoint_dir() / "lifter.pt")
    rows = []
    for variant, flags in VARIANTS.items():
        ck = root / variant
        if not (ck / "refiner.pt").exists():
            ck.mkdir(parents=True, exist_ok=True)
            posert(["train", "refiner", "--minutes", str(args.minutes), "--fold-minutes", str(args.fold_minutes),
                    "--out", str(ck), *flags])
        den, _ = load_refiner(ck / "refiner.pt")
        meta = torch.load(ck / "refiner.pt", map_location="cpu", weights_only=False)["meta"]["train"]
        refiner = Refiner(den).eval()
        for protocol, noise in (("ground-truth 2D", None), ("detector noise", NoiseModel())):
            r = evaluate(lifter, refiner, seqs, cams, noise)
            rows.append({"variant": variant, "protocol": protocol, "steps": meta["steps"], **r})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{args.minutes} min per refiner, same fold lifters\n")
    print("| conditioning | protocol | steps | lifter MPJPE | refined MPJPE | ratio | refined P-MPJPE | "
          "lifter / refined accel |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        li, re = r["lifter"], r["refined"]
        print(f"| {r['variant']} | {r['protocol']} | {r['steps']} | {li['mpjpe']:.1f} | {re['mpjpe']:.1f} | "
              f"{re['mpjpe'] / li['mpjpe']:.3f} | {re['p_mpjpe']:.1f} | {li['accel']:.2f} / {re['accel']:.2f} |")
    Path(root / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
