"""Zenoh's own latency floor on this machine: a Python ping-pong over loopback TCP, payload the size
of a posert 2D record (233 bytes), 50 Hz, one process echoing. Half the round trip is what one leg
of ``posert serve`` (producer → server, or server → consumer) costs before posert does anything.

    python experiments/zenoh_floor.py [--n 1000] [--direct] [--unix]

``--direct``: both callbacks run on Zenoh's network thread (``zenoh.handlers.Callback(...,
indirect=False)``) instead of a Python thread of their own (the default). ``--unix``: a Unix
domain socket (``unixsock-stream/PATH``) instead of loopback TCP.
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


def echo(endpoint, n, direct):
    import zenoh
    s = zenoh.open(conf(listen=[endpoint]))
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
    ap.add_argument("--unix", action="store_true", help="a Unix domain socket instead of loopback TCP")
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    args = ap.parse_args()
    n = args.n
    endpoint = f"unixsock-stream//tmp/zenoh_floor_{port}.sock" if args.unix else f"tcp/127.0.0.1:{port}"
    p = mp.get_context("spawn").Process(target=echo, args=(endpoint, n, args.direct))
    p.start()
    time.sleep(1.5)
    s = zenoh.open(conf(connect=[endpoint]))
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
    link = "a Unix socket" if args.unix else "loopback TCP"
    print(f"zenoh-python ping-pong over {link}, 233 bytes at 50 Hz: {len(r)} round trips, "
          f"RTT p50 {p50:.3f} ms, p99 {p99:.3f} ms; one way {p50 / 2:.3f} ms")
    s.close()
    p.terminate()
