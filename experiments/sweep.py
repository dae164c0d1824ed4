"""Accuracy sweep of the default checkpoints over 2D protocols and DDIM steps K, streamed through
the ONNX Runtime pipeline on the validation motion. Prints a Markdown table for RESULTS.md and
writes experiments/out/sweep.json.

    .venv/bin/python experiments/sweep.py [--steps 1 2 5] [--protocols none detector occlusion]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig
from posert.data.build import VAL_MOTION_NAME, build_dataset
from posert.data.dataset import NoiseModel, OcclusionModel
from posert.evaluate import EVAL_SUBJECT, evaluate, h36m_cameras, load_motion
from posert.runtime import Pipeline

PROTOCOLS = {"none": None, "detector": NoiseModel(), "occlusion": OcclusionModel()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5])
    ap.add_argument("--hypotheses", type=int, nargs="+", default=[1])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    args = ap.parse_args()
    seqs = load_motion(build_dataset().parent / VAL_MOTION_NAME)
    cams = h36m_cameras([EVAL_SUBJECT])
    rows = []
    for proto in args.protocols:
        for k in args.steps:
            for h in args.hypotheses:
                cfg = PipelineConfig(len(seqs) * len(cams), BackendConfig(name="onnxruntime"),
                                     RefinerConfig(steps=k, hypotheses=h), CorrectionConfig(mode="off"))
                with Pipeline(cfg) as pipe:
                    rep = evaluate(pipe, seqs, cams, PROTOCOLS[proto], seed=0, progress=False)
                rows.append({"protocol": proto, "K": k, "H": h, **rep["overall"]})
                print(f"done: {proto} K={k} H={h}", flush=True)
    out = Path("experiments/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{datetime.date.today()} — {platform.node()}, {platform.processor() or platform.machine()}, "
          f"validation: {', '.join(seqs)} × {len(cams)} H36M cameras (S9), causal streaming, ORT CPU\n")
    print("| 2D protocol | K | H | lifter MPJPE | refined MPJPE | ratio | lifter P-MPJPE | refined P-MPJPE "
          "| lifter accel | refined accel |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lf, rf = r["lifter"], r["refined"]
        ratio = rf["mpjpe"] / lf["mpjpe"]
        print(f"| {r['protocol']} | {r['K']} | {r['H']} | {lf['mpjpe']:.1f} | {rf['mpjpe']:.1f} | {ratio:.3f} "
              f"| {lf['p_mpjpe']:.1f} | {rf['p_mpjpe']:.1f} | {lf['accel']:.2f} | {rf['accel']:.2f} |")


if __name__ == "__main__":
    main()
