"""The two ways the ONNX Runtime CPU backend can run the attention of a step (issue 5), in one
process, alternating round by round so that both see the same machine state:

- ``graph``: one ONNX graph per step model, the attention cores inside it (what FP16, INT8 and
  TensorRT run);
- ``kernel``: the step split at its attention cores into 2L + 1 graphs of dense layers, the cores
  in C++ between them (``posert._C.spatial_attention`` / ``cached_attention``; the fp32 default).

Prints, as Markdown: per step model and batch, the median µs of one call on real-shaped inputs;
then the full pipeline on a real stream (1-stream tick p50 and 16-stream poses/s, the median of
the rounds and every round). Committed checkpoints; the ONNX files come from the export cache.

    .venv/bin/python experiments/attention_ab.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from posert.bench import pipeline_tick_ms, real_stream
from posert.evaluate import bench_sequence, eval_cameras
from posert.export.onnx import cached_onnx, cached_split_onnx, example_step_inputs
from posert.models.io import load_lifter, load_refiner
from posert.runtime import Pipeline
from posert.runtime.backends.onnxruntime import BoundStep, OrtBackend, SplitStep, create_session


def median_us(step, feeds: dict, reps: int = 200, warmup: int = 20) -> float:
    """Median µs of ``step.run(feeds)``."""
    for _ in range(warmup):
        step.run(feeds)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step.run(feeds)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", type=int, default=16)
    args = ap.parse_args()

    models = load_lifter().eval(), load_refiner()[0].eval()
    print("| step model | batch | graph µs | kernel µs | kernel / graph |\n|---|---|---|---|---|")
    for name, model, graph, split in zip(("lifter", "denoiser"), models, cached_onnx(), cached_split_onnx()):
        g, k = BoundStep(create_session(graph)), SplitStep(split)
        for B in (1, 8, 16):
            feeds = {n: v.numpy() for n, v in example_step_inputs(model, batch=B).items()}
            tg, tk = median_us(g, feeds), median_us(k, feeds)
            print(f"| {name} | {B} | {tg:.0f} | {tk:.0f} | {tk / tg:.2f} |")

    _, seq = bench_sequence(None)
    cam = eval_cameras("h36m")[0]
    px, _ = real_stream(seq, cam)
    pipes = {m: Pipeline(backend=OrtBackend.from_checkpoints(attention=m), max_streams=args.streams)
             for m in ("graph", "kernel")}
    res = {m: ([], []) for m in pipes}
    for _ in range(args.rounds):
        for m, p in pipes.items():
            res[m][0].append(float(np.percentile(pipeline_tick_ms(p, px, cam, 150, 1), 50)))
            res[m][1].append(float(args.streams * 1e3 / np.mean(pipeline_tick_ms(p, px, cam, 40, args.streams))))
    print(f"\n| attention | 1-stream p50 ms (median of {args.rounds} rounds) | rounds | {args.streams} streams poses/s "
          "(median) | rounds |\n|---|---|---|---|---|")
    for m, (one, many) in res.items():
        print(f"| {m} | {np.median(one):.2f} | {' '.join(f'{x:.2f}' for x in one)} | {np.median(many):,.0f} | "
              f"{' '.join(f'{x:.0f}' for x in many)} |")


if __name__ == "__main__":
    main()
