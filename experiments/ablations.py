"""Refiner ablations on the validation motion: D3PRefiner (CND noise) vs the same network trained
on the raw lifter error vs a one-step regressor without diffusion vs D3PRefiner on windows with
turned limbs (``cnd+aug``: ``--pose-aug 0.5``) vs a CND over the whole pose (``cnd-pose``:
``--cnd pose``, errors correlated across joints; ``cnd-pose4k``: fitted on 4,096 windows;
``cnd0-pose4k``: the same without its conditional mean, ``--noise cnd0``), all
with the same default lifter, the same cross-fitted fold lifters (cached) and the same
training budget. Each variant is trained by ``posert train refiner`` into
experiments/out/ablations/<variant>/ and evaluated with ``posert eval`` (ground-truth 2D and
detector noise). Prints a Markdown table for RESULTS.md.

    .venv/bin/python experiments/ablations.py [--minutes 15] [--fold-minutes 14] [--variants cnd cnd+aug]

Every variant trains on the committed checkpoints' data: all sources but ``--holdout`` (OMOMO,
added after they were trained).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
from pathlib import Path

from posert.cli import main as posert
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.models.io import default_checkpoint_dir

# variant → (noise mode, CND kind, CND windows, share of pose-augmented windows, DDIM steps at evaluation)
VARIANTS = {"cnd": ("cnd", "joint", 1024, 0.0, 2), "cnd0": ("cnd0", "joint", 1024, 0.0, 2),
            "raw": ("raw", "joint", 1024, 0.0, 2), "regressor": ("regressor", "joint", 1024, 0.0, 1),
            "cnd+aug": ("cnd", "joint", 1024, 0.5, 2), "cnd-pose": ("cnd", "pose", 1024, 0.0, 2),
            "cnd-pose4k": ("cnd", "pose", 4096, 0.0, 2), "cnd0-pose4k": ("cnd0", "pose", 4096, 0.0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--fold-minutes", type=float, default=14.0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--holdout", default="omomo", help="source left out of training, as for the committed checkpoints")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    val = build_dataset().parent / VAL_MOTION_NAME
    root = Path("experiments/out/ablations")
    rows = []
    for variant in args.variants:
        noise, kind, windows, aug, steps = VARIANTS[variant]
        ck = root / (variant if args.seed == 0 else f"{variant}_seed{args.seed}")
        if not (ck / "refiner.pt").exists():
            ck.mkdir(parents=True, exist_ok=True)
            shutil.copy(default_checkpoint_dir() / "lifter.pt", ck / "lifter.pt")
            posert(["train", "refiner", "--noise", noise, "--cnd", kind, "--cnd-windows", str(windows),
                    "--pose-aug", str(aug), "--minutes", str(args.minutes),
                    "--fold-minutes", str(args.fold_minutes), "--holdout", args.holdout,
                    "--seed", str(args.seed), "--out", str(ck)])
        for proto in ("none", "detector"):
            out = ck / f"eval_{proto}.json"
            if not out.exists():
                posert(["eval", "--motion", str(val), "--json", str(out), "--noise", proto,
                        "--lifter", str(ck / "lifter.pt"), "--refiner", str(ck / "refiner.pt"),
                        "--steps", str(steps)])
            rows.append((variant, proto, json.loads(out.read_text())["overall"]))
    print(f"\n{datetime.date.today()} — {platform.node()}: refiner {args.minutes} min, fold lifters "
          f"{args.fold_minutes} min each (2-fold), same default lifter, seed {args.seed}; validation motion, "
          "4 H36M cameras\n")
    print("| refiner | 2D | lifter MPJPE | refined MPJPE | ratio | refined P-MPJPE | lifter accel | refined accel |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, proto, o in rows:
        lf, rf = o["lifter"], o["refined"]
        print(f"| {variant} | {proto} | {lf['mpjpe']:.1f} | {rf['mpjpe']:.1f} | {rf['mpjpe'] / lf['mpjpe']:.3f} | "
              f"{rf['p_mpjpe']:.1f} | {lf['accel']:.2f} | {rf['accel']:.2f} |")


if __name__ == "__main__":
    main()
