"""How far apart are refiners of one recipe that differ only in their seed?

Trains the committed refiner recipe (`posert train refiner --steps 1187 --fold-steps 2640
--holdout omomo --class-cameras 0.4`, or another ``--fold-steps``) with other seeds, on the
same cross-fitted fold lifters (the seed-0 ones: they are cached, and it is the denoiser's
training and the CND's windows whose spread is measured), into
experiments/out/refiner_seeds/seed<N>[_f<fold steps>]/, then runs `posert eval` with the
recipe's lifter on the H36M-camera protocols of the validation motion and of OMOMO (held out).
Prints refined MPJPE per protocol and seed, the seed-0 refiner first.

    python experiments/refiner_seeds.py --omomo omomo_motion.npz [--seeds 1 2]
    python experiments/refiner_seeds.py --omomo omomo_motion.npz --fold-steps 5280 \
        --lifter L5280.pt --seed0 R5280.pt --seeds 1      # another recipe: its lifter and seed-0 refiner
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import posert.train.loops as loops
from posert.cli import main as posert
from posert.data.sources import cache_dir

OUT = Path(__file__).parent / "out" / "refiner_seeds"
RECIPE = ["--steps", "1187", "--holdout", "omomo", "--class-cameras", "0.4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--omomo", type=Path, required=True, help="OMOMO's motion (.npz), held out of the recipe")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--fold-steps", type=int, default=2640, help="the recipe's fold lifters (and lifter) steps")
    ap.add_argument("--lifter", default=None, help="the lifter the refiners run with (default: committed)")
    ap.add_argument("--seed0", default=None, help="the recipe's seed-0 refiner (default: committed)")
    args = ap.parse_args()
    tag = "" if args.fold_steps == 2640 else f"_f{args.fold_steps}"
    fold_lifters = loops.train_fold_lifters

    def seed0_folds(sequences, cameras, cfg, k, lifter_cfg, cache=None, fold_by="time"):
        return fold_lifters(sequences, cameras, replace(cfg, seed=0), k, lifter_cfg, cache, fold_by)

    loops.train_fold_lifters = seed0_folds  # the committed fold lifters (cached), whatever the seed
    refiners = {0: args.seed0}
    for seed in args.seeds:
        out = OUT / f"seed{seed}{tag}"
        if not (out / "refiner.pt").exists():
            posert(["train", "refiner", *RECIPE, "--fold-steps", str(args.fold_steps), "--seed", str(seed),
                    "--out", str(out)])
        refiners[seed] = out / "refiner.pt"
    for split, motion in (("validation", args.motion), ("OMOMO", args.omomo)):
        for noise in ("none", "detector", "occlusion"):
            row = []
            for seed, ref in refiners.items():
                rep = OUT / f"eval_{split}_{noise}_{seed}{tag}.json"
                posert(["eval", "--motion", str(motion), "--noise", noise, "--json", str(rep),
                        *([] if ref is None else ["--refiner", str(ref)]),
                        *([] if args.lifter is None else ["--lifter", str(args.lifter)])])
                row.append(json.loads(rep.read_text())["overall"]["refined"]["mpjpe"])
            print(f"{split:10s} {noise:9s} " + "  ".join(f"seed {s}: {m:5.1f}" for s, m in zip(refiners, row)))


if __name__ == "__main__":
    main()
