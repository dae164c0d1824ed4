"""Does the interpreter's GIL switch interval delay ``posert serve``'s Zenoh callbacks?

The server's frame callbacks run on a Python thread beside the driver thread, which holds the GIL
through the tick's Python parts (the native kernels release it). CPython hands the GIL to a
waiting thread only every ``sys.getswitchinterval()`` (5 ms by default) unless the holder gives it
up first. Runs ``benchmarks/serve_loopback.py``'s producer and server with the default interval and
with a shorter one in both processes, alternated, and prints the transport's p50 per run.

    python experiments/gil_switch.py [--seconds 15] [--repeats 3] [--streams 4 16] [--interval 0.0005]
"""

import argparse
import json
import multiprocessing as mp
import socket
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_loopback  # noqa: E402


def producer(interval, port, streams, seconds, out):
    sys.setswitchinterval(interval)
    serve_loopback.producer(port, streams, seconds, out)


def run(interval: float, streams: int, seconds: float) -> dict:
    from posert.config import PipelineConfig
    from posert.serve import PoseServer, zenoh_config

    sys.setswitchinterval(interval)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PoseServer(PipelineConfig().override({"max_streams": streams}),
                        zconfig=zenoh_config(listen=[f"tcp/127.0.0.1:{port}"]))
    with server:
        q = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=producer, args=(interval, port, streams, seconds, q))
        p.start()
        res = q.get()
        p.join()
    p50 = lambda a: float(np.percentile(np.asarray(a), 50))  # noqa: E731
    return {"interval_s": interval, "streams": streams, "e2e_p50_ms": p50(res["latency_ms"]),
            "tick_p50_ms": p50(server.latency_ms), "to_server_p50_ms": p50(server.arrival_ms),
            "to_consumer_p50_ms": p50(res["back_ms"]),
            "transport_p50_ms": p50(server.arrival_ms) + p50(res["back_ms"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--streams", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--interval", type=float, default=0.0005)
    args = ap.parse_args()
    default = sys.getswitchinterval()
    rows = []
    for _ in range(args.repeats):
        for n in args.streams:
            for iv in (default, args.interval):
                r = run(iv, n, args.seconds)
                rows.append(r)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    for n in args.streams:
        for iv in (default, args.interval):
            t = [r["transport_p50_ms"] for r in rows if r["streams"] == n and r["interval_s"] == iv]
            e = [r["e2e_p50_ms"] for r in rows if r["streams"] == n and r["interval_s"] == iv]
            print(f"{n:2d} streams, switch interval {iv * 1e3:.1f} ms: transport p50 {min(t):.2f}–{max(t):.2f} ms, "
                  f"end to end p50 {min(e):.2f}–{max(e):.2f} ms")


if __name__ == "__main__":
    main()
