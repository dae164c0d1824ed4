"""The native CPU backend (posert's fused C++ step kernel) against the ONNX Runtime backend
(split step graphs with the C++ attention cores), measured interleaved in one process.

Both pipelines serve the same real 2D (the validation motion of ``posert data`` through one
real H36M camera, every stream at another phase). The ticks alternate between the backends
in rounds of ``--block`` ticks, so a slow phase of the machine falls on all of them alike. For
1 stream and for ``--streams`` streams, with one and with two shards per tick, it prints the p50
and p99 of push + tick and the throughput (poses/s from the mean tick), and the largest
difference between the two backends' refined poses over the run (mm).

    .venv/bin/python experiments/native_vs_ort.py [--streams 16] [--ticks 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from posert.bench import real_stream
    from posert.evaluate import bench_sequence, eval_cameras
    from posert.runtime import Pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--ticks", type=int, default=400, help="measured ticks per configuration")
    ap.add_argument("--block", type=int, default=20, help="ticks per turn before the next pipeline")
    args = ap.parse_args()
    name, seq = bench_sequence(None)
    cam = eval_cameras("h36m")[0]
    px, _ = real_stream(seq, cam)
    T = len(px)
    print(f"{name}, camera {cam.name}: {T} frames; {time.strftime('%Y-%m-%d')}")
    print(f"{'backend':<13}{'streams':>8}{'shards':>7}{'p50 ms':>9}{'p99 ms':>9}{'poses/s':>9}")
    for S in (1, args.streams):
        for workers in (1, 2) if S > 1 else (1,):
            pipes = {b: Pipeline(backend=b, max_streams=S, workers=workers) for b in ("native", "onnxruntime")}
            ids = [f"s{i}" for i in range(S)]
            for p in pipes.values():
                for s in ids:
                    p.add_stream(s, cam.width, cam.height)
            times = {b: [] for b in pipes}
            diff = 0.0
            conf = np.ones((S, 17), np.float32)
            frame = 0
            warm = 10
            while len(times["native"]) < args.ticks:
                out = {}
                for b, p in pipes.items():
                    for k in range(args.block):
                        i = frame + k
                        kp = np.stack([px[(i + 37 * s) % T] for s in range(S)])
                        t0 = time.perf_counter()
                        p.push_many(ids, kp, conf, [i / 50.0] * S)
                        r = p.tick()
                        dt = (time.perf_counter() - t0) * 1e3
                        if i >= warm:
                            times[b].append(dt)
                    out[b] = r.refined
                diff = max(diff, float(np.abs(out["native"] - out["onnxruntime"]).max()))
                frame += args.block
            for b, p in pipes.items():
                t = np.array(times[b])
                print(f"{b:<13}{S:>8}{p.workers:>7}{np.percentile(t, 50):9.2f}{np.percentile(t, 99):9.2f}"
                      f"{S * 1e3 / t.mean():9.0f}")
                p.close()
            print(f"{'':<13}max |native − onnxruntime| refined: {diff:.2e} mm")


if __name__ == "__main__":
    main()
