"""``posert serve``: the pipeline as a service over Eclipse Zenoh (extra ``serve``).

Producers (cameras + 2D detectors, in any language with a Zenoh client: C, C++, Rust, Python)
publish each stream's newest 2D frame on ``PREFIX/in/<stream>`` (:mod:`posert.serve.wire`:
a versioned binary record). The server keeps the newest frame of every stream (a frame that a
newer one replaces before the tick is dropped and counted: the server never queues without
bound), and one driver thread batches every stream with a new frame into one tick and publishes
each stream's 3D on ``PREFIX/out/<stream>`` with congestion control ``DROP`` (a slow consumer
never blocks the tick). A stream appears with its first frame (its camera, if the record carries
one, is given to ``add_stream``), ends on ``PREFIX/end/<stream>``, and is removed after
``stream_timeout_s`` of silence. :class:`PoseClient` is the Python side of both roles;
docs/serve.md has a C example against zenoh-c.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from posert.config import PipelineConfig
from posert.errors import MissingDependency
from posert.serve.wire import Keypoints, Pose, check_stream_id

PREFIX = "posert"
HISTORY = 65536  # entries kept in PoseServer.latency_ms and arrival_ms


def _zenoh():
    try:
        import zenoh
    except ImportError:  # pragma: no cover - the extra is missing
        raise MissingDependency("posert serve needs eclipse-zenoh: pip install 'posert[serve]'") from None
    return zenoh


def zenoh_config(listen: list[str] | None = None, connect: list[str] | None = None, scouting: bool = False):
    """A ``zenoh.Config`` that listens on and/or connects to the given endpoints (e.g.
    ``tcp/127.0.0.1:7447``), with multicast scouting off unless ``scouting``."""
    import json

    zenoh = _zenoh()
    conf = zenoh.Config()
    if listen:
        conf.insert_json5("listen/endpoints", json.dumps(list(listen)))
    if connect:
        conf.insert_json5("connect/endpoints", json.dumps(list(connect)))
    conf.insert_json5("scouting/multicast/enabled", "true" if scouting else "false")
    return conf


class PoseServer:
    """Serve a :class:`~posert.runtime.Pipeline` over Zenoh.

    Args:
        config: the pipeline's config (``max_streams`` bounds the streams served at once; a new
            stream beyond it is refused and counted).
        node: an open Zenoh handle, as ``zenoh.open`` returns (else one is opened with ``zconfig``).
        prefix: the key expressions' first chunk.
        stream_timeout_s: a stream silent this long (server clock) is removed.
        on_tick: called with every :class:`~posert.runtime.pipeline.TickResult` (e.g. to record
            it: :class:`posert.serve.mcap.McapRecorder`), on the driver thread.
    Use as a context manager, or :meth:`start` / :meth:`stop`. :meth:`stats` counts frames
    received, dropped (replaced before their tick), rejected (bad record or input), refused
    (no free slot), ticks, poses published, streams ended and timed out. ``latency_ms`` (each
    tick's own cost) and ``arrival_ms`` (each frame's capture → arrival at the server, the
    producer's clock against the server's) keep the last ``HISTORY`` values.
    """

    def __init__(self, config: PipelineConfig | None = None, *, node=None, zconfig=None, prefix: str = PREFIX,
                 stream_timeout_s: float = 2.0, on_tick: Callable | None = None):
        self.config = config or PipelineConfig()
        self.prefix = prefix
        self.timeout = float(stream_timeout_s)
        self.on_tick = on_tick
        self._own_node = node is None
        self._zconfig = zconfig
        self._node = node
        self._lock = threading.Condition()
        self._pending: dict[str, Keypoints] = {}
        self._ended: set[str] = set()
        self._counts: Counter = Counter()
        self._dropped: Counter = Counter()
        self._thread: threading.Thread | None = None
        self._running = False
        self._error: BaseException | None = None
        # for benchmarks, bounded (a server runs for days): the last ticks' own cost, and the last
        # frames' capture → arrival time (ms; meaningful where producer and server share a clock)
        self.latency_ms: deque[float] = deque(maxlen=HISTORY)
        self.arrival_ms: deque[float] = deque(maxlen=HISTORY)

    def __enter__(self) -> PoseServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Open Zenoh (if no handle was given), subscribe, and start the driver thread."""
        from posert.runtime import Pipeline

        zenoh = _zenoh()
        self._pipe = Pipeline(self.config)  # built before the first frame can arrive
        if self._node is None:
            self._node = zenoh.open(self._zconfig or zenoh.Config())
        self._subs = [self._node.declare_subscriber(f"{self.prefix}/in/*", self._on_frame),
                      self._node.declare_subscriber(f"{self.prefix}/end/*", self._on_end)]
        self._running = True
        self._thread = threading.Thread(target=self._drive, name="posert-serve", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the driver thread and close what this server opened. Re-raises a driver error."""
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        for s in getattr(self, "_subs", []):
            s.undeclare()
        self._subs = []
        if self._own_node and self._node is not None:
            self._node.close()
            self._node = None
        if self._error is not None:
            raise RuntimeError("posert serve: the driver thread failed") from self._error

    def stats(self) -> dict:
        """Counters (see the class docstring) and the streams being served."""
        with self._lock:
            return {**self._counts, "streams": getattr(self, "_live", 0)}

    def _on_frame(self, sample) -> None:
        try:
            frame = Keypoints.decode(sample.payload.to_bytes())
            self.arrival_ms.append((time.time() - frame.capture_time) * 1e3)
        except (ValueError, UnicodeDecodeError):
            with self._lock:
                self._counts["rejected"] += 1
            return
        with self._lock:
            self._counts["received"] += 1
            if frame.stream in self._pending:  # newest wins
                self._counts["dropped"] += 1
                self._dropped[frame.stream] += 1
            self._pending[frame.stream] = frame
            self._lock.notify()

    def _on_end(self, sample) -> None:
        stream = str(sample.key_expr).rsplit("/", 1)[-1]
        with self._lock:
            self._ended.add(stream)
            self._lock.notify()

    def _drive(self) -> None:
        zenoh = _zenoh()
        try:
            with self._pipe as pipe:
                pipe.adopt()
                pubs: dict[str, object] = {}
                seen: dict[str, float] = {}
                while True:
                    with self._lock:
                        if self._running and not self._pending and not self._ended:
                            self._lock.wait(timeout=min(0.1, self.timeout / 4))
                        if not self._running:
                            break
                        batch, self._pending = self._pending, {}
                        ended, self._ended = self._ended, set()
                    now = time.monotonic()
                    gone = [s for s in ended if s in seen]
                    gone += [s for s, t in seen.items() if now - t > self.timeout and s not in ended and s not in batch]
                    for s in gone:
                        pipe.remove_stream(s)
                        del seen[s]
                        pubs.pop(s).undeclare()
                        self._counts["ended" if s in ended else "timed_out"] += 1
                    for s in ended:
                        batch.pop(s, None)
                    pushed = []
                    for s, f in batch.items():
                        if s not in seen:
                            try:
                                pipe.add_stream(s, f.width, f.height, f.camera)
                            except ValueError:  # no free slot, or a bad camera
                                self._counts["refused"] += 1
                                continue
                            seen[s] = now
                            pubs[s] = self._node.declare_publisher(
                                f"{self.prefix}/out/{s}", congestion_control=zenoh.CongestionControl.DROP)
                        try:
                            pipe.push(s, f.kp2d, f.conf, f.capture_time)
                        except (ValueError, TypeError):
                            self._counts["rejected"] += 1
                            continue
                        seen[s] = now
                        pushed.append(s)
                    self._live = len(seen)
                    if not pushed:
                        continue
                    res = pipe.tick()
                    out_t = time.time()
                    self.latency_ms.append(res.latency_ms["tick"])
                    self._counts["ticks"] += 1
                    for i, s in enumerate(res.stream_ids):
                        f = batch[s]
                        pubs[s].put(Pose(s, f.capture_time, out_t, res.latency_ms["tick"], int(res.health[i]),
                                         bool(res.valid[i]), self._dropped[s], res.refined[i], res.world[i],
                                         res.lifted[i], res.seen[i]).encode())
                        self._counts["published"] += 1
                    if self.on_tick is not None:
                        self.on_tick(res)
                for p in pubs.values():
                    p.undeclare()
        except BaseException as e:  # reported by stop()
            self._error = e


class PoseClient:
    """Both sides of ``posert serve`` from Python: send 2D frames as a producer, receive 3D poses.

    Args:
        node: an open Zenoh handle, as ``zenoh.open`` returns (else one is opened with ``zconfig``).
        prefix: the server's key prefix.
    """

    def __init__(self, node=None, zconfig=None, prefix: str = PREFIX):
        zenoh = _zenoh()
        self._own = node is None
        self.node = node if node is not None else zenoh.open(zconfig or zenoh.Config())
        self.prefix = prefix
        self._pubs: dict[str, object] = {}
        self._subs: list = []

    def __enter__(self) -> PoseClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, stream: str, kp2d, conf, capture_time: float, width: int, height: int, camera=None) -> None:
        """Publish a stream's newest frame: kp2d (17, 2) px, conf (17,), capture_time s, the image
        size; ``camera`` (:class:`~posert.camera.Camera`) is sent with it (the server uses the
        first frame's). ValueError for a stream id the wire cannot carry."""
        zenoh = _zenoh()
        check_stream_id(stream)
        pub = self._pubs.get(stream)
        if pub is None:
            pub = self._pubs[stream] = self.node.declare_publisher(
                f"{self.prefix}/in/{stream}", congestion_control=zenoh.CongestionControl.DROP)
        pub.put(Keypoints(stream, capture_time, width, height, np.asarray(kp2d), np.asarray(conf), camera).encode())

    def end(self, stream: str) -> None:
        """End a stream (the server frees its slot)."""
        check_stream_id(stream)
        self.node.put(f"{self.prefix}/end/{stream}", b"")
        pub = self._pubs.pop(stream, None)
        if pub is not None:
            pub.undeclare()

    def subscribe(self, callback: Callable[[Pose], None], stream: str = "*"):
        """Call ``callback(Pose)`` for every pose of ``stream`` (default: all), on Zenoh's thread."""
        def on_sample(sample):
            callback(Pose.decode(sample.payload.to_bytes()))

        sub = self.node.declare_subscriber(f"{self.prefix}/out/{stream}", on_sample)
        self._subs.append(sub)
        return sub

    def close(self) -> None:
        for s in self._subs:
            s.undeclare()
        for p in self._pubs.values():
            p.undeclare()
        self._subs, self._pubs = [], {}
        if self._own:
            self.node.close()
