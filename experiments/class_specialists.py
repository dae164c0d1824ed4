"""Is the pitched cameras' gap the view or the training? A lifter per camera class.

Trains the committed lifter recipe (``posert train lifter --steps 1320 --holdout omomo``) with
half of its windows through one camera class's cameras (``posert.rigs``; the committed recipe
gives each class 4 % of its windows, half of them as the level view at its place) and the other
half through the H36M cameras, as always. Evaluate each with ``posert eval --lifter
OUT/CLASS/lifter.pt --cameras CLASS``: if a lifter that sees pitched cameras in half of its
windows is still much worse on them than a level-camera lifter on level cameras, the gap is what
a single pitched view leaves ambiguous, not the share of training it gets.

    python experiments/class_specialists.py --out DIR [--classes level pitched] [--steps 1320]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import posert.data.dataset as dataset
from posert.data.build import training_sequences
from posert.evaluate import TRAIN_SUBJECTS, h36m_cameras
from posert.models.io import save_lifter
from posert.models.lifter import LifterConfig
from posert.rigs import sample_camera
from posert.train.loops import TrainConfig, train_lifter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--classes", nargs="+", default=["level", "pitched"])
    ap.add_argument("--steps", type=int, default=1320)
    args = ap.parse_args()
    seqs, cams = training_sequences("omomo"), h36m_cameras(TRAIN_SUBJECTS)
    for cls in args.classes:
        dataset.class_camera = lambda rng, target, cls=cls: sample_camera(rng, target, cls)
        cfg = TrainConfig(steps=args.steps, p_class_camera=0.5)
        model, stats = train_lifter(seqs, cams, cfg, LifterConfig())
        (args.out / cls).mkdir(parents=True, exist_ok=True)
        save_lifter(model, args.out / cls / "lifter.pt", {"train": stats, "holdout": "omomo", "only_class": cls})
        print(cls, json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
