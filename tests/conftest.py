"""Shared fixtures: real motion (CMU 01_01), a fixed camera rig, real 2D windows, models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posert.camera import ring_rig
from posert.data.dataset import center_on_floor, make_input, render, root_relative_m

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep ONNX exports and other cache writes of the test run out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POSERT_HOME", str(tmp_path_factory.mktemp("posert_home")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def motion() -> np.ndarray:
    """(1147, 17, 3) float32, mm, z-up world, 50 fps: real CMU motion."""
    with np.load(DATA / "cmu_01_01.npz") as z:
        return z["cmu_01_01"]


@pytest.fixture(scope="session")
def cameras():
    return ring_rig()


@pytest.fixture(scope="session")
def real_views(motion, cameras):
    """Pixels (C, T, 17, 2) and root-relative camera-frame ground truth (C, T, 17, 3) metres."""
    world = center_on_floor(motion)
    px, gt = zip(*(render(world, c) for c in cameras))
    return np.stack(px), np.stack([root_relative_m(g) for g in gt])


@pytest.fixture(scope="session")
def real_windows(real_views, cameras):
    """(8, 27, 17, 3) float32 model inputs cut from real rendered motion."""
    px, _ = real_views
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        c = i % len(cameras)
        s = rng.integers(0, px.shape[1] - 27)
        out.append(make_input(px[c, s:s + 27], np.ones((27, 17), np.float32), cameras[c].width, cameras[c].height))
    return np.stack(out)


@pytest.fixture(scope="session")
def models():
    from posert.models.io import load_lifter, load_refiner

    return load_lifter(), load_refiner()[0]


@pytest.fixture(scope="session")
def onnx_paths():
    from posert.export.onnx import cached_onnx

    return cached_onnx()


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


@pytest.fixture(scope="session")
def mixed_streams():
    return run_mixed_streams
