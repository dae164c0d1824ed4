"""The GPU path: the CUDA-graph backend against its eager chain and the eager reference,
all on the same GPU in one run, on a real 2D stream (CMU motion through an H36M camera).

For each variant of :class:`posert.runtime.backends.cuda.CudaBackend` (the torch modules'
kernels or the fused transformer_step kernel; eager, or replayed as a CUDA graph; the graph of the
``torch.compile``d torch steps):

- per-tick wall time of push + tick for 1 stream (p50/p99 ms: host work, the launch, the wait),
- the device time of one replayed tick alone (CUDA events around ``replay``, p50 ms),
- the tick time and poses/s for 16 and 64 streams,

and, in the same run, the paper-style eager reference (whole window through the lifter and K
denoiser passes per frame, batch 1) on the same GPU. Needs a GPU and the CUDA build of
posert._C::

    python benchmarks/gpu.py --motion tests/data/cmu_01_01.npz --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from posert.bench import pipeline_tick_ms, real_stream, reference_tick_ms
from posert.camera import load_h36m_cameras
from posert.data.sources import h36m_camera_file
from posert.evaluate import load_motion
from posert.runtime import Pipeline
from posert.runtime.backends.cuda import CudaBackend

VARIANTS = {"torch-eager": dict(graphs=False, fused=False), "torch-graph": dict(graphs=True, fused=False),
            "fused-eager": dict(graphs=False, cluster=1), "fused-graph": dict(graphs=True, cluster=1),
            "fused-graph-256": dict(graphs=True, threads=256, cluster=1),
            "fused-graph-1024": dict(graphs=True, threads=1024, cluster=1),
            "cluster8-256": dict(graphs=True, threads=256, cluster=8),
            "cluster8-512": dict(graphs=True, threads=512, cluster=8),
            "cluster8-1024": dict(graphs=True, threads=1024, cluster=8),
            "cluster8-512-nopdl": dict(graphs=True, threads=512, cluster=8, pdl=False),
            "cluster16-256": dict(graphs=True, threads=256, cluster=16),
            "cluster16-512": dict(graphs=True, threads=512, cluster=16),
            "torch-graph+compile": dict(graphs=True, compile=True, fused=False)}


def host_split_ms(pipe, px: np.ndarray, cam, frames: int = 300) -> dict:
    """1 stream: p50 of push alone, of tick alone, and of the backend's run (staging, replay,
    wait, copies) inside the tick, ms."""
    be = pipe.backend
    inner, orig = [], be.run

    def timed_run(*a):
        t0 = time.perf_counter()
        r = orig(*a)
        inner.append((time.perf_counter() - t0) * 1e3)
        return r

    be.run = timed_run
    pipe.add_stream("split", cam.width, cam.height)
    push, tick = [], []
    try:
        for i in range(frames + 10):
            t0 = time.perf_counter()
            pipe.push("split", px[i % len(px)], None, float(i))
            t1 = time.perf_counter()
            pipe.tick()
            t2 = time.perf_counter()
            if i >= 10:
                push.append((t1 - t0) * 1e3)
                tick.append((t2 - t1) * 1e3)
    finally:
        pipe.remove_stream("split")
        be.run = orig
    return {"push_p50_ms": float(np.median(push)), "tick_p50_ms": float(np.median(tick)),
            "run_p50_ms": float(np.median(inner[10:]))}


def replay_ms(be: CudaBackend, bucket: int, reps: int = 300) -> np.ndarray:
    """Device time (ms) of replaying the captured tick of ``bucket`` streams, CUDA events."""
    g, st = be._graph[bucket], be._stream
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    be._n_rows[:] = -1  # replays write no cache row
    with torch.cuda.stream(st):
        for _ in range(reps):
            start.record(st)
            g.replay()
            end.record(st)
            end.synchronize()
            out.append(start.elapsed_time(end))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--motion", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (eager chain only)")
    args = ap.parse_args()

    seqs = load_motion(args.motion)
    name = max(seqs, key=lambda k: len(seqs[k]))
    cam = load_h36m_cameras(h36m_camera_file(), "S9")[0]
    px, _ = real_stream(np.asarray(seqs[name]), cam)
    gpu = args.device != "cpu"
    res = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name() if gpu else "cpu",
           "torch": torch.__version__,
           "sequence": name, "frames": args.frames, "variants": {}}
    for v in args.variants:
        t0 = time.perf_counter()
        be = CudaBackend.from_checkpoints(device=args.device, **VARIANTS[v])
        pipe = Pipeline(be, max_streams=64)
        try:
            one = pipeline_tick_ms(pipe, px, cam, args.frames, 1)
        except RuntimeError as e:  # e.g. a cluster size this GPU cannot launch: record it, time the others
            res["variants"][v] = {"error": str(e)}
            print(v, "failed:", e, flush=True)
            continue
        row = {"setup_s": time.perf_counter() - t0, "p50_ms": float(np.percentile(one, 50)),
               "p99_ms": float(np.percentile(one, 99))}
        for s in (16, 64):
            many = pipeline_tick_ms(pipe, px, cam, max(100, args.frames // 4), s)
            row[f"tick_p50_ms_{s}"] = float(np.percentile(many, 50))
            row[f"poses_per_s_{s}"] = float(s * 1e3 / np.mean(many))
        if be.graphs:
            row["replay_device_p50_ms"] = float(np.percentile(replay_ms(be, 1), 50))
            row["replay_device_p50_ms_16"] = float(np.percentile(replay_ms(be, 16), 50))
            row["copies_in_graph"] = be._copies_in_graph
            row.update(host_split_ms(pipe, px, cam))
        res["variants"][v] = row
        print(v, json.dumps(row), flush=True)
    be = CudaBackend.from_checkpoints(device=args.device, graphs=False)
    ref = reference_tick_ms(be.lifter, be.denoiser, px, cam, min(args.frames, 300), cnd=be.cnd)
    res["reference_p50_ms"], res["reference_p99_ms"] = float(np.percentile(ref, 50)), float(np.percentile(ref, 99))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"\n{res['device']}, torch {res['torch']}, {res['date']}; eager reference on the GPU: "
          f"p50 {res['reference_p50_ms']:.2f} ms, p99 {res['reference_p99_ms']:.2f} ms")
    print(f"{'variant':<21}{'p50':>7}{'p99':>7}{'replay':>8}{'speedup':>9}{'16 str/s':>10}{'64 str/s':>10}")
    for v, r in res["variants"].items():
        if "error" in r:
            print(f"{v:<21}failed: {r['error']}")
            continue
        print(f"{v:<21}{r['p50_ms']:7.3f}{r['p99_ms']:7.3f}{r.get('replay_device_p50_ms', float('nan')):8.3f}"
              f"{res['reference_p50_ms'] / r['p50_ms']:8.1f}x{r['poses_per_s_16']:10.0f}{r['poses_per_s_64']:10.0f}")


if __name__ == "__main__":
    main()
