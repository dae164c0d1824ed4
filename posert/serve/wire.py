"""The wire format of ``posert serve`` (keypoints v1, poses v2): what producers publish and what the
server publishes back, as little-endian binary records any language can write with a struct.

Key expressions (``PREFIX`` = ``posert`` unless the server is given another):

- ``PREFIX/in/<stream>``: a producer's newest 2D frame of one stream (:class:`Keypoints`);
- ``PREFIX/out/<stream>``: the server's 3D pose of that frame (:class:`Pose`);
- ``PREFIX/end/<stream>``: the producer ends the stream (any payload).

``<stream>`` is the stream id, which is also carried in each record (UTF-8, ≤ 255 bytes, no
``/``, ``*``, ``$``, ``?`` or ``#``: a key expression chunk).

Keypoints record, ``PK2D`` v1 (all little-endian; offsets in bytes)::

    0   4s   magic b"PK2D"
    4   u16  version (1)
    6   u16  flags: bit 0 a camera block follows the confidences
    8   f64  capture time, s (the producer's clock; passed through)
    16  u32  image width, px
    20  u32  image height, px
    24  f32 × 34   keypoints (17, 2), px, H36M-17 order
    160 f32 × 17   confidences in [0, 1] (0: missing joint)
    228 [camera, 216 bytes: f64 × 9 K, f64 × 5 distortion (k1 k2 p1 p2 k3), f64 × 9 R (z-up world →
         camera), f64 × 3 t (mm), u8 oriented (R is real), 7 bytes padding]
    …   u8   stream id length n, then n bytes of UTF-8

Pose record, ``PP3D`` v2 (v1 had no ``seen`` field)::

    0   4s   magic b"PP3D"
    4   u16  version (2)
    6   u8   health (posert.runtime.guard.Health: 0 OK, 1 COASTING, 2 RESET, 3 NO_POSE)
    7   u8   valid (1: from this frame and passed every check)
    8   f64  capture time, s (as the producer sent it)
    16  f64  output time, s (the server's clock, time.time(), when the tick returned)
    24  f32  the tick's own cost, ms
    28  u32  frames of this stream the server dropped so far (a newer one arrived before its tick)
    32  f32 × 51   refined pose (17, 3), mm, camera frame (x right, y down, z forward), root-relative
    236 f32 × 51   the same pose in the world frame (z up): through the camera's R when given, else
                   as a level camera sees it
    440 f32 × 51   the lifter's own pose (17, 3), mm, camera frame
    644 u32  seen: bit j set when the frame showed joint j (``TickResult.seen``); a joint not seen
             is a guess (posert.runtime.hold)
    648 u8   stream id length n, then n bytes of UTF-8
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from posert.camera import Camera
from posert.skeleton import NUM_JOINTS

KEYPOINTS_VERSION, POSE_VERSION = 1, 2
KEYPOINTS_MAGIC, POSE_MAGIC = b"PK2D", b"PP3D"
_KP_HEAD = struct.Struct("<4sHHdII")
_CAMERA = struct.Struct("<9d5d9d3dB7x")
_POSE_HEAD = struct.Struct("<4sHBBddfI")
_SEEN = struct.Struct("<I")
_BITS = 1 << np.arange(NUM_JOINTS, dtype=np.int64)  # joint j ↔ bit j of ``seen``
_FORBIDDEN = set("/*$?#")


def check_stream_id(stream: str) -> bytes:
    """The UTF-8 bytes of a stream id usable on the wire; ValueError otherwise."""
    if not isinstance(stream, str) or not stream or _FORBIDDEN & set(stream):
        raise ValueError(f"a stream id on the wire is a non-empty string without / * $ ? #, got {stream!r}")
    raw = stream.encode()
    if len(raw) > 255:
        raise ValueError(f"stream id longer than 255 bytes: {stream[:40]!r}…")
    return raw


@dataclass
class Keypoints:
    """One producer frame: ``kp2d`` (17, 2) float32 px, ``conf`` (17,) float32, the capture time
    (s), the image size (px) and optionally the camera."""

    stream: str
    capture_time: float
    width: int
    height: int
    kp2d: np.ndarray
    conf: np.ndarray
    camera: Camera | None = None

    def encode(self) -> bytes:
        sid = check_stream_id(self.stream)
        kp = np.ascontiguousarray(self.kp2d, "<f4").reshape(NUM_JOINTS, 2)
        conf = np.ascontiguousarray(self.conf, "<f4").reshape(NUM_JOINTS)
        head = _KP_HEAD.pack(KEYPOINTS_MAGIC, KEYPOINTS_VERSION, int(self.camera is not None),
                             float(self.capture_time), int(self.width), int(self.height))
        parts = [head, kp.tobytes(), conf.tobytes()]
        if self.camera is not None:
            c = self.camera
            parts.append(_CAMERA.pack(*np.ravel(c.K), *np.ravel(c.dist)[:5], *np.ravel(c.R), *np.ravel(c.t),
                                      int(bool(c.oriented))))
        parts.append(bytes([len(sid)]) + sid)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Keypoints:
        """Parse a ``PK2D`` record; ValueError for anything else (wrong magic, version, size)."""
        data = bytes(data)
        if len(data) < _KP_HEAD.size + 51 * 4 + 1:
            raise ValueError(f"keypoints record too short ({len(data)} bytes)")
        magic, version, flags, t, w, h = _KP_HEAD.unpack_from(data, 0)
        if magic != KEYPOINTS_MAGIC or version != KEYPOINTS_VERSION:
            raise ValueError(f"not a PK2D v{KEYPOINTS_VERSION} record (magic {magic!r}, version {version})")
        o = _KP_HEAD.size
        kp = np.frombuffer(data, "<f4", 34, o).reshape(NUM_JOINTS, 2).astype(np.float32)
        conf = np.frombuffer(data, "<f4", 17, o + 136).astype(np.float32)
        o += 204
        camera = None
        if flags & 1:
            if len(data) < o + _CAMERA.size + 1:
                raise ValueError("keypoints record: its camera block is cut off")
            v = _CAMERA.unpack_from(data, o)
            camera = Camera("wire", np.array(v[14:23]).reshape(3, 3), np.array(v[23:26]), np.array(v[:9]).reshape(3, 3),
                            np.array(v[9:14]), int(w), int(h), oriented=bool(v[26]))
            o += _CAMERA.size
        n = data[o]
        if len(data) != o + 1 + n:
            raise ValueError(f"keypoints record: {len(data)} bytes, expected {o + 1 + n}")
        return cls(data[o + 1:].decode(), t, w, h, kp, conf, camera)


@dataclass
class Pose:
    """One 3D pose the server publishes (the module docstring's ``PP3D`` record): the refined,
    world-frame and lifter poses (17, 3) float32 mm, and ``seen`` (17,) bool, the joints the
    frame showed (all seen when not given)."""

    stream: str
    capture_time: float
    output_time: float
    tick_ms: float
    health: int
    valid: bool
    dropped: int
    refined: np.ndarray
    world: np.ndarray
    lifted: np.ndarray
    seen: np.ndarray = field(default_factory=lambda: np.ones(NUM_JOINTS, bool))

    def encode(self) -> bytes:
        sid = check_stream_id(self.stream)
        poses = np.concatenate([np.asarray(a, "<f4").reshape(-1) for a in (self.refined, self.world, self.lifted)])
        seen = np.asarray(self.seen, bool).reshape(NUM_JOINTS)
        return b"".join([_POSE_HEAD.pack(POSE_MAGIC, POSE_VERSION, int(self.health), int(self.valid),
                                         float(self.capture_time), float(self.output_time), float(self.tick_ms),
                                         int(self.dropped) & 0xFFFFFFFF), poses.tobytes(),
                         _SEEN.pack(int(seen @ _BITS)), bytes([len(sid)]), sid])

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Pose:
        """Parse a ``PP3D`` record; ValueError for anything else."""
        data = bytes(data)
        o = _POSE_HEAD.size + 153 * 4 + _SEEN.size
        if len(data) < o + 1:
            raise ValueError(f"pose record too short ({len(data)} bytes)")
        magic, version, health, valid, tc, to, ms, dropped = _POSE_HEAD.unpack_from(data, 0)
        if magic != POSE_MAGIC or version != POSE_VERSION:
            raise ValueError(f"not a PP3D v{POSE_VERSION} record (magic {magic!r}, version {version})")
        a = np.frombuffer(data, "<f4", 153, _POSE_HEAD.size).astype(np.float32).reshape(3, NUM_JOINTS, 3)
        n = data[o]
        if len(data) != o + 1 + n:
            raise ValueError(f"pose record: {len(data)} bytes, expected {o + 1 + n}")
        (mask,) = _SEEN.unpack_from(data, o - _SEEN.size)
        seen = (mask & _BITS) != 0
        return cls(data[o + 1:].decode(), tc, to, ms, health, bool(valid), dropped, a[0], a[1], a[2], seen)
