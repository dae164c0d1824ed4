"""Soak: a million ticks of one pipeline, with streams that come and go and misbehave; memory and
latency over time.

Four streams of real 2D (the committed CMU take through the ring rig, looping) tick together. Every
``--churn`` ticks one stream is removed and a new one takes its slot; every stream has blackouts
(every joint missing, some longer than a restart), frames with keypoints far out of view, and
every 1,000 ticks a frame the input contract refuses (caught). Every ``--window`` ticks the
resident set size (RSS, /proc/self/statm) and the window's tick p50/p99 are recorded; the run
fails if any reported pose is non-finite or impossible.

    python benchmarks/soak.py --ticks 1000000 --json out/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from report import stamp, write_json
from tqdm import tqdm

from posert.camera import ring_rig
from posert.data.dataset import center_on_floor, render
from posert.runtime import Pipeline
from posert.runtime.guard import impossible

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_01_01.npz"


def rss_mb() -> float:
    """The process's resident set size, MiB (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--window", type=int, default=50_000)
    ap.add_argument("--churn", type=int, default=10_000)
    ap.add_argument("--backend", default="native")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with np.load(DATA) as z:
        world = center_on_floor(z["cmu_01_01"])
    px = np.stack([render(world, c)[0] for c in ring_rig()]).astype(np.float32)  # (4, T, 17, 2)
    T = px.shape[1]
    rng = np.random.default_rng(0)
    ids = [0, 1, 2, 3]
    cams = {s: s % 4 for s in ids}
    next_id = 4
    conf_all = np.ones((4, 17), np.float32)
    lat = np.full(args.ticks, np.nan, np.float32)  # touched now: its pages do not grow the RSS as it fills
    windows, bad_refused, restarts = [], 0, 0
    with Pipeline(backend=args.backend, max_streams=8) as pipe:
        for s in ids:
            pipe.add_stream(s, 1000, 1000)
        rss0 = rss_mb()
        for t in tqdm(range(args.ticks), mininterval=5, unit="tick"):
            if t and t % args.churn == 0:  # a stream leaves, another takes its slot
                old = ids.pop(int(rng.integers(len(ids))))
                restarts += pipe.stream_info(old).restarts
                pipe.remove_stream(old)
                pipe.add_stream(next_id, 1000, 1000)
                cams[next_id] = int(rng.integers(4))
                ids.append(next_id)
                next_id += 1
            kp = np.stack([px[cams[s], t % T] for s in ids])
            conf = conf_all.copy()
            phase = t % 3000
            if phase < 60:
                conf[0] = 0.0  # stream in row 0 out of view for 1.2 s: it restarts
            if 1000 <= phase < 1010:
                conf[1] = 0.0  # a 0.2 s blackout
            if 2000 <= phase < 2100:
                kp[2, :5] = (-1e6, 5e5)  # five joints far out of view: dropped
            if t % 1000 == 500:
                bad = kp[3].copy()
                bad[0, 0] = np.nan
                try:
                    pipe.push(ids[3], bad, timestamp=t / 50)
                except ValueError:
                    bad_refused += 1
            pipe.push_many(ids, kp, conf, [t / 50] * len(ids))
            t0 = time.perf_counter()
            res = pipe.tick()
            lat[t] = (time.perf_counter() - t0) * 1e3
            if t % 997 == 0 and (not np.isfinite(res.refined).all() or impossible(res.refined).any()):
                print(f"tick {t}: a non-finite or impossible pose", file=sys.stderr)
                return 1
            if (t + 1) % args.window == 0:
                w = lat[t + 1 - args.window:t + 1]
                windows.append({"tick": t + 1, "rss_mb": round(rss_mb(), 1), "p50_ms": float(np.percentile(w, 50)),
                                "p99_ms": float(np.percentile(w, 99))})
        for s in ids:
            restarts += pipe.stream_info(s).restarts
    report = {**stamp(), "backend": args.backend, "ticks": args.ticks, "streams_per_tick": 4,
              "streams_added": next_id, "restarts": restarts, "bad_frames_refused": bad_refused,
              "rss_start_mb": round(rss0, 1), "rss_first_window_mb": windows[0]["rss_mb"] if windows else None,
              "rss_end_mb": round(rss_mb(), 1), "p99_first_window_ms": windows[0]["p99_ms"] if windows else None,
              "p99_last_window_ms": windows[-1]["p99_ms"] if windows else None,
              "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "windows": windows}
    print(json.dumps({k: v for k, v in report.items() if k != "windows"}, indent=1))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
