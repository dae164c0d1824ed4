"""Leave-one-source-out evaluation (issue 3): for every source of the dataset, train a lifter and
a refiner without it (``posert train … --holdout SOURCE``) and stream *all* of that source's
sequences through ``posert eval`` (ground-truth 2D and detector noise, 4 real H36M cameras).
Unlike the sequence-level validation split, the models never saw the performer, the capture
set-up or the kind of motion. Prints a Markdown table for RESULTS.md; checkpoints and JSON go
to experiments/out/loso/<source>/ (reused when present).

    .venv/bin/python experiments/loso.py [--minutes 4] [--sources CMU01 climb mocapbank]

``--minutes`` is the budget of each of the four trainings per source (lifter, two fold lifters,
denoiser); the default checkpoints got 14–15 min each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np

from posert.cli import main as posert
from posert.data.build import build_dataset
from posert.data.dataset import load_positions

ROOT = Path("experiments/out/loso")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--sources", nargs="+", default=None, help="default: every source in the dataset")
    ap.add_argument("--protocols", nargs="+", default=["none", "detector"], choices=["none", "detector", "occlusion"])
    args = ap.parse_args()
    positions = load_positions(build_dataset())
    sources = args.sources or sorted(positions)
    rows = []
    for src in sources:
        if src not in positions:
            raise SystemExit(f"unknown source {src!r}; have {sorted(positions)}")
        out = ROOT / src
        out.mkdir(parents=True, exist_ok=True)
        motion = out / "motion.npz"
        np.savez_compressed(motion, **{f"{src}_{a}": s for a, s in positions[src].items()})
        m = str(args.minutes)
        if not (out / "lifter.pt").exists():
            posert(["train", "lifter", "--holdout", src, "--minutes", m, "--out", str(out)])
        if not (out / "refiner.pt").exists():
            posert(["train", "refiner", "--holdout", src, "--minutes", m, "--fold-minutes", m, "--out", str(out)])
        frames = sum(len(s) for s in positions[src].values())
        for proto in args.protocols:
            js = out / f"eval_{proto}.json"
            if not js.exists():
                posert(["eval", "--motion", str(motion), "--json", str(js), "--noise", proto,
                        "--lifter", str(out / "lifter.pt"), "--refiner", str(out / "refiner.pt")])
            rows.append((src, frames, proto, json.loads(js.read_text())["overall"]))
    print(f"\n{datetime.date.today()} — {platform.node()}: leave-one-source-out, {args.minutes} min per training "
          f"(lifter, 2 fold lifters, denoiser); all sequences of the held-out source, 4 H36M cameras, causal ORT\n")
    print("| held-out source | frames | 2D | lifter MPJPE | refined MPJPE | ratio | lifter P-MPJPE | refined P-MPJPE "
          "| lifter accel | refined accel |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for src, frames, proto, o in rows:
        lf, rf = o["lifter"], o["refined"]
        print(f"| {src} | {frames} | {proto} | {lf['mpjpe']:.1f} | {rf['mpjpe']:.1f} | "
              f"{rf['mpjpe'] / lf['mpjpe']:.3f} | {lf['p_mpjpe']:.1f} | {rf['p_mpjpe']:.1f} | "
              f"{lf['accel']:.2f} | {rf['accel']:.2f} |")


if __name__ == "__main__":
    main()
