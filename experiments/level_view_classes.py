"""With the camera's orientation known, is the level view better than the upright view for the
checkpoints trained on level views?

The committed models were trained with half of their class cameras replaced by the level camera
at the same place (``posert.data.dataset.class_camera``): a person anywhere in a level camera's
frame. The runtime's upright view removes only the roll (``posert.camera.upright_rotation``); the
level view (``posert.camera.level_rotation``) removes the pitch too. Runs ``posert eval
--camera-aware`` on each camera class with the runtime's rectification as committed and with the
level view patched in, and prints refined MPJPE, P-MPJPE and the aligning rotation per class.

    python experiments/level_view_classes.py [--motion val_motion.npz] [--cameras h36m level pitched ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import posert.runtime.upright as upright
from posert.camera import level_rotation
from posert.config import PipelineConfig
from posert.data.sources import cache_dir
from posert.evaluate import eval_camera_sets, evaluate, load_motion
from posert.runtime import Pipeline


def run(seqs, kind: str) -> dict:
    cams = eval_camera_sets(kind)
    cfg = PipelineConfig().override({"max_streams": len(seqs) * max(len(c) for c in cams.values())})
    with Pipeline(cfg) as pipe:
        rep = evaluate(pipe, seqs, cams, None, seed=0, progress=False, camera_aware=True)
    return rep.get("classes") or {kind: rep["overall"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--cameras", nargs="+", default=["h36m", "all"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seqs = load_motion(args.motion)
    out = {}
    committed = upright.upright_rotation
    for view, rot in (("upright", committed), ("level", level_rotation)):
        upright.upright_rotation = rot
        for kind in args.cameras:
            for cls, r in run(seqs, kind).items():
                R = r["refined"]
                out[f"{view}/{cls}"] = {k: R[k] for k in ("mpjpe", "p_mpjpe", "accel", "rotation_deg")}
                print(f"{view:8s} {cls:9s} MPJPE {R['mpjpe']:6.1f}  P-MPJPE {R['p_mpjpe']:5.1f}  accel "
                      f"{R['accel']:5.2f}  rotation {R['rotation_deg']:4.1f}°", flush=True)
    upright.upright_rotation = committed
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
