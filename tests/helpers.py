"""Helpers shared by the test layers: real views, streaming loops and comparisons."""

from __future__ import annotations

import numpy as np

from posert.camera import Camera, ring_rig
from posert.data.dataset import center_on_floor

#: The intrinsics and lens distortion of Human3.6M camera 54138969 (its published calibration).
H36M_LENS = Camera("54138969", np.eye(3), np.zeros(3),
                   np.array([[1145.04940, 0.0, 512.541505], [0.0, 1143.78110, 515.451487], [0.0, 0.0, 1.0]]),
                   np.array([-0.20709891, 0.24777518, -0.00142447, -0.0009757, -0.00307515]), 1000, 1002)


def h36m_view(motion, frames=200):
    """Real motion seen through a camera with the H36M lens: (pixels (T, 17, 2) float64,
    camera-frame positions (T, 17, 3) mm float64, the camera)."""
    base = ring_rig(H36M_LENS)[1]
    cam = Camera(base.name, base.R, base.t, base.K, base.dist, base.width, base.height)
    cam3d = cam.world_to_camera(center_on_floor(motion[:frames]))
    return cam.project(cam3d), cam3d, cam


def stream(pipe, px, sid="s", frames=40, conf=None):
    pipe.add_stream(sid, 1000, 1000)
    out = []
    for t in range(frames):
        pipe.push(sid, px[t], None if conf is None else conf[t], t / 50)
        out.append(pipe.tick())
    pipe.remove_stream(sid)
    return out


def run_streams(pipe, px, ticks=45):
    """Six streams of real 2D (4 cameras, two at another phase) with a freed slot between them
    and ticks that serve only some streams; returns every tick's (ids, refined, lifted)."""
    C, T = px.shape[:2]
    ids = [f"s{i}" for i in range(7)]
    for s in ids:
        pipe.add_stream(s, 1000, 1000)
    pipe.remove_stream("s2")  # a hole in the slots: the shards span it
    ids.remove("s2")
    out = []
    try:
        for t in range(ticks):
            live = ids if t % 4 else ids[1::2]
            kp = np.stack([px[k % C, (t + 17 * k) % T] for k in range(len(live))])
            pipe.push_many(live, kp, None, [t / 50] * len(live))
            r = pipe.tick()
            out.append((r.stream_ids, r.refined.copy(), r.lifted.copy()))
    finally:
        for s in ids:
            pipe.remove_stream(s)
    return out


def assert_same_streams(got: dict, ref: dict, atol: float = 2e-3) -> None:
    """Two runs of ``mixed_streams`` served the same streams with the same lifted and refined
    poses (within ``atol`` mm: float32 rounding through both models and the correction reaches
    ~1e-3 mm on coordinates of up to a metre, e.g. 1.1e-3 between the native and the torch
    backend on one coordinate of 1,224 with the committed checkpoints). Backend comparisons run
    with ``bone_depth=False``: its square root near a tangent turns 1e-4 mm of float rounding
    into up to ~1e-2 mm, and it runs on the host the same for every backend (its own tests:
    tests/unit/test_correction_reference.py, tests/kernels/test_correction_kernel.py)."""
    assert got.keys() == ref.keys() == set("abcdef")
    for s in ref:
        assert got[s][0].shape == ref[s][0].shape
        np.testing.assert_allclose(got[s][1], ref[s][1], atol=atol)  # mm
        np.testing.assert_allclose(got[s][0], ref[s][0], atol=atol)


def run_mixed_streams(pipe, px: np.ndarray, ticks: int = 48) -> dict:
    """Five real streams (four cameras' views, one camera twice at another phase) that tick at
    different rates, so the set of due streams, the highest due slot and hence the batch (and a
    padded backend's bucket) change from tick to tick; stream 'c' is removed at tick 20 and a new
    stream 'f' takes its slot at tick 24 (its caches must read as empty). Returns
    {stream: (refined (n, 17, 3), lifted (n, 17, 3)) mm} in push order."""
    rates = {"a": 1, "b": 2, "c": 3, "d": 5, "e": 2}  # b and e tick on alternate ticks
    views = {"a": (0, 0), "b": (1, 0), "c": (2, 0), "d": (3, 0), "e": (1, 300), "f": (2, 500)}
    for s in "abcde":
        pipe.add_stream(s, 1000, 1000)
    frame = dict.fromkeys(views, 0)
    out = {s: ([], []) for s in views}
    try:
        for t in range(ticks):
            if t == 20:
                pipe.remove_stream("c")
            if t == 24:
                pipe.add_stream("f", 1000, 1000)
            live = [s for s in pipe.streams if (t + ord(s)) % rates.get(s, 2) == 0]
            if t == 30:
                live = ["e"]  # only the highest slot: a padded batch with every lower row idle
            if t == 31:
                live = ["a"]  # only slot 0: a batch of one
            for s in live:
                c, off = views[s]
                pipe.push(s, px[c, off + frame[s]], timestamp=t / 50)
                frame[s] += 1
            res = pipe.tick()
            assert sorted(res.stream_ids) == sorted(live)
            for s in res.stream_ids:
                i = res.stream_ids.index(s)
                out[s][0].append(res.refined[i])
                out[s][1].append(res.lifted[i])
    finally:
        for s in list(pipe.streams):
            pipe.remove_stream(s)
    return {s: (np.array(r), np.array(lf)) for s, (r, lf) in out.items() if r}

