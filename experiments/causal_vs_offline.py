"""Causal vs offline lifter of the same size (issue 3): the causal lifter a robot streams against
a non-causal one that also sees the 13 frames after the reported frame (a 13-frame delay when
streamed), trained by ``posert train lifter --offline`` with the same data, budget and width.

Both are scored on the validation motion through the four real H36M cameras, with ground-truth
2D and with the detector-noise model (the same 2D as ``posert eval`` draws: same seed and order).
The whole sequence goes through the torch ``forward`` in chunks with enough context on both sides
that every frame sees exactly what a whole-sequence pass gives it; for the causal lifter that
equals streaming (tests/test_runtime.py). Prints a Markdown table for RESULTS.md.

    .venv/bin/python experiments/causal_vs_offline.py [--minutes 14] [--causal checkpoints/lifter.pt]
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
from posert.evaluate import _scores, eval_cameras, load_motion
from posert.models.io import default_checkpoint_dir, load_lifter
from posert.skeleton import ROOT


@torch.no_grad()
def lift_sequence(lifter, inp: np.ndarray, chunk: int = 300) -> np.ndarray:
    """(T, 17, 3) model input → (T, 17, 3) root-relative mm from ``lifter.forward`` over the whole
    sequence, computed in chunks: each chunk gets ``depth · M`` frames of context on both sides,
    the reach of the stacked span-M temporal layers, so the result equals one whole-sequence pass."""
    reach = lifter.cfg.depth * lifter.max_lag
    T, out = len(inp), []
    x = torch.from_numpy(inp.astype(np.float32))
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        a, b = max(0, s - reach), min(T, e + reach)
        out.append(lifter(x[None, a:b])[0, s - a:e - a].numpy())
    return np.concatenate(out) * 1000.0


def score_lifter(lifter, sequences: dict, cameras: list, noise, seed: int = 0) -> dict:
    """Frame-weighted MPJPE / P-MPJPE / accel over sequences, 2D drawn as ``stream_sequences`` draws it."""
    rng = np.random.default_rng(seed)
    per = {}
    for name, seq in sequences.items():
        world = center_on_floor(seq)
        pred, gt = [], []
        for cam in cameras:
            px, cam3d = render(world, cam)
            conf = np.ones(px.shape[:2], np.float32)
            if noise is not None:
                px, conf = noise(px, rng)
            pred.append(lift_sequence(lifter, make_input(px, conf, cam.width, cam.height)))
            gt.append(cam3d - cam3d[:, ROOT:ROOT + 1])
        per[name] = (_scores(np.stack(pred), np.stack(gt).astype(np.float32)), len(seq))
    w = np.array([n for _, n in per.values()], np.float64)
    overall = {m: float(np.average([s[m] for s, _ in per.values()], weights=w)) for m in ("mpjpe", "p_mpjpe", "accel")}
    return {"overall": overall, "sequences": {k: s for k, (s, _) in per.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=14.0, help="offline lifter budget (the default lifter had 14)")
    ap.add_argument("--causal", default=str(default_checkpoint_dir() / "lifter.pt"))
    ap.add_argument("--offline", default="experiments/out/offline/lifter.pt")
    args = ap.parse_args()
    val = load_motion(build_dataset().parent / VAL_MOTION_NAME)
    off_path = Path(args.offline)
    if not off_path.exists():
        posert(["train", "lifter", "--offline", "--minutes", str(args.minutes), "--out", str(off_path.parent)])
    torch.set_num_threads(2)
    causal, offline = load_lifter(args.causal), load_lifter(off_path)
    assert causal.causal and not offline.causal and causal.cfg.dim == offline.cfg.dim
    cams = eval_cameras("h36m")
    rows = []
    for proto, noise in (("ground-truth 2D", None), ("detector noise", NoiseModel())):
        c, o = score_lifter(causal, val, cams, noise), score_lifter(offline, val, cams, noise)
        rows.append((proto, c, o))
    out = off_path.parent / "causal_vs_offline.json"
    out.write_text(json.dumps({p: {"causal": c, "offline": o} for p, c, o in rows}, indent=2))
    print(f"\n{datetime.date.today()} — {platform.node()}: causal {args.causal} vs offline {off_path} "
          f"(N = {causal.window}, C = {causal.cfg.dim}, L = {causal.cfg.depth}); validation motion, 4 H36M cameras\n")
    print("| 2D | causal MPJPE | offline MPJPE | causal / offline | causal P-MPJPE | offline P-MPJPE "
          "| causal accel | offline accel | per sequence, causal / offline MPJPE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for proto, c, o in rows:
        seqs = "; ".join(f"{k} {c['sequences'][k]['mpjpe']:.1f} / {o['sequences'][k]['mpjpe']:.1f}"
                         for k in c["sequences"])
        co, oo = c["overall"], o["overall"]
        print(f"| {proto} | {co['mpjpe']:.1f} | {oo['mpjpe']:.1f} | {co['mpjpe'] / oo['mpjpe']:.3f} | "
              f"{co['p_mpjpe']:.1f} | {oo['p_mpjpe']:.1f} | {co['accel']:.2f} | {oo['accel']:.2f} | {seqs} |")


if __name__ == "__main__":
    main()
