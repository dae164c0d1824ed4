"""The native backend's key/value caches as float16 (default) against float32: speed against the
window length, and what the rounding does to the poses.

Speed: for every window N (27, 81, 243) a lifter and denoiser of the default width and depth but
window N (untrained weights, as in ``posert bench --windows``), one 1-stream pipeline per N and
cache type, all measured interleaved (``posert.bench.interleaved_tick_ms``: at each frame every
pipeline ticks once, so a slow phase of the machine falls on all alike). Prints p50/p99 of push +
tick and p50(N) / p50(27) per cache type. Every pipeline ticks between two ticks of another, so
their caches and weights are evicted from L2 in between: what the sweep of ``posert bench``
measures too.

Accuracy: the committed models on ``--streams`` real streams (the test fixture's CMU motion seen
by the ring rig's cameras, all frames), float16 against float32 caches: the largest and mean
difference of the lifted and refined poses (mm), and both against the torch backend.

    .venv/bin/python experiments/kv_cache_dtype.py [--ticks 300] [--windows 27 81 243]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def speed(windows: list[int], ticks: int) -> None:
    import torch

    from posert.bench import interleaved_tick_ms, real_stream
    from posert.evaluate import bench_sequence, eval_cameras
    from posert.models.denoiser import Denoiser, DenoiserConfig
    from posert.models.lifter import Lifter, LifterConfig
    from posert.runtime import Pipeline
    from posert.runtime.backends.native import NativeBackend

    torch.set_num_threads(1)
    name, seq = bench_sequence(None)
    cam = eval_cameras("ring")[0]
    px, _ = real_stream(seq, cam)
    cfgs = [(N, kv) for N in windows for kv in ("float32", "float16")]
    pipes = []
    for N, kv in cfgs:
        torch.manual_seed(0)
        be = NativeBackend(Lifter(LifterConfig(window=N)).eval(), Denoiser(DenoiserConfig(window=N)).eval(),
                           kv_dtype=kv)
        pipes.append(Pipeline(backend=be, max_streams=1))
    t = dict(zip(cfgs, interleaved_tick_ms(pipes, px, cam, ticks), strict=True))
    print(f"{name}, camera {cam.name}, {ticks} ticks per pipeline, interleaved; {time.strftime('%Y-%m-%d')}")
    print(f"{'N':>5}{'M (lifter)':>12}{'caches':>9}{'p50 ms':>9}{'p99 ms':>9}{'p50/p50(27)':>13}")
    for (N, kv), p in zip(cfgs, pipes, strict=True):
        a = t[(N, kv)]
        r = np.median(a) / np.median(t[(windows[0], kv)])
        print(f"{N:>5}{p.backend.lifter_cache_shape[3]:>12}{kv:>9}{np.percentile(a, 50):9.3f}"
              f"{np.percentile(a, 99):9.3f}{r:13.2f}")


def accuracy(streams: int) -> None:
    from posert.camera import ring_rig
    from posert.data.dataset import center_on_floor, render
    from posert.runtime import Pipeline
    from posert.runtime.backends.native import NativeBackend
    from posert.runtime.backends.torch import TorchBackend

    fixture = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_01_01.npz"
    with np.load(fixture) as z:
        world = center_on_floor(z["cmu_01_01"])
    cams = ring_rig()[:streams]
    px = np.stack([render(world, c)[0] for c in cams])

    def run(backend) -> tuple[np.ndarray, np.ndarray]:
        pipe = Pipeline(backend=backend, max_streams=len(cams), correction="given")
        ids = [f"c{i}" for i in range(len(cams))]
        for s in ids:
            pipe.add_stream(s, 1000, 1000)
        ref, lift = [], []
        for t in range(px.shape[1]):
            pipe.push_many(ids, px[:, t], None, [t / 50] * len(ids))
            r = pipe.tick()
            ref.append(r.refined)
            lift.append(r.lifted)
        return np.array(ref), np.array(lift)

    half = run(NativeBackend.from_checkpoints())
    full = run(NativeBackend.from_checkpoints(kv_dtype="float32"))
    torch_ = run(TorchBackend.from_checkpoints())
    print(f"\n{len(cams)} streams × {px.shape[1]} frames (CMU 01_01, ring rig), committed models; differences in mm")
    print(f"{'':<34}{'refined max':>12}{'mean':>9}{'lifted max':>12}{'mean':>9}")
    for label, a, b in (("float16 vs float32 caches", half, full), ("float16 caches vs torch", half, torch_),
                        ("float32 caches vs torch", full, torch_)):
        d = [np.abs(x - y) for x, y in zip(a, b, strict=True)]
        print(f"{label:<34}{d[0].max():12.4f}{d[0].mean():9.5f}{d[1].max():12.4f}{d[1].mean():9.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=300, help="measured ticks per pipeline")
    ap.add_argument("--windows", type=int, nargs="+", default=[27, 81, 243])
    ap.add_argument("--streams", type=int, default=4, help="real streams for the accuracy part")
    args = ap.parse_args()
    speed(args.windows, args.ticks)
    accuracy(args.streams)


if __name__ == "__main__":
    main()
