"""``posert serve`` over loopback TCP: 1, 4 and 16 producer streams at 50 Hz, end to end.

A producer process publishes every stream's frame (real 2D: the committed CMU take through the
ring rig) every 20 ms with its wall clock as the capture time, and receives the poses; the server
runs in this process. Reported per stream count: frames sent, poses received, frames the server
dropped (a newer one arrived before its tick), end-to-end latency p50/p99 (publish → pose
received, same clock), the server's own tick latency p50/p99 measured in the same run, and the
transport's share: the p50 of publish → the server's callback plus the p50 of the pose's publish
→ the consumer's callback (the rest of end to end is the tick and waiting for it: a frame that
arrives during a tick waits for the next one).

    python benchmarks/serve_loopback.py [--seconds 60] [--streams 1 4 16] [--json out/serve.json]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import sys
import time
from pathlib import Path

import numpy as np
from report import stamp, write_json

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_01_01.npz"


def _views() -> np.ndarray:
    from posert.camera import ring_rig
    from posert.data.dataset import center_on_floor, render

    with np.load(DATA) as z:
        world = center_on_floor(z["cmu_01_01"])
    return np.stack([render(world, c)[0] for c in ring_rig()]).astype(np.float32)


def producer(port: int, streams: int, seconds: float, out) -> None:
    """Publish ``streams`` streams at 50 Hz for ``seconds``; put {sent, received, latency_ms}."""
    from posert.serve import PoseClient, zenoh_config

    px = _views()
    lat, back, received = [], [], [0]

    def on_pose(p):
        now = time.time()
        lat.append((now - p.capture_time) * 1e3)
        back.append((now - p.output_time) * 1e3)
        received[0] += 1

    with PoseClient(zconfig=zenoh_config(connect=[f"tcp/127.0.0.1:{port}"])) as client:
        client.subscribe(on_pose)
        time.sleep(0.5)
        sent, t0 = 0, time.perf_counter()
        n = int(seconds * 50)
        for i in range(n):
            target = t0 + i / 50
            while time.perf_counter() < target:
                time.sleep(max(0.0, min(0.002, target - time.perf_counter())))
            for s in range(streams):
                client.send(f"cam{s}", px[s % 4, (i + 97 * s) % px.shape[1]], np.ones(17, np.float32), time.time(),
                            1000, 1000)
                sent += 1
        time.sleep(0.5)
        for s in range(streams):
            client.end(f"cam{s}")
    out.put({"sent": sent, "received": received[0], "latency_ms": lat, "back_ms": back})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from posert.config import PipelineConfig
    from posert.serve import PoseServer, zenoh_config

    ctx = mp.get_context("spawn")
    report = {**stamp(), "seconds": args.seconds, "rate_hz": 50, "runs": []}
    for n in args.streams:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = PoseServer(PipelineConfig().override({"max_streams": max(n, 1)}),
                            zconfig=zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
        with server:
            q = ctx.Queue()
            p = ctx.Process(target=producer, args=(port, n, args.seconds, q))
            p.start()
            res = q.get()
            p.join()
            stats = server.stats()
        e2e, tick = np.array(res["latency_ms"]), np.array(server.latency_ms)
        there, back = np.array(server.arrival_ms), np.array(res["back_ms"])
        row = {"streams": n, "sent": res["sent"], "received": res["received"], "server": stats,
               "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p99_ms": float(np.percentile(e2e, 99)),
               "tick_p50_ms": float(np.percentile(tick, 50)), "tick_p99_ms": float(np.percentile(tick, 99)),
               "ticks": len(tick)}
        # the transport: publish → the server's callback, and the pose's publish → the consumer's
        # callback (decoding included); the rest of end to end is waiting for and running the tick
        row["to_server_p50_ms"] = float(np.percentile(there, 50))
        row["to_consumer_p50_ms"] = float(np.percentile(back, 50))
        row["transport_p50_ms"] = row["to_server_p50_ms"] + row["to_consumer_p50_ms"]
        report["runs"].append(row)
        print(f"{n:2d} streams: sent {row['sent']}, received {row['received']}, dropped {stats.get('dropped', 0)}, "
              f"end to end p50 {row['e2e_p50_ms']:.2f} / p99 {row['e2e_p99_ms']:.2f} ms, tick p50 "
              f"{row['tick_p50_ms']:.2f} / p99 {row['tick_p99_ms']:.2f} ms ({row['ticks']} ticks), transport p50 "
              f"{row['to_server_p50_ms']:.2f} (to the server) + {row['to_consumer_p50_ms']:.2f} (to the consumer) ms")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
