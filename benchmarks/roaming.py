"""The roaming stress protocol (posert/roaming.py) on the validation motion of `posert data`
through the four real Human3.6M cameras, with the rendered 2D and with detector-like noise.

    python benchmarks/roaming.py [--motion F.npz] [--cameras h36m|ring] [--json out/roaming.json]

Prints per protocol: frames, non-finite and impossible poses (refined must be 0), frames out of
view (coasting), restarts, MPJPE on frames in full view, and the recovery time after blackouts
and after the person was out of a camera's view (p50 and max, s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from report import stamp, write_json

from posert.config import PipelineConfig
from posert.data.dataset import NoiseModel
from posert.data.sources import cache_dir
from posert.evaluate import eval_cameras, load_motion
from posert.roaming import roaming_protocol


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", type=Path, default=cache_dir() / "val_motion.npz")
    ap.add_argument("--cameras", default="h36m", choices=("h36m", "ring"))
    ap.add_argument("--backend", default="native")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seqs = load_motion(args.motion)
    cams = eval_cameras(args.cameras)
    cfg = PipelineConfig().override({"backend.name": args.backend})
    report = {**stamp(), "motion": {k: len(v) for k, v in seqs.items()}, "cameras": args.cameras,
              "backend": args.backend}
    ok = True
    for name, noise in (("rendered", None), ("detector", NoiseModel())):
        rep = roaming_protocol(seqs, cams, cfg, noise=noise, progress=True)
        report[name] = rep
        ok &= rep["refined_nonfinite"] == 0 and rep["refined_impossible"] == 0
        print(f"{name}: frames {rep['frames']}, non-finite {rep['refined_nonfinite']}, impossible "
              f"{rep['refined_impossible']} (lifter alone: {rep['lifter_impossible']}), out of view "
              f"{rep['out_frames']} frames ({rep['out_of_view']:.0%} of joints), restarts {rep['restarts']}, "
              f"health {rep['health']}, MPJPE in view {rep['mpjpe_in_view']:.1f} mm")
        for kind in ("blackout", "view"):
            r = rep[kind]
            print(f"  recovery after {kind}: {r['returns']} returns, p50 {r['recovery_p50_s']:.2f} s, "
                  f"max {r['recovery_max_s']:.2f} s")
    write_json(args.json, report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
