"""Zenoh's own latency floor on this machine: a Python ping-pong over loopback TCP, payload the size
of a posert 2D record (233 bytes), 50 Hz, one process echoing. Half the round trip is what one leg
of ``posert serve`` (producer → server, or server → consumer) costs before posert does anything.

    python experiments/zenoh_floor.py [--n 1000] [--direct]

``--direct``: both callbacks run on Zenoh's network thread (``zenoh.handlers.Callback(...,
indirect=False)``) instead of a Python thread of their own (the default).
"""

import argparse
import json
import multiprocessing as mp
import socket
import time

import numpy as np


def conf(listen=None, connect=None):
    import zenoh
    c = zenoh.Config()
    if listen:
        c.insert_json5("listen/endpoints", json.dumps(listen))
    if connect:
        c.insert_json5("connect/endpoints", json.dumps(connect))
    c.insert_json5("scouting/multicast/enabled", "false")
    return c

def handler(cb, direct):
    import zenoh
    return zenoh.handlers.Callback(cb, indirect=False) if direct else cb


def echo(port, n, direct):
    import zenoh
    s = zenoh.open(conf(listen=[f"tcp/127.0.0.1:{port}"]))
    pub = s.declare_publisher("pong")

    def cb(sample):
        pub.put(sample.payload.to_bytes())

    s.declare_subscriber("ping", handler(cb, direct))
    time.sleep(n * 0.02 + 5)
    s.close()


if __name__ == "__main__":
    import zenoh

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--direct", action="store_true", help="callbacks on Zenoh's network thread")
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    args = ap.parse_args()
    n = args.n
    p = mp.get_context("spawn").Process(target=echo, args=(port, n, args.direct))
    p.start()
    time.sleep(1.5)
    s = zenoh.open(conf(connect=[f"tcp/127.0.0.1:{port}"]))
    rtt = []
    t_sent = [0.0]

    def cb(sample):
        rtt.append((time.perf_counter() - t_sent[0]) * 1e3)

    s.declare_subscriber("pong", handler(cb, args.direct))
    pub = s.declare_publisher("ping")
    time.sleep(0.5)
    payload = b"x" * 233
    for _ in range(n):
        t_sent[0] = time.perf_counter()
        pub.put(payload)
        time.sleep(0.02)
    time.sleep(0.5)
    r = np.array(rtt)
    p50, p99 = np.percentile(r, 50), np.percentile(r, 99)
    print(f"zenoh-python ping-pong over loopback TCP, 233 bytes at 50 Hz: {len(r)} round trips, "
          f"RTT p50 {p50:.3f} ms, p99 {p99:.3f} ms; one way {p50 / 2:.3f} ms")
    s.close()
    p.terminate()
